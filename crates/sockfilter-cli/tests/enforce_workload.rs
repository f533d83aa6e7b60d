//! `unit = [...]` and `container = [...]` rules under `sockfilter enforce`
//! (and `sockfilter supervise`):
//! processes in cgroups named as systemd and docker name them (below the
//! test's cgroup) are decided by the unit and container their cgroup
//! names, also when the cgroup appears or is re-created after the policy
//! was loaded (a container started, a unit restarted).

mod common;

use common::*;
use std::process::Command;
use std::time::Instant;

const ID: &str = "3f2a4c9d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f";
const DENIED: &str = "b7e1c0ffee00b7e1c0ffee00b7e1c0ffee00b7e1c0ffee00b7e1c0ffee00b7e1";
const LATER: &str = "c0c0a000111122223333444455556666777788889999aaaabbbbccccddddeeee";

/// Binds a UDP socket to 127.0.0.1 from a process in cgroup `rel` below
/// `cg`; returns (pid, "ok" or "err ERRNO").
fn bind_in(cg: &TestCgroup, rel: &str) -> (u32, String) {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        r#"
import errno, os, socket
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(("127.0.0.1", 0)); r = "ok"
except OSError as e:
    r = "err " + errno.errorcode.get(e.errno, str(e.errno))
print(os.getpid(), r)
"#,
    ]);
    cg.enter_child(rel, &mut cmd);
    let out = cmd.output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (pid, result) = text
        .trim()
        .split_once(' ')
        .unwrap_or_else(|| panic!("bad output {text:?}"));
    (pid.parse().unwrap(), result.to_string())
}

/// Binds from `rel` until the result is `want` (the policy follows new
/// cgroups within a tick of the enforcer); panics after [`WAIT`].
fn wait_for(cg: &TestCgroup, rel: &str, want: &str) -> u32 {
    let deadline = Instant::now() + WAIT;
    loop {
        let (pid, got) = bind_in(cg, rel);
        if got == want {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "bind in {rel} still {got:?}, not {want:?}, after {WAIT:?}"
        );
    }
}

#[test]
fn rules_by_unit_and_container_decide_and_follow_new_cgroups() {
    let cg = TestCgroup::new("enforce-workload");
    for rel in [
        "system.slice/web.service".to_string(),
        "system.slice/db.service".to_string(),
        format!("system.slice/docker-{ID}.scope"),
        format!("system.slice/docker-{DENIED}.scope"),
    ] {
        cg.create_child(&rel);
    }
    let dir = std::env::temp_dir().join(format!("sf-enforce-workload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            r#"
default = "allow"
[[rule]]
name = "web-may-not-bind"
action = "deny"
on = ["bind"]
unit = ["web.service"]
[[rule]]
name = "untrusted-containers"
action = "deny"
on = ["bind"]
container = ["{}", "{}"]
"#,
            &DENIED[..12],
            LATER
        ),
    )
    .unwrap();
    let mut w = Watch::enforce(&cg, &policy);

    let (web, r) = bind_in(&cg, "system.slice/web.service");
    assert_eq!(r, "err EPERM", "the unit's rule denies");
    let e = w.expect("denied bind of web.service", |v| is(v, "bind", web));
    assert_eq!(
        (&e["verdict"], &e["rule"], &e["unit"]),
        (
            &"deny".into(),
            &"web-may-not-bind".into(),
            &"web.service".into()
        ),
        "{e}"
    );
    assert_eq!(
        bind_in(&cg, "system.slice/db.service").1,
        "ok",
        "another unit"
    );
    let (denied, r) = bind_in(&cg, &format!("system.slice/docker-{DENIED}.scope"));
    assert_eq!(r, "err EPERM", "a container named by its 12-digit prefix");
    let e = w.expect("denied bind of the container", |v| is(v, "bind", denied));
    assert_eq!(e["rule"], "untrusted-containers", "{e}");
    assert_eq!(e["container"]["id"], DENIED, "{e}");
    assert_eq!(
        bind_in(&cg, &format!("system.slice/docker-{ID}.scope")).1,
        "ok",
        "another container"
    );

    // A container started after the policy was loaded.
    let later = format!("system.slice/docker-{LATER}.scope");
    cg.create_child(&later);
    wait_for(&cg, &later, "err EPERM");
    // A unit restarted: its cgroup removed and created again (a new id).
    std::fs::remove_dir(cg.path.join("system.slice/web.service")).unwrap();
    cg.create_child("system.slice/web.service");
    wait_for(&cg, "system.slice/web.service", "err EPERM");
    assert_eq!(bind_in(&cg, "system.slice/db.service").1, "ok");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `sockfilter supervise --policy POLICY -- python3 (bind)` inside
/// cgroup `rel` below `cg`; returns the program's answer.
fn supervised_bind_in(cg: &TestCgroup, rel: &str, policy: &std::path::Path) -> String {
    let mut cmd = Command::new(sockfilter());
    cmd.arg("supervise").arg("--policy").arg(policy).args([
        "--",
        "python3",
        "-c",
        r#"
import errno, socket
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(("127.0.0.1", 0)); print("ok")
except OSError as e:
    print("err " + errno.errorcode.get(e.errno, str(e.errno)))
"#,
    ]);
    cg.enter_child(rel, &mut cmd);
    let out = cmd.output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn supervise_decides_by_unit_and_container_too() {
    let cg = TestCgroup::new("supervise-workload");
    let docker = format!("system.slice/docker-{DENIED}.scope");
    for rel in [
        "system.slice/web.service",
        "system.slice/db.service",
        &docker,
    ] {
        cg.create_child(rel);
    }
    let dir = std::env::temp_dir().join(format!("sf-supervise-workload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[[rule]]\nname = \"web\"\naction = \"deny\"\non = [\"bind\"]\nunit = [\"web.service\"]\n\
             [[rule]]\nname = \"ctr\"\naction = \"deny\"\non = [\"bind\"]\ncontainer = [\"{}\"]\n",
            &DENIED[..16]
        ),
    )
    .unwrap();
    assert_eq!(
        supervised_bind_in(&cg, "system.slice/web.service", &policy),
        "err EPERM"
    );
    assert_eq!(supervised_bind_in(&cg, &docker, &policy), "err EPERM");
    assert_eq!(
        supervised_bind_in(&cg, "system.slice/db.service", &policy),
        "ok"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
