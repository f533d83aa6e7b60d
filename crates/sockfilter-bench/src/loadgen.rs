//! A loopback socket load generator, bounded in time and in count.
//!
//! Every socket it opens is on 127.0.0.1, to a listener it opened itself:
//! it never sends a packet anywhere else.
//!
//! | mode | one operation | rate unit |
//! |---|---|---|
//! | [`Mode::Connect`] | client: `connect`, write 64 bytes, read 64 bytes, `close` (one accept loop serves them: read 64, write 64, close) | connections/s |
//! | [`Mode::Listen`] | `socket`, `bind(127.0.0.1:0)`, `listen`, `close` | listens/s |
//! | [`Mode::Bulk`] | one byte received over one connection (1 MiB writes) | bytes/s |
//! | [`Mode::Hold`] | one connection opened and kept open until the run ends | connections |

use serde_json::{json, Value};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the load generator does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Connect storm: N client threads against one accept loop.
    Connect,
    /// Listen storm: socket / bind / listen / close.
    Listen,
    /// Bulk transfer over one connection.
    Bulk,
    /// Open many connections and keep them open.
    Hold,
}

impl Mode {
    /// The name used on the command line and in the JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Connect => "connect",
            Mode::Listen => "listen",
            Mode::Bulk => "bulk",
            Mode::Hold => "hold",
        }
    }

    /// The unit of [`Report::rate`].
    pub fn unit(self) -> &'static str {
        match self {
            Mode::Connect => "connections/s",
            Mode::Listen => "listens/s",
            Mode::Bulk => "bytes/s",
            Mode::Hold => "connections/s",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "connect" => Ok(Mode::Connect),
            "listen" => Ok(Mode::Listen),
            "bulk" => Ok(Mode::Bulk),
            "hold" => Ok(Mode::Hold),
            _ => Err(format!(
                "unknown mode {s:?}; expected connect, listen, bulk or hold"
            )),
        }
    }
}

/// One run's parameters.
#[derive(Debug, Clone)]
pub struct Config {
    /// What to do.
    pub mode: Mode,
    /// Client threads (connect and listen storms).
    pub threads: usize,
    /// Upper bound on the run's time. For [`Mode::Hold`]: how long the
    /// connections are held once all are open.
    pub duration: Duration,
    /// Upper bound on the operations (bytes for [`Mode::Bulk`]).
    pub max_ops: u64,
    /// Target rate in operations per second over all threads (paced);
    /// None = as fast as possible.
    pub rate: Option<f64>,
    /// Record a [`Stamp`] just before each `listen()` / `connect()`.
    pub stamps: bool,
    /// [`Mode::Hold`]: how many connections to open.
    pub connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Connect,
            threads: 2,
            duration: Duration::from_secs(2),
            max_ops: u64::MAX,
            rate: None,
            stamps: false,
            connections: 10_000,
        }
    }
}

/// When one `listen()` or `connect()` was called, and on which socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The socket's cookie (`SO_COOKIE`), as sockfilter events carry it.
    pub cookie: u64,
    /// `CLOCK_REALTIME` nanoseconds just before the call.
    pub ns: u64,
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The mode run.
    pub mode: Mode,
    /// Operations completed (bytes for [`Mode::Bulk`]).
    pub ops: u64,
    /// Wall-clock seconds the operations took.
    pub seconds: f64,
    /// `ops / seconds`.
    pub rate: f64,
    /// Client threads used.
    pub threads: usize,
    /// Operations that failed (counted, not retried).
    pub errors: u64,
    /// The target rate, when paced.
    pub target_rate: Option<f64>,
    /// One stamp per `listen()`/`connect()` when asked for.
    pub stamps: Vec<Stamp>,
}

impl Report {
    /// The machine-readable line: `{"mode", "ops", "seconds", "rate", "unit", ...}`.
    pub fn to_json(&self) -> Value {
        json!({
            "mode": self.mode.as_str(),
            "ops": self.ops,
            "seconds": self.seconds,
            "rate": self.rate,
            "unit": self.mode.unit(),
            "threads": self.threads,
            "errors": self.errors,
            "target_rate": self.target_rate,
        })
    }
}

/// Runs one load. Returns when the time or the count is used up.
pub fn run(cfg: &Config) -> io::Result<Report> {
    if cfg.threads == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "at least one thread",
        ));
    }
    match cfg.mode {
        Mode::Connect => connect_storm(cfg),
        Mode::Listen => listen_storm(cfg),
        Mode::Bulk => bulk(cfg),
        Mode::Hold => hold(cfg, |_| {}),
    }
}

/// Shared stop conditions of the client threads: a deadline and a budget.
struct Budget {
    deadline: Instant,
    issued: AtomicU64,
    max: u64,
}

impl Budget {
    fn take(&self) -> bool {
        Instant::now() < self.deadline && self.issued.fetch_add(1, Ordering::Relaxed) < self.max
    }
}

/// Paces one thread at `rate` operations per second.
struct Pacer {
    per_op: Option<Duration>,
    start: Instant,
    done: u32,
}

impl Pacer {
    fn new(rate: Option<f64>, threads: usize) -> Pacer {
        Pacer {
            per_op: rate
                .filter(|r| *r > 0.0)
                .map(|r| Duration::from_secs_f64(threads as f64 / r)),
            start: Instant::now(),
            done: 0,
        }
    }

    /// Waits until the next operation is due. Sleeps only when more than a
    /// millisecond ahead (sleeping is coarse); never catches up more than
    /// 50 ms of backlog in a burst.
    fn wait(&mut self) {
        let Some(per_op) = self.per_op else { return };
        let due = self.start + per_op * self.done;
        let now = Instant::now();
        if due > now + Duration::from_millis(1) {
            std::thread::sleep(due - now);
        } else if now > due + Duration::from_millis(50) {
            self.start = now;
            self.done = 0;
        }
        self.done += 1;
    }
}

fn cookie(fd: RawFd) -> u64 {
    let mut c: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: c and len are valid out-pointers of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            &mut c as *mut u64 as *mut libc::c_void,
            &mut len,
        )
    };
    if rc == 0 {
        c
    } else {
        0
    }
}

fn loopback_listener() -> io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    // std listens with a backlog of 128; a second listen() only raises it
    // (not a new listener for sockfilter), so bursts are not dropped.
    // SAFETY: listen on a descriptor l owns.
    unsafe { libc::listen(l.as_raw_fd(), 4096) };
    let addr = l.local_addr()?;
    Ok((l, addr))
}

/// Waits up to `ms` for `fd` to become readable.
fn poll_in(fd: RawFd, ms: i32) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: p is one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) };
}

/// Accepts on a non-blocking listener until `stop`, handing each connection
/// to `serve`.
fn accept_loop(l: &TcpListener, stop: &AtomicBool, mut serve: impl FnMut(TcpStream)) {
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((s, _)) => serve(s),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => poll_in(l.as_raw_fd(), 20),
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

struct Totals {
    ops: u64,
    errors: u64,
    stamps: Vec<Stamp>,
}

fn clients(cfg: &Config, op: impl Fn(&mut Vec<Stamp>) -> bool + Sync) -> (Totals, f64) {
    let budget = Budget {
        deadline: Instant::now() + cfg.duration,
        issued: AtomicU64::new(0),
        max: cfg.max_ops,
    };
    let start = Instant::now();
    let totals = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cfg.threads)
            .map(|_| {
                s.spawn(|| {
                    let mut t = Totals {
                        ops: 0,
                        errors: 0,
                        stamps: Vec::new(),
                    };
                    let mut pacer = Pacer::new(cfg.rate, cfg.threads);
                    while budget.take() {
                        pacer.wait();
                        if op(&mut t.stamps) {
                            t.ops += 1;
                        } else {
                            t.errors += 1;
                            std::thread::sleep(Duration::from_micros(200));
                        }
                    }
                    t
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread panicked"))
            .fold(
                Totals {
                    ops: 0,
                    errors: 0,
                    stamps: Vec::new(),
                },
                |mut a, mut t| {
                    a.ops += t.ops;
                    a.errors += t.errors;
                    a.stamps.append(&mut t.stamps);
                    a
                },
            )
    });
    (totals, start.elapsed().as_secs_f64())
}

fn report(cfg: &Config, t: Totals, seconds: f64) -> Report {
    Report {
        mode: cfg.mode,
        ops: t.ops,
        seconds,
        rate: if seconds > 0.0 {
            t.ops as f64 / seconds
        } else {
            0.0
        },
        threads: cfg.threads,
        errors: t.errors,
        target_rate: cfg.rate,
        stamps: t.stamps,
    }
}

fn connect_storm(cfg: &Config) -> io::Result<Report> {
    let (listener, addr) = loopback_listener()?;
    listener.set_nonblocking(true)?;
    let stop = AtomicBool::new(false);
    let (totals, seconds) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut buf = [0u8; 64];
            accept_loop(&listener, &stop, |mut c| {
                let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                if c.read_exact(&mut buf).is_ok() {
                    let _ = c.write_all(&buf);
                }
            })
        });
        let r = clients(cfg, |stamps| {
            let t = cfg.stamps.then(crate::realtime_ns);
            let Ok(mut c) = TcpStream::connect(addr) else {
                return false;
            };
            if let Some(ns) = t {
                stamps.push(Stamp {
                    cookie: cookie(c.as_raw_fd()),
                    ns,
                });
            }
            let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
            let mut buf = [7u8; 64];
            c.write_all(&buf).is_ok() && c.read_exact(&mut buf).is_ok()
        });
        stop.store(true, Ordering::Relaxed);
        r
    });
    Ok(report(cfg, totals, seconds))
}

fn listen_storm(cfg: &Config) -> io::Result<Report> {
    let (totals, seconds) = clients(cfg, |stamps| {
        // SAFETY: plain socket calls on a descriptor this closure owns and
        // closes; the sockaddr is a valid sockaddr_in of the size given.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return false;
            }
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
                },
                sin_zero: [0; 8],
            };
            let ok = libc::bind(
                fd,
                &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ) == 0
                && {
                    if cfg.stamps {
                        let c = cookie(fd);
                        stamps.push(Stamp {
                            cookie: c,
                            ns: crate::realtime_ns(),
                        });
                    }
                    libc::listen(fd, 16) == 0
                };
            libc::close(fd);
            ok
        }
    });
    Ok(report(cfg, totals, seconds))
}

fn bulk(cfg: &Config) -> io::Result<Report> {
    let (listener, addr) = loopback_listener()?;
    let received = AtomicU64::new(0);
    let (sent_ok, seconds) = std::thread::scope(|s| -> io::Result<(bool, f64)> {
        let server = s.spawn(|| -> io::Result<()> {
            let (mut c, _) = listener.accept()?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match c.read(&mut buf)? {
                    0 => return Ok(()),
                    n => {
                        received.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            }
        });
        let start = Instant::now();
        let deadline = start + cfg.duration;
        let mut c = TcpStream::connect(addr)?;
        let chunk = vec![0x5au8; 1 << 20];
        let mut sent = 0u64;
        let mut ok = true;
        while Instant::now() < deadline && sent < cfg.max_ops {
            let n = (cfg.max_ops - sent).min(chunk.len() as u64) as usize;
            if c.write_all(&chunk[..n]).is_err() {
                ok = false;
                break;
            }
            sent += n as u64;
        }
        drop(c);
        let r = server.join().expect("bulk server panicked");
        Ok((ok && r.is_ok(), start.elapsed().as_secs_f64()))
    })?;
    let t = Totals {
        ops: received.load(Ordering::Relaxed),
        errors: u64::from(!sent_ok),
        stamps: Vec::new(),
    };
    Ok(Report {
        threads: 1,
        ..report(cfg, t, seconds)
    })
}

/// Raises the open-file limit to at least `n` (root may raise the hard
/// limit too).
pub fn raise_nofile(n: u64) -> io::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur >= n {
        return Ok(());
    }
    lim.rlim_cur = n;
    lim.rlim_max = lim.rlim_max.max(n);
    // SAFETY: lim is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// [`Mode::Hold`]: opens `cfg.connections` connections to its own listener,
/// calls `established` with their number once all are open (and accepted),
/// keeps them for `cfg.duration`, then closes them all. The accepting side
/// is a forked child process, so each process needs only one descriptor per
/// connection. Call it before starting any thread.
pub fn hold(cfg: &Config, established: impl FnOnce(usize)) -> io::Result<Report> {
    raise_nofile(cfg.connections as u64 + 256)?;
    let (listener, addr) = loopback_listener()?;
    let (stop_r, stop_w) = pipe()?;
    let (done_r, done_w) = pipe()?;
    let start = Instant::now();
    // SAFETY: the process has one thread here (documented precondition); the
    // child only accepts, polls, writes a byte and _exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(io::Error::last_os_error());
    }
    if child == 0 {
        drop(stop_w);
        drop(done_r);
        hold_server(
            &listener,
            cfg.connections,
            stop_r.as_raw_fd(),
            done_w.as_raw_fd(),
        );
        // SAFETY: leaving the forked child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    drop(listener);
    drop(stop_r);
    drop(done_w);
    let mut clients = Vec::with_capacity(cfg.connections);
    let mut errors = 0u64;
    while clients.len() < cfg.connections && errors < 1000 {
        match TcpStream::connect(addr) {
            Ok(c) => clients.push(c),
            Err(_) => errors += 1,
        }
    }
    // Wait for the child to have accepted them all (it writes one byte).
    poll_in(done_r.as_raw_fd(), 10_000);
    let seconds = start.elapsed().as_secs_f64();
    let opened = clients.len();
    established(opened);
    std::thread::sleep(cfg.duration);
    drop(clients);
    drop(stop_w);
    let mut status = 0;
    // SAFETY: child is our child's pid; status is a valid out-pointer.
    unsafe { libc::waitpid(child, &mut status, 0) };
    Ok(Report {
        mode: Mode::Hold,
        ops: opened as u64,
        seconds,
        rate: opened as f64 / seconds.max(1e-9),
        threads: 1,
        errors,
        target_rate: None,
        stamps: Vec::new(),
    })
}

fn pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two new descriptors that nothing else owns.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// The accepting side of [`hold`]: keeps every connection until `stop` is
/// closed; writes one byte to `done` when `target` are kept.
fn hold_server(l: &TcpListener, target: usize, stop: RawFd, done: RawFd) {
    let _ = l.set_nonblocking(true);
    let mut kept = Vec::with_capacity(target);
    let mut told = false;
    loop {
        match l.accept() {
            Ok((c, _)) => kept.push(c),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut p = [
                    libc::pollfd {
                        fd: l.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    },
                    libc::pollfd {
                        fd: stop,
                        events: libc::POLLIN,
                        revents: 0,
                    },
                ];
                // SAFETY: p is an array of two valid pollfds.
                unsafe { libc::poll(p.as_mut_ptr(), 2, 1000) };
                if p[1].revents != 0 {
                    return;
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
        if !told && kept.len() >= target {
            // SAFETY: writing one byte from a valid buffer.
            unsafe { libc::write(done, b"x".as_ptr() as *const libc::c_void, 1) };
            told = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paced_listen_storm_keeps_to_its_rate() {
        let r = run(&Config {
            mode: Mode::Listen,
            threads: 1,
            duration: Duration::from_millis(500),
            rate: Some(2000.0),
            stamps: true,
            ..Config::default()
        })
        .unwrap();
        assert!(r.rate > 1000.0 && r.rate < 2500.0, "rate {}", r.rate);
        assert_eq!(r.stamps.len() as u64, r.ops);
        assert!(r.stamps.iter().all(|s| s.cookie != 0));
    }

    #[test]
    fn count_bounds_the_run() {
        let r = run(&Config {
            mode: Mode::Connect,
            threads: 2,
            duration: Duration::from_secs(30),
            max_ops: 100,
            ..Config::default()
        })
        .unwrap();
        assert_eq!(r.ops + r.errors, 100);
    }
}
