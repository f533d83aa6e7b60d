//! An unprivileged attacker for the attack tests: a python3 process as uid
//! 65534 (setpriv) that runs one line of Python per request.

use super::{read_line, Proc, TestCgroup, TestNetns};
use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};

/// Debian's python3: readable by uid 65534 (pyenv's lives under /root).
pub const PY: &str = "/usr/bin/python3";

/// A python3 process as uid 65534 in a test cgroup that runs one line of
/// Python per request (with `socket`, `errno`, `threading` and a socket
/// table `s` in scope) and answers with the value of `r`, or `err ERRNO`.
/// `bg(KEY, FN)` calls FN on a thread and leaves its outcome (`ok` or
/// `err ERRNO`) in `res[KEY]`: a call that blocks, like `accept()`.
/// `repeat(KEY, FN)` calls FN in a loop on a thread, counting outcomes
/// (`ok` or the errno name) in the dict `res[KEY]`, until `res[KEY + ".stop"]`
/// is set; then it sets `res[KEY + ".done"]`.
pub struct Attacker {
    proc: Proc,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

const ATTACKER: &str = r#"
import socket, sys, errno, threading, os
s = {}
def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return False
    except ConnectionRefusedError:
        return True
res = {}
def bg(key, fn):
    def call():
        try:
            fn()
            res[key] = "ok"
        except OSError as e:
            res[key] = "err " + errno.errorcode.get(e.errno, str(e.errno))
    threading.Thread(target=call, daemon=True).start()
def repeat(key, fn):
    counts = res.setdefault(key, {})
    def loop():
        while not res.get(key + ".stop"):
            try:
                fn()
                r = "ok"
            except OSError as e:
                r = errno.errorcode.get(e.errno, str(e.errno))
            counts[r] = counts.get(r, 0) + 1
        res[key + ".done"] = True
    threading.Thread(target=loop, daemon=True).start()
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
    /// In `cg`, in the caller's network namespace.
    pub fn start(cg: &TestCgroup) -> Attacker {
        Attacker::spawn(cg, Command::new("setpriv"))
    }

    /// In `cg`, in network namespace `ns`.
    pub fn start_in(cg: &TestCgroup, ns: &TestNetns) -> Attacker {
        Attacker::spawn(cg, ns.command("setpriv"))
    }

    /// In `cg`, in network (and user) namespaces of its own, made by uid
    /// 65534 itself (`unshare -Urn`), with its loopback up.
    pub fn start_own_netns(cg: &TestCgroup) -> Attacker {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["unshare", "-Urn", "sh", "-c"])
            .args([r#"ip link set lo up && exec "$@""#, "sh", PY]);
        Attacker::run_as(cg, cmd)
    }

    /// The same program as root in `cg`: the other side of an attack.
    pub fn start_root(cg: &TestCgroup) -> Attacker {
        Attacker::run_as(cg, Command::new(PY))
    }

    fn spawn(cg: &TestCgroup, mut cmd: Command) -> Attacker {
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", PY]);
        Attacker::run_as(cg, cmd)
    }

    fn run_as(cg: &TestCgroup, mut cmd: Command) -> Attacker {
        cmd.args(["-u", "-c", ATTACKER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        cg.enter(&mut cmd);
        let mut child = cmd.spawn().expect("setpriv python3");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        assert_eq!(read_line(&mut stdout), "ready");
        Attacker {
            proc: Proc(child),
            stdin,
            stdout,
        }
    }

    /// The attacker's pid (as the host sees it).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Runs one line of Python; its answer.
    pub fn run(&mut self, code: &str) -> String {
        writeln!(self.stdin, "{code}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "attacker died on {code:?}");
        line.trim().to_string()
    }
}
