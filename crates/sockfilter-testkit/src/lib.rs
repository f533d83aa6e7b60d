//! Fixtures shared by sockfilter's integration tests, which run real
//! processes against the real kernel: a throw-away child cgroup and a
//! throw-away network namespace, both removed on drop (also when a test
//! fails), so that tests can run in parallel without seeing each other.

#![warn(missing_docs)]

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The cgroup2 mount, from /proc/self/mountinfo (never a hard-coded path).
pub fn cgroup2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2"
                && left.split_whitespace().nth(3)? == "/")
                .then(|| PathBuf::from(left.split_whitespace().nth(4).unwrap()))
        })
        .expect("a cgroup2 mount")
}

/// A child cgroup of the cgroup2 root, removed when dropped (its processes
/// killed first).
pub struct TestCgroup {
    /// The directory.
    pub path: PathBuf,
    procs: CString,
}

impl TestCgroup {
    /// Creates `sockfilter-test-NAME-PID` under the cgroup2 root.
    pub fn new(name: &str) -> TestCgroup {
        let path = cgroup2_root().join(format!("sockfilter-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        let procs = CString::new(path.join("cgroup.procs").to_str().unwrap()).unwrap();
        TestCgroup { path, procs }
    }

    /// The path as /proc/PID/cgroup shows it.
    pub fn name(&self) -> String {
        format!(
            "/{}",
            self.path.strip_prefix(cgroup2_root()).unwrap().display()
        )
    }

    /// Creates the cgroup `rel` below this one, with every missing
    /// component (e.g. `system.slice/nginx.service`); it is removed with
    /// this one. Returns its path as /proc/PID/cgroup shows it.
    pub fn create_child(&self, rel: &str) -> String {
        let dir = self.path.join(rel);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        format!("{}/{rel}", self.name())
    }

    /// Makes `cmd` start inside this cgroup: it is moved between fork and
    /// exec, so every socket it opens belongs here.
    pub fn enter(&self, cmd: &mut Command) {
        enter_procs(self.procs.clone(), cmd);
    }

    /// Like [`TestCgroup::enter`], into the child `rel` made by
    /// [`TestCgroup::create_child`].
    pub fn enter_child(&self, rel: &str, cmd: &mut Command) {
        let procs = self.path.join(rel).join("cgroup.procs");
        enter_procs(CString::new(procs.to_str().unwrap()).unwrap(), cmd);
    }
}

/// Moves the child of `cmd` into the cgroup whose `cgroup.procs` is `procs`
/// between fork and exec.
fn enter_procs(procs: CString, cmd: &mut Command) {
    // SAFETY: only async-signal-safe calls (open, write, close) between
    // fork and exec; the path was allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
            libc::close(fd);
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Every cgroup directory below `dir`, deepest first.
fn descendants(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(descendants(&e.path()));
                out.push(e.path());
            }
        }
    }
    out
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(10);
        for dir in descendants(&self.path)
            .into_iter()
            .chain([self.path.clone()])
        {
            while std::fs::remove_dir(&dir).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A network namespace with loopback up, deleted when dropped.
pub struct TestNetns {
    /// Its name (`ip netns`).
    pub name: String,
}

impl TestNetns {
    /// Creates `sf-TAG-PID`.
    pub fn new(tag: &str) -> TestNetns {
        let name = format!("sf-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run(Command::new("ip").args(["netns", "add", &name]));
        run(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        TestNetns { name }
    }

    /// Inode of the namespace (what events report as `netns`).
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/run/netns/{}", self.name))
            .unwrap()
            .ino()
    }

    /// `ip netns exec NAME PROGRAM`.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a command that must succeed.
pub fn run(cmd: &mut Command) {
    let st = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(st.success(), "{cmd:?} failed: {st}");
}

/// The python3 executable as /proc/PID/exe shows it.
pub fn python_exe() -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os,sys; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .expect("python3");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// What a test's failure message starts with when the kernel lacks a
/// feature the test needs; `scripts/kernel-matrix.sh` reports such a test
/// as "not supported: FEATURE (WHY)" instead of "failed".
pub const NOT_SUPPORTED: &str = "not supported: ";

/// Fails the calling test with `not supported: FEATURE (WHY)` unless
/// `check` is Ok: the kernel does not offer `feature` (an id of
/// `sockfilter doctor`, e.g. `bpf_lsm`), so what the test is about cannot
/// be shown here. Never a silent pass: the test fails, and the kernel
/// matrix names the missing feature.
///
/// ```should_panic
/// sockfilter_testkit::require("bpf_lsm", Err("`bpf` is not an active LSM"));
/// ```
pub fn require<E: std::fmt::Display>(feature: &str, check: Result<(), E>) {
    if let Err(why) = check {
        panic!("{NOT_SUPPORTED}{feature} ({why})");
    }
}
