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

/// Runs `sockfilter unload --cgroup` for the test's cgroup when dropped, so
/// that a failing test leaves no enforcement behind.
struct UnloadOnDrop<'a>(&'a TestCgroup);

impl Drop for UnloadOnDrop<'_> {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_sockfilter"))
            .args(["unload", "--cgroup"])
            .arg(&self.0.path)
            .output();
    }
}

#[test]
fn a_daemon_that_cannot_open_an_output_leaves_no_enforcement_behind() {
    // A failed start is not a crash: nothing was ever in force, the unit is
    // failed, and no daemon will take the pins over. The kernel must be as
    // it was.
    let cg = TestCgroup::new("daemon-failstart");
    let _unload = UnloadOnDrop(&cg);
    let dir = TempDir::new("daemon-failstart");
    let port = free_port();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!("[[rule]]\nname = \"no-udp-port\"\naction = \"deny\"\non = [\"bind\"]\nlocal_port = [{port}]\n"),
    )
    .unwrap();
    let config = dir.join("d.toml");
    std::fs::write(
        &config,
        format!(
            "policy = \"{}\"\n{}[[output]]\nkind = \"syslog\"\naddress = \"unix:{}\"\n",
            policy.display(),
            base_config("failstart-01", &cg),
            dir.join("no-syslog-here").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockfilter"))
        .args(["daemon", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_within("the daemon to give up", START, || child.try_wait().unwrap());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no-syslog-here"), "{stderr}");
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&cg.path).unwrap());
    let pins = std::path::PathBuf::from(format!("/sys/fs/bpf/sockfilter/cgroup-{ino}"));
    assert!(
        !pins.exists(),
        "pinned after a failed start: {}",
        pins.display()
    );
    assert_eq!(
        bind_as_nobody(&cg, port),
        "ok",
        "the policy is enforced although the daemon never started"
    );
}
