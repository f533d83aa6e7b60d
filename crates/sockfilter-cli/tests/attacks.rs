//! Attacks on `sockfilter enforce` by an unprivileged local user (uid 65534
//! through setpriv): each test does what such a user can do to get around a
//! policy and asserts that the policy still holds (docs/security.md).

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};

/// Debian's python3: readable by uid 65534 (pyenv's lives under /root).
const PY: &str = "/usr/bin/python3";

/// A python3 process as uid 65534 in `cg` that runs one line of Python per
/// request (with `socket`, `errno` and a socket table `s` in scope) and
/// answers with the value of `r`, or `err ERRNO`.
struct Attacker {
    _proc: Proc,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

const ATTACKER: &str = r#"
import socket, sys, errno
s = {}
print("ready", flush=True)
for line in sys.stdin:
    r = "ok"
    try:
        exec(line)
    except OSError as e:
        r = "err " + errno.errorcode.get(e.errno, str(e.errno))
    print(r, flush=True)
"#;

impl Attacker {
    fn start(cg: &TestCgroup) -> Attacker {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", PY])
            .args(["-u", "-c", ATTACKER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        cg.enter(&mut cmd);
        let mut child = cmd.spawn().expect("setpriv python3");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        assert_eq!(read_line(&mut stdout), "ready");
        Attacker {
            _proc: Proc(child),
            stdin,
            stdout,
        }
    }

    /// Runs one line of Python; its answer.
    fn run(&mut self, code: &str) -> String {
        writeln!(self.stdin, "{code}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "attacker died on {code:?}");
        line.trim().to_string()
    }
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sf-attack-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_policy(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("policy.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Item 1 of the trust issue: a bind that the kernel fails after the policy
/// allowed it (EADDRINUSE) must leave no allow behind. The attacker binds
/// an allowed but busy address, then binds the same socket to a denied one
/// with a kernel-chosen port, which is decided only after the kernel picks
/// the port: it must be refused. TCP and UDP, IPv4 and IPv6.
#[test]
fn a_failed_allowed_bind_leaves_no_allow_for_the_next_bind() {
    let dir = tmpdir("stale-bind");
    let cg = TestCgroup::new("attack-stale-bind");
    let policy = write_policy(
        &dir,
        "default = \"deny\"\n\
         [[rule]]\nname = \"loopback-only\"\naction = \"allow\"\non = [\"bind\"]\n\
         local_ip = [\"127.0.0.0/8\", \"::1/128\"]\n",
    );
    let mut w = Watch::enforce(&cg, &policy);
    let mut a = Attacker::start(&cg);
    for (family, kind, busy_ip, any) in [
        ("AF_INET", "SOCK_STREAM", "127.0.0.1", "0.0.0.0"),
        ("AF_INET", "SOCK_DGRAM", "127.0.0.1", "0.0.0.0"),
        ("AF_INET6", "SOCK_STREAM", "::1", "::"),
        ("AF_INET6", "SOCK_DGRAM", "::1", "::"),
    ] {
        let case = format!("{family} {kind}");
        // The attacker's own socket holds the busy port (allowed: loopback).
        assert_eq!(
            a.run(&format!(
                "s['busy'] = socket.socket(socket.{family}, socket.{kind}); s['busy'].bind(('{busy_ip}', 0)); port = s['busy'].getsockname()[1]"
            )),
            "ok",
            "{case}: binding loopback is allowed"
        );
        assert_eq!(
            a.run(&format!(
                "s['x'] = socket.socket(socket.{family}, socket.{kind}); s['x'].bind(('{busy_ip}', port))"
            )),
            "err EADDRINUSE",
            "{case}: the allowed bind fails in the kernel"
        );
        assert_eq!(
            a.run(&format!("s['x'].bind(('{any}', 0))")),
            "err EPERM",
            "{case}: the next bind of the same socket is decided afresh"
        );
        w.expect(&format!("{case}: the denied bind is reported"), |v| {
            v["event"] == "bind" && v["verdict"] == "deny" && v["uid"] == 65534
        });
        a.run("s.pop('x').close(); s.pop('busy').close()");
    }
}
