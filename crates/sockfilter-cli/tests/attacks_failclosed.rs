//! Attacks on `sockfilter enforce` through its death (issue 9 item 3): an
//! unprivileged user (uid 65534) keeps trying what the policy denies while
//! the enforcer is SIGKILLed and a new one takes over. Enforcement must hold
//! throughout, a clean stop and `sockfilter unload` must leave nothing
//! behind (docs/security.md).

mod common;

use common::attacker::Attacker;
use common::*;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sf-failclosed-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Where enforce --cgroup CG keeps its pins.
fn scope_dir(cg: &TestCgroup) -> PathBuf {
    let ino = std::fs::metadata(&cg.path).unwrap().ino();
    PathBuf::from(format!("/sys/fs/bpf/sockfilter/cgroup-{ino}"))
}

/// A port nothing uses now (the kernel's pick, released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn policy(dir: &Path, name: &str, bind_port: u16, connect_port: u16) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "[[rule]]\nname = \"{name}-bind\"\naction = \"deny\"\non = [\"bind\"]\nlocal_port = [{bind_port}]\n\
             [[rule]]\nname = \"{name}-connect\"\naction = \"deny\"\non = [\"connect\"]\nremote_port = [{connect_port}]\n"
        ),
    )
    .unwrap();
    p
}

/// `bpftool -j KIND show pinned PATH`'s id for every pin in `dir`.
fn pinned_ids(kind: &str, dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let out = Command::new("bpftool")
                .args(["-j", kind, "show", "pinned"])
                .arg(e.path())
                .output()
                .expect("bpftool");
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            v["id"].as_u64()
        })
        .collect()
}

/// Which of `ids` `bpftool -j KIND show` lists now, as "KIND ID".
fn loaded(kind: &str, ids: &[u64]) -> Vec<String> {
    let out = Command::new("bpftool")
        .args(["-j", kind, "show"])
        .output()
        .expect("bpftool");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["id"].as_u64())
        .filter(|id| ids.contains(id))
        .map(|id| format!("{kind} {id}"))
        .collect()
}

/// Waits (bounded by WAIT) until none of `programs` and `links` (ids) is
/// loaded any more, or fails naming those still loaded `when`. Programs are
/// freed by the kernel once their last link goes. Program and link ids are
/// separate id spaces, which overlap in a freshly booted kernel (another
/// test's live link may have a dead program's id): each kind is compared
/// with its own.
fn assert_none_left(when: &str, programs: &[u64], links: &[u64]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut live = loaded("prog", programs);
        live.extend(loaded("link", links));
        if live.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still loaded {when}: {live:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What `bpftool cgroup show CG` lists (one line per attached program).
fn attached_to(cg: &TestCgroup) -> String {
    let out = Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(&cg.path)
        .output()
        .expect("bpftool");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// How many BPF links run the program pinned at `program` (none if
/// nothing is pinned there).
fn links_of(program: &Path) -> usize {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show", "pinned"])
        .arg(program)
        .output()
        .expect("bpftool");
    let Some(id) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["id"].as_u64())
    else {
        return 0;
    };
    let out = Command::new("bpftool")
        .args(["-j", "link", "show"])
        .output()
        .expect("bpftool");
    let links: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    links
        .iter()
        .filter(|l| l["prog_id"].as_u64() == Some(id))
        .count()
}

/// `sockfilter unload ARGS`; its stderr.
fn unload(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(sockfilter())
        .arg("unload")
        .args(args)
        .output()
        .expect("sockfilter unload");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "sockfilter unload failed: {err}");
    err
}

#[test]
fn a_killed_enforcer_keeps_enforcing_the_next_adopts_without_a_gap_and_unload_removes_it() {
    let dir = tmpdir("kill");
    let cg = TestCgroup::new("attack-failclosed-kill");
    let scope = scope_dir(&cg);
    let bind_port = free_port();
    // The destination the policy denies: a real listener, outside the cgroup.
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let connect_port = server.local_addr().unwrap().port();
    let bind = format!("socket.socket().bind(('127.0.0.1', {bind_port}))");

    let first = Watch::enforce(&cg, &policy(&dir, "first", bind_port, connect_port));
    let mut a = Attacker::start(&cg);
    assert_eq!(a.run(&bind), "err EPERM", "the policy is in force");
    assert!(
        scope.join("links").is_dir(),
        "enforce pins its state in {scope:?}"
    );
    let (status, _) = first.stop(libc::SIGKILL);
    assert_eq!(status.signal_or_code(), Some(libc::SIGKILL));

    // Dead enforcer: the kernel keeps enforcing.
    assert_eq!(a.run(&bind), "err EPERM", "after SIGKILL, a denied bind");
    // A loop of denied connects, running through the adoption and swap.
    // Paced (one per 5 ms): while no enforcer reads, every denial is an
    // event queued in the ring buffer, and under emulation (the kernel
    // matrix) an unpaced loop queues more than the adopting enforcer can
    // read before the test's bound, so its own events came too late.
    assert_eq!(
        a.run(&format!(
            "repeat('connects', lambda: (__import__('time').sleep(0.005), socket.create_connection(('127.0.0.1', {connect_port}), timeout=1).close()))"
        )),
        "ok"
    );
    let second_policy = policy(&dir, "second", bind_port, connect_port);
    let args: Vec<std::ffi::OsString> = vec![
        "enforce".into(),
        second_policy.into(),
        "--json".into(),
        "--no-existing".into(),
        "--cgroup".into(),
        cg.path.clone().into(),
    ];
    // It says that it adopted, before it says that it enforces.
    let mut second = Watch::spawn(&args, "took over the enforcement");
    second.wait_stderr("enforcing");
    // The second policy decides the loop's connects: the swap happened
    // while the loop ran.
    let denied = second.expect("a connect denied by the adopting enforcer's policy", |v| {
        v["event"] == "connect" && v["verdict"] == "deny" && v["rule"] == "second-connect"
    });
    // The connects the dead enforcer's policy denied while no enforcer ran
    // are reported by the adopting one, named with the dead one's rule.
    second.expect(
        "a connect denied while no enforcer ran, with its rule",
        |v| v["event"] == "connect" && v["verdict"] == "deny" && v["rule"] == "first-connect",
    );
    a.run("res['connects.stop'] = True");
    let deadline = Instant::now() + WAIT;
    while a.run("r = res.get('connects.done', False)") != "True" {
        assert!(Instant::now() < deadline, "the connect loop did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
    let counts = a.run("r = res['connects']");
    assert!(
        !counts.contains("'ok'"),
        "a denied connect got through: {counts}"
    );
    assert!(counts.contains("'EPERM'"), "the loop did not run: {counts}");
    assert_eq!(a.run(&bind), "err EPERM");
    // One attachment per hook: adopting attached nothing twice. Where BPF
    // LSM is active (Debian's 6.1 and 6.12) the LSM hooks decide bind() and
    // connect() and the cgroup's sock_addr hooks are not attached at all.
    let listing = attached_to(&cg);
    let (by_lsm, by_cgroup) = if denied["enforced_by"] == "lsm" {
        (1, 0)
    } else {
        assert_eq!(denied["enforced_by"], "cgroup", "{denied}");
        (0, 1)
    };
    for program in ["sf_bind4", "sf_connect4"] {
        assert_eq!(
            listing.matches(program).count(),
            by_cgroup,
            "{program} on the cgroup (denials enforced_by {}):\n{listing}",
            denied["enforced_by"]
        );
    }
    let lsm_links = links_of(&scope.join("progs/sf_lsm_connect"));
    assert_eq!(
        lsm_links, by_lsm,
        "links of sf_lsm_connect (denials enforced_by {})",
        denied["enforced_by"]
    );

    // Dead again; unload switches enforcement off and leaves nothing.
    let (status, _) = second.stop(libc::SIGKILL);
    assert_eq!(status.signal_or_code(), Some(libc::SIGKILL));
    assert_eq!(a.run(&bind), "err EPERM");
    let programs = pinned_ids("prog", &scope.join("progs"));
    let links = pinned_ids("link", &scope.join("links"));
    assert!(
        programs.len() >= 10 && links.len() >= 10,
        "{programs:?} {links:?}"
    );
    // Every scope, as an administrator runs it (the other test of this file
    // never leaves a dead enforcer's state for it to find).
    let said = unload(&[]);
    assert!(said.contains(&scope.display().to_string()), "{said}");
    assert!(!scope.exists(), "{scope:?} is still there");
    assert_none_left("after unload", &programs, &links);
    assert_eq!(attached_to(&cg).lines().skip(1).count(), 0);
    assert_eq!(a.run(&bind), "ok", "after unload, the bind succeeds");
    // Nothing left: unload is still a success.
    unload(&[]);
    drop(server);
}

#[test]
fn sigterm_removes_everything_and_unload_leaves_a_running_enforcer_alone() {
    let dir = tmpdir("term");
    let cg = TestCgroup::new("attack-failclosed-term");
    let scope = scope_dir(&cg);
    let bind_port = free_port();
    let bind = format!("socket.socket().bind(('127.0.0.1', {bind_port}))");
    let w = Watch::enforce(&cg, &policy(&dir, "term", bind_port, 9));
    let mut a = Attacker::start(&cg);
    assert_eq!(a.run(&bind), "err EPERM");

    // unload never touches a running enforcer (this scope only: a dead
    // enforcer of the other test is meant to stay enforcing meanwhile).
    let said = unload(&["--cgroup".as_ref(), cg.path.as_os_str()]);
    assert!(said.contains("running"), "{said}");
    assert!(scope.join("links").is_dir());
    assert_eq!(
        a.run(&bind),
        "err EPERM",
        "unload stopped a running enforcer"
    );

    let programs = pinned_ids("prog", &scope.join("progs"));
    let (status, _) = w.stop(libc::SIGTERM);
    assert!(status.success(), "{status}");
    assert!(!scope.exists(), "SIGTERM left {scope:?}");
    assert_eq!(attached_to(&cg).lines().skip(1).count(), 0);
    assert_none_left("after SIGTERM", &programs, &[]);
    assert_eq!(a.run(&bind), "ok");
}

/// An upgrade: the pinned enforcement of another sockfilter build (another
/// BPF object, simulated by the hash its state is marked with) cannot be
/// adopted; the new enforce runs its own programs next to it until its
/// policy is in force, then removes the other build's and pins its own. A
/// loop of denied connects running through it never succeeds.
#[test]
fn another_builds_enforcement_is_replaced_without_a_gap() {
    let dir = tmpdir("upgrade");
    let cg = TestCgroup::new("attack-failclosed-upgrade");
    let scope = scope_dir(&cg);
    let bind_port = free_port();
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let connect_port = server.local_addr().unwrap().port();
    let bind = format!("socket.socket().bind(('127.0.0.1', {bind_port}))");

    let first = Watch::enforce(&cg, &policy(&dir, "first", bind_port, connect_port));
    let mut a = Attacker::start(&cg);
    assert_eq!(a.run(&bind), "err EPERM", "the policy is in force");
    let (status, _) = first.stop(libc::SIGKILL);
    assert_eq!(status.signal_or_code(), Some(libc::SIGKILL));
    // Marked as the state of another build.
    let marker = std::fs::read_dir(&scope)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("complete-")
        })
        .expect("a complete state");
    let ours = marker.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::rename(&marker, scope.join("complete-0123456789abcdef")).unwrap();
    let old_programs = pinned_ids("prog", &scope.join("progs"));
    let old_links = pinned_ids("link", &scope.join("links"));
    assert!(!old_programs.is_empty() && !old_links.is_empty());

    assert_eq!(
        a.run(&format!(
            "repeat('connects', lambda: socket.create_connection(('127.0.0.1', {connect_port}), timeout=1).close())"
        )),
        "ok"
    );
    let args: Vec<std::ffi::OsString> = vec![
        "enforce".into(),
        policy(&dir, "second", bind_port, connect_port).into(),
        "--json".into(),
        "--no-existing".into(),
        "--cgroup".into(),
        cg.path.clone().into(),
    ];
    let mut second = Watch::spawn(
        &args,
        "replaced the enforcement of another sockfilter build",
    );
    second.wait_stderr("enforcing");
    let denied = second.expect("a connect denied by the new build's policy", |v| {
        v["event"] == "connect" && v["verdict"] == "deny" && v["rule"] == "second-connect"
    });
    a.run("res['connects.stop'] = True");
    let deadline = Instant::now() + WAIT;
    while a.run("r = res.get('connects.done', False)") != "True" {
        assert!(Instant::now() < deadline, "the connect loop did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
    let counts = a.run("r = res['connects']");
    assert!(
        !counts.contains("'ok'"),
        "a denied connect got through: {counts}"
    );
    assert!(counts.contains("'EPERM'"), "the loop did not run: {counts}");
    // The other build's programs and links are gone, ours are pinned: one
    // attachment per hook (none on the cgroup where BPF LSM decides).
    let listing = attached_to(&cg);
    let on_cgroup = usize::from(denied["enforced_by"] != "lsm");
    assert_eq!(
        listing.matches("sf_bind4").count(),
        on_cgroup,
        "programs on the cgroup (denials enforced_by {}):\n{listing}",
        denied["enforced_by"]
    );
    assert_none_left(
        "after another build's enforcement was replaced",
        &old_programs,
        &old_links,
    );
    assert!(
        scope.join(&ours).is_dir(),
        "the state is marked as this build's"
    );
    assert!(!scope.join("complete-0123456789abcdef").exists());
    // And it outlives this enforcer too.
    let (status, _) = second.stop(libc::SIGKILL);
    assert_eq!(status.signal_or_code(), Some(libc::SIGKILL));
    assert_eq!(a.run(&bind), "err EPERM", "the new build's pins enforce");
    unload(&["--cgroup".as_ref(), cg.path.as_os_str()]);
    assert_eq!(a.run(&bind), "ok", "after unload, the bind succeeds");
    drop(server);
}

trait SignalOrCode {
    fn signal_or_code(&self) -> Option<i32>;
}

impl SignalOrCode for std::process::ExitStatus {
    fn signal_or_code(&self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        self.signal().or(self.code())
    }
}
