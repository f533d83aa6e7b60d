//! Fixtures for the library's integration tests against the real kernel:
//! a throw-away cgroup, a throw-away network namespace, python3 programs
//! that say when they are ready, and bounded waits.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

#[allow(unused_imports)] // each test binary uses a different part
pub use sockfilter_testkit::{cgroup2_root, python_exe, run, TestCgroup, TestNetns};

/// Upper bound of every wait.
pub const WAIT: Duration = Duration::from_secs(30);

/// A child process killed and reaped on drop, with line-wise stdin/stdout.
pub struct Proc {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub out: BufReader<ChildStdout>,
}

impl Proc {
    /// Starts `cmd` in `cg` with piped stdin/stdout.
    pub fn spawn(cg: &TestCgroup, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        cg.enter(&mut cmd);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().unwrap());
        Proc { child, stdin, out }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line (the program's own pace; the test's timeout
    /// bounds it through the program's own bounded waits).
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the program ended before printing a line");
        line.trim_end().to_string()
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `python3 -u -c CODE` in `cg`, optionally in a network namespace.
pub fn python(cg: &TestCgroup, netns: Option<&TestNetns>, code: &str) -> Proc {
    let mut cmd = match netns {
        Some(ns) => ns.command("python3"),
        None => Command::new("python3"),
    };
    cmd.args(["-u", "-c", code]);
    Proc::spawn(cg, cmd)
}

/// A directory of the build: target/<profile>/ (the test binary lives in
/// target/<profile>/deps/).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// Waits for `rx` to deliver a value matching `pred`, bounded by WAIT.
pub fn recv_until<T: std::fmt::Debug>(
    rx: &std::sync::mpsc::Receiver<T>,
    what: &str,
    mut pred: impl FnMut(&T) -> bool,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) if pred(&v) => return v,
            Ok(_) => {}
            Err(e) => panic!("no {what} within {WAIT:?}: {e}"),
        }
    }
}
