//! Fixtures for the daemon tests: a temporary directory, free loopback
//! ports, real servers (Prometheus, rsyslog, nats-server) stopped by pid,
//! and a running `sockfilter daemon` that has said `READY=1`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use sockfilter_testkit::TestCgroup;

/// How long anything in these tests may take to happen.
pub const WAIT: Duration = Duration::from_secs(30);

/// How long the daemon may take to start (load, verify and attach every
/// BPF program): about a second here, over 30 s for an enforcing daemon in
/// a kernel-matrix guest, where QEMU emulates the CPU (as `START` in
/// common/mod.rs).
pub const START: Duration = Duration::from_secs(120);

/// A directory under /tmp, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("sockfilter-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 50 ms until it returns Some, for at most [`WAIT`].
pub fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_within(what, WAIT, f)
}

/// Polls `f` every 50 ms until it returns Some, for at most `bound`.
pub fn wait_within<T>(what: &str, bound: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {bound:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server process, stopped (SIGTERM, then SIGKILL) and reaped on drop.
pub struct Server {
    pub name: &'static str,
    pub child: Child,
}

impl Server {
    /// Starts `cmd` (output into `log`) and waits until `port` accepts connections.
    pub fn start(name: &'static str, cmd: &mut Command, log: &Path, port: u16) -> Server {
        let log = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {name} ({cmd:?}): {e}; is its Debian package installed?")
            });
        let mut s = Server { name, child };
        wait_for(&format!("{name} listening on 127.0.0.1:{port}"), || {
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("{name} exited at start: {st}");
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        s
    }

    /// SIGTERM, and wait (bounded) for the exit.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id() as i32;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `GET path` on 127.0.0.1:port: (status code, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// A running `sockfilter daemon`.
pub struct Daemon {
    pub child: Child,
    pub config: PathBuf,
    notify: UnixDatagram,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

/// `host = HOST` and `cgroup = CG`: the start of every test config (a
/// daemon watches only its test's cgroup, so tests do not see each other).
pub fn base_config(host: &str, cg: &TestCgroup) -> String {
    format!("host = \"{host}\"\ncgroup = \"{}\"\n", cg.name())
}

impl Daemon {
    /// Writes `config` to DIR/NAME.toml, starts the daemon and waits for READY=1.
    pub fn start(dir: &TempDir, name: &str, config: &str) -> Daemon {
        let path = dir.join(&format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let notify_path = dir.join(&format!("{name}.notify"));
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sockfilter"))
            .args(["daemon", "--config"])
            .arg(&path)
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting sockfilter daemon");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let err = child.stderr.take().unwrap();
        let tag = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[daemon {tag}] {line}");
                lines.lock().unwrap().push(line);
            }
        });
        let d = Daemon {
            child,
            config: path,
            notify,
            stderr,
        };
        d.notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 64];
        let mut d = d;
        let n = wait_within("READY=1 from the daemon", START, || {
            match d.notify.recv(&mut buf) {
                Ok(n) => Some(n),
                Err(_) => {
                    if let Ok(Some(st)) = d.child.try_wait() {
                        std::thread::sleep(Duration::from_millis(100)); // the last stderr lines
                        panic!(
                            "the daemon exited ({st}) before READY=1: {:?}",
                            d.stderr.lock().unwrap()
                        );
                    }
                    None
                }
            }
        });
        assert_eq!(&buf[..n], b"READY=1");
        d
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// Waits for a stderr line containing `needle` (after `skip` lines).
    pub fn wait_stderr(&self, needle: &str, skip: usize) -> String {
        wait_for(&format!("daemon stderr line with {needle:?}"), || {
            self.stderr
                .lock()
                .unwrap()
                .iter()
                .skip(skip)
                .find(|l| l.contains(needle))
                .cloned()
        })
    }

    pub fn stderr_len(&self) -> usize {
        self.stderr.lock().unwrap().len()
    }

    /// SIGTERM; waits (bounded) for the exit.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let st = wait_for("the daemon to exit after SIGTERM", || {
            self.child.try_wait().unwrap()
        });
        // The stderr thread may still be reading the last lines.
        wait_for("the daemon's stopped line", || {
            self.stderr
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("daemon stopped"))
                .then_some(())
        });
        st
    }
}

impl Drop for Daemon {
    /// SIGTERM first: a daemon with a policy removes what it pinned in
    /// bpffs only on a clean stop (a SIGKILLed one leaves it enforcing).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling our own child, not yet reaped.
            unsafe { libc::kill(self.pid(), libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A python3 program in `cg` that listens on a TCP port of 127.0.0.1 and
/// binds a UDP one, prints both ports, and waits for stdin to close.
pub fn listener(cg: &TestCgroup) -> (Child, u16, u16) {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-u",
        "-c",
        "import socket,sys\nt=socket.socket(); t.bind(('127.0.0.1',0)); t.listen()\nu=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.bind(('127.0.0.1',0))\nprint(t.getsockname()[1], u.getsockname()[1])\nsys.stdin.read()",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped());
    cg.enter(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut ports = line.split_whitespace().map(|p| p.parse::<u16>().unwrap());
    (child, ports.next().unwrap(), ports.next().unwrap())
}

/// JSON lines of a file (none if it does not exist yet).
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {l:?}: {e}", path.display()))
        })
        .collect()
}
