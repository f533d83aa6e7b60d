//! Shared fixtures for integration tests that run the real binary against
//! the real kernel: a throw-away cgroup, a throw-away network namespace, and
//! a running `sockfilter watch` whose JSON lines can be awaited.
#![allow(dead_code)]

pub mod attacker;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[allow(unused_imports)] // each test binary uses a different part
pub use sockfilter_testkit::{cgroup2_root, python_exe, run, TestCgroup, TestNetns};

pub const WAIT: Duration = Duration::from_secs(20);

/// How long sockfilter may take to start (load, verify and attach every BPF
/// program): about 1 s on the 6.18 VM, 25 s for `enforce` in a kernel-matrix
/// guest, where QEMU emulates the CPU (scripts/kernel-matrix.sh).
pub const START: Duration = Duration::from_secs(120);

pub fn sockfilter() -> &'static str {
    env!("CARGO_BIN_EXE_sockfilter")
}

/// Stops and reaps a child on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        stop_child(&mut self.0);
    }
}

/// SIGTERM, so that a sockfilter enforce removes what it pinned in bpffs (a
/// SIGKILLed one leaves it enforcing); SIGKILL if it is still there after
/// 5 s; then reaps it.
pub fn stop_child(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// Starts a python3 program inside `cg` and waits for its first stdout
/// line (its readiness signal), returned with the process.
pub fn python(cg: &TestCgroup, code: &str) -> (Proc, String, BufReader<ChildStdout>) {
    let mut cmd = Command::new("python3");
    cmd.args(["-u", "-c", code])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    spawn_ready(cg, cmd)
}

pub fn spawn_ready(cg: &TestCgroup, mut cmd: Command) -> (Proc, String, BufReader<ChildStdout>) {
    cg.enter(&mut cmd);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let p = Proc(child);
    let line = read_line(&mut out);
    (p, line, out)
}

pub fn read_line(r: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(
        !line.is_empty(),
        "the program ended before printing its ready line"
    );
    line.trim_end().to_string()
}

/// A running `sockfilter watch --json --cgroup CG`.
pub struct Watch {
    pub child: Child,
    lines: mpsc::Receiver<Value>,
    pub seen: Vec<Value>,
    pub stderr: mpsc::Receiver<String>,
    /// The stderr lines read so far (by the waits).
    pub stderr_seen: Vec<String>,
}

impl Watch {
    pub fn start(cg: &TestCgroup, extra: &[&str]) -> Watch {
        let mut args: Vec<std::ffi::OsString> =
            vec!["watch".into(), "--json".into(), "--cgroup".into()];
        args.push(cg.path.clone().into());
        args.extend(extra.iter().map(Into::into));
        Watch::spawn(&args, "watching")
    }

    /// `sockfilter enforce POLICY --json --cgroup CG --no-existing`, once it
    /// says enforcement is in place.
    pub fn enforce(cg: &TestCgroup, policy: &Path) -> Watch {
        let args: Vec<std::ffi::OsString> = vec![
            "enforce".into(),
            policy.into(),
            "--json".into(),
            "--no-existing".into(),
            "--cgroup".into(),
            cg.path.clone().into(),
        ];
        Watch::spawn(&args, "enforcing")
    }

    /// Runs sockfilter with `args` and waits for `ready` on its stderr.
    pub fn spawn(args: &[std::ffi::OsString], ready: &str) -> Watch {
        let child = Command::new(sockfilter())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sockfilter watch");
        Watch::wrap(child, ready)
    }

    /// Follows a started sockfilter (stderr piped) until `ready` appears on
    /// its stderr. Its stdout, if piped and not taken, is read as JSON lines.
    pub fn wrap(mut child: Child, ready: &str) -> Watch {
        let (tx, lines) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let v: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("watch printed non-JSON {line:?}: {e}"));
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            });
        }
        let (etx, stderr) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                eprintln!("[watch] {line}");
                if etx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut w = Watch {
            child,
            lines,
            seen: Vec::new(),
            stderr,
            stderr_seen: Vec::new(),
        };
        w.wait_stderr_within(ready, START);
        w
    }

    pub fn wait_stderr(&mut self, needle: &str) -> String {
        self.wait_stderr_within(needle, WAIT)
    }

    pub fn wait_stderr_within(&mut self, needle: &str, bound: Duration) -> String {
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(l) => {
                    self.stderr_seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!("watch did not print {needle:?} within {bound:?}"),
            }
        }
    }

    /// Waits for the first event (seen before or arriving) that matches.
    pub fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "no event {what} within {WAIT:?}; saw:\n{}",
                    self.seen
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }
        }
    }

    /// Waits until `n` events match.
    pub fn expect_count(
        &mut self,
        what: &str,
        n: usize,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let found: Vec<Value> = self.seen.iter().filter(|v| pred(v)).cloned().collect();
            if found.len() >= n {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => self.seen.push(v),
                Err(_) => panic!("only {} of {n} events {what} within {WAIT:?}", found.len()),
            }
        }
    }

    /// Sends `sig` and waits (bounded) for the exit; returns stderr lines.
    pub fn stop(self, sig: i32) -> (std::process::ExitStatus, Vec<String>) {
        let (status, err, _) = self.stop_collect(sig);
        (status, err)
    }

    /// Like [`Watch::stop`], and also every event it printed.
    pub fn stop_collect(mut self, sig: i32) -> (std::process::ExitStatus, Vec<String>, Vec<Value>) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "watch did not exit after signal {sig}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut err = Vec::new();
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_secs(2)) {
            err.push(l);
        }
        // The reader ends at the exit: what is left in the channel is all.
        while let Ok(v) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(v);
        }
        (status, err, std::mem::take(&mut self.seen))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

pub fn port_of(v: &Value, side: &str) -> u64 {
    v[side]["port"].as_u64().unwrap_or(0)
}

pub fn is(v: &Value, event: &str, pid: u32) -> bool {
    v["event"] == event && v["pid"] == pid
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}

/// Compiles, in `dir`, a C program that binds a UDP socket to 127.0.0.1 the
/// moment it starts and exits (status 1 if the bind failed): a process that
/// execs and binds within a millisecond.
pub fn fastbind(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("fastbind.c");
    std::fs::write(
        &src,
        "#include <sys/socket.h>\n#include <netinet/in.h>\n#include <arpa/inet.h>\n\
         int main(void){int s=socket(AF_INET,SOCK_DGRAM,0);struct sockaddr_in a={0};\
         a.sin_family=AF_INET;a.sin_addr.s_addr=htonl(INADDR_LOOPBACK);\
         return bind(s,(struct sockaddr*)&a,sizeof a)!=0;}\n",
    )
    .unwrap();
    let bin = dir.join("fastbind");
    run(Command::new("cc").arg("-O2").arg("-o").arg(&bin).arg(&src));
    bin
}

/// Compiles the C program `tests/fixtures/NAME.c` into `dir/NAME` with `cc`
/// and `flags` (`-m32` for a 32-bit program: needs gcc-multilib).
pub fn c_fixture(dir: &Path, name: &str, flags: &[&str]) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.c"));
    let bin = dir.join(name);
    let out = Command::new("cc")
        .args(flags)
        .args(["-O2", "-Wall", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cc: {e}"));
    assert!(
        out.status.success(),
        "cc {flags:?} {} failed{}:\n{}",
        src.display(),
        if flags.contains(&"-m32") {
            " (a 32-bit toolchain is needed: apt-get install gcc-multilib)"
        } else {
            ""
        },
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}
