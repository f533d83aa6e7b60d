//! `sockfilter daemon` with a policy fails closed like `sockfilter enforce`
//! (issue 9 item 3): SIGKILLed, its policy stays enforced by the kernel
//! until `sockfilter unload` (docs/security.md).

mod service;

use service::*;
use std::process::Command;

/// `bind()` of a UDP socket to 127.0.0.1:`port` by uid 65534 in `cg`:
/// `ok` or the errno name.
fn bind_as_nobody(cg: &TestCgroup, port: u16) -> String {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["/usr/bin/python3", "-c"])
        .arg(format!(
            "import socket, errno\ntry:\n    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(('127.0.0.1', {port})); print('ok')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])"
        ));
    cg.enter(&mut cmd);
    let out = cmd.output().expect("setpriv python3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_killed_daemon_keeps_enforcing_its_policy_until_unload() {
    let cg = TestCgroup::new("daemon-failclosed");
    let dir = TempDir::new("daemon-failclosed");
    let port = free_port();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!("[[rule]]\nname = \"no-udp-port\"\naction = \"deny\"\non = [\"bind\"]\nlocal_port = [{port}]\n"),
    )
    .unwrap();
    let mut d = Daemon::start(
        &dir,
        "d",
        &format!(
            "policy = \"{}\"\n{}",
            policy.display(),
            base_config("failclosed-01", &cg)
        ),
    );
    d.wait_stderr("enforcing 1 rules from", 0);
    assert_eq!(bind_as_nobody(&cg, port), "EPERM");
    d.signal(libc::SIGKILL);
    let _ = d.child.wait();
    assert_eq!(
        bind_as_nobody(&cg, port),
        "EPERM",
        "the policy is no longer enforced once the daemon is killed"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sockfilter"))
        .args(["unload", "--cgroup"])
        .arg(&cg.path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("removed the enforcement"),
        "{out:?}"
    );
    assert_eq!(bind_as_nobody(&cg, port), "ok", "after unload");
}
