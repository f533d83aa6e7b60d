//! Supervised mode: seccomp user notification holds a program's socket calls
//! until user space decides.
//!
//! [`Supervisor`] runs a command with a seccomp filter, installed in the child
//! between `fork` and `exec` (with `PR_SET_NO_NEW_PRIVS`, so no privilege is
//! needed), that turns `bind`, `listen`, `connect`, `accept`, `accept4`,
//! `sendto` with a destination, `sendmsg` and `sendmmsg` into
//! `SECCOMP_RET_USER_NOTIF`. Every such call of the command and of all its
//! descendants waits until the supervisor has asked the decision callback
//! (`Fn(&Request) -> Verdict`) and answered.
//!
//! Calls on AF_INET/AF_INET6 sockets are *emulated*: the supervisor takes a
//! duplicate of the socket with `pidfd_getfd(2)`, reads the pointer arguments
//! (the socket address, the payload) exactly once, decides on that copy and
//! performs the call itself on the duplicate with the same copy, so a thread
//! of the program that rewrites the address after the decision changes
//! nothing. Calls on other sockets (AF_UNIX, netlink, ...) carry no decision
//! and continue in the kernel (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`).
//!
//! ```no_run
//! use sockfilter::supervise::{Operation, Supervisor, Verdict};
//! use std::process::Command;
//! let status = Supervisor::new(|req| {
//!     if req.op == Operation::Listen && req.local.map(|e| e.port) == Some(8080) {
//!         Verdict::deny().with_rule("no-8080")
//!     } else {
//!         Verdict::allow()
//!     }
//! })
//! .on_event(|ev| println!("{}", ev.to_json()))
//! .run(&mut Command::new("python3"))
//! .unwrap();
//! # let _ = status;
//! ```

use sockfilter_model::event::{Details, Endpoint, Event, Family, Owner, Proto, Verdict as Action};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::SystemTime;

/// The socket operation a held call asks for: the same operations a policy
/// decides about. `Connect` also stands for `sendto()`/`sendmsg()` to a
/// destination (a UDP "connect"); `Accept` is decided on the accepted
/// connection's peer.
pub use sockfilter_model::policy::Operation;

/// The system call that was held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Syscall {
    /// `bind(2)`.
    Bind,
    /// `listen(2)`.
    Listen,
    /// `connect(2)`.
    Connect,
    /// `accept(2)`.
    Accept,
    /// `accept4(2)`.
    Accept4,
    /// `sendto(2)` with a destination address.
    Sendto,
    /// `sendmsg(2)` with a destination address.
    Sendmsg,
    /// `sendmmsg(2)`, one message with a destination address.
    Sendmmsg,
}

/// One held call to decide: who makes it and what it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Thread-group id of the caller (what `ps` calls the PID).
    pub pid: u32,
    /// Thread id of the calling thread.
    pub tid: u32,
    /// Real user id of the caller.
    pub uid: u32,
    /// The calling thread's command name.
    pub comm: String,
    /// The caller's executable, as `/proc/PID/exe` shows it.
    pub exe: Option<String>,
    /// The caller's cgroup v2 path.
    pub cgroup: Option<String>,
    /// What is asked.
    pub op: Operation,
    /// The system call that asks it.
    pub syscall: Syscall,
    /// TCP (stream sockets) or UDP (datagram and raw sockets).
    pub proto: Proto,
    /// The socket's address family.
    pub family: Family,
    /// The local endpoint: the address asked for by `bind`, the socket's
    /// current address otherwise (None when the kernel reports none).
    pub local: Option<Endpoint>,
    /// The remote endpoint: the destination of `connect`/`sendto`, the peer of
    /// an accepted connection; None for `bind` and `listen`.
    pub remote: Option<Endpoint>,
    /// The socket cookie (`SO_COOKIE`) of the socket concerned (for `accept`,
    /// of the accepted connection).
    pub socket: u64,
    /// `listen`: the backlog asked for.
    pub backlog: Option<u32>,
    /// `accept`: the listening socket's cookie.
    pub listener: Option<u64>,
}

impl Request {
    /// The owner record of an event about this request.
    pub fn owner(&self) -> Owner {
        Owner {
            pid: self.pid,
            uid: self.uid,
            comm: self.comm.clone(),
            exe: self.exe.clone(),
            cgroup: self.cgroup.clone(),
        }
    }
}

/// The answer of the decision callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Allow, deny, or allow and report as audited.
    pub action: Action,
    /// The name of the rule that decided (None for a default).
    pub rule: Option<String>,
}

impl Verdict {
    /// Let the call go ahead.
    pub fn allow() -> Self {
        Verdict {
            action: Action::Allow,
            rule: None,
        }
    }

    /// Refuse the call: it fails with `EPERM` (`accept`: `ECONNABORTED`).
    pub fn deny() -> Self {
        Verdict {
            action: Action::Deny,
            rule: None,
        }
    }

    /// Let the call go ahead, reported with verdict `audit`.
    pub fn audit() -> Self {
        Verdict {
            action: Action::Audit,
            rule: None,
        }
    }

    /// Names the rule that decided.
    pub fn with_rule(mut self, rule: impl Into<String>) -> Self {
        self.rule = Some(rule.into());
        self
    }

    /// True unless the verdict is deny.
    pub fn allows(&self) -> bool {
        self.action != Action::Deny
    }
}

/// Why a command could not be started under supervision.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// The command was not found (exit status 127 by shell convention).
    #[error("{program}: command not found")]
    NotFound {
        /// The program as given.
        program: String,
    },
    /// The command could not be executed (exit status 126 by shell convention).
    #[error("{program}: cannot execute: {source}")]
    NotExecutable {
        /// The program as given.
        program: String,
        /// The error of `execve`.
        source: io::Error,
    },
    /// Installing the seccomp filter or taking its listener failed.
    #[error("cannot install the seccomp filter: {0}")]
    Seccomp(io::Error),
    /// Another system error while starting.
    #[error("{0}")]
    Io(#[from] io::Error),
}

type DecideFn = dyn Fn(&Request) -> Verdict + Send + Sync;
type EventFn = dyn Fn(&Event) + Send + Sync;

/// Runs commands with their socket calls held until the decision callback answers.
pub struct Supervisor {
    decide: Box<DecideFn>,
    on_event: Option<Box<EventFn>>,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor").finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor that decides every held call with `decide`.
    ///
    /// `decide` runs on the supervisor's threads, possibly on several at
    /// once (blocking `accept` and `connect` are served by worker threads);
    /// while it runs, the calling thread of the program waits.
    pub fn new(decide: impl Fn(&Request) -> Verdict + Send + Sync + 'static) -> Self {
        Supervisor {
            decide: Box::new(decide),
            on_event: None,
        }
    }

    /// Calls `f` with one [`Event`] per decision (also for calls allowed
    /// without a rule). `sendto`/`sendmsg` to a destination a socket already
    /// sent to with an allowing verdict is not decided again and not reported.
    pub fn on_event(mut self, f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Box::new(f));
        self
    }

    /// Starts `cmd` under supervision and returns at once; the held calls are
    /// served by a background thread until every supervised task is gone.
    pub fn spawn(self, cmd: &mut Command) -> Result<Supervised, SuperviseError> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let filter = Arc::new(filter::program()?);
        let (report_r, report_w) = pipe()?;
        let (ack_r, ack_w) = pipe()?;
        let fds = [
            report_w.as_raw_fd(),
            ack_r.as_raw_fd(),
            report_r.as_raw_fd(),
            ack_w.as_raw_fd(),
        ];
        let child_filter = filter.clone();
        // SAFETY: the closure runs in the forked child and only makes
        // async-signal-safe system calls on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || child_setup(&child_filter, fds));
        }
        let fetcher = std::thread::spawn(move || fetch_listener(report_r, ack_w));
        let spawned = cmd.spawn();
        drop(report_w);
        drop(ack_r);
        let fetched = fetcher
            .join()
            .map_err(|_| io::Error::other("listener thread panicked"))?;
        let child = match spawned {
            Ok(child) => child,
            Err(err) => {
                return Err(match fetched {
                    // The filter was installed: execve itself failed.
                    Ok(Some(_)) => match err.kind() {
                        io::ErrorKind::NotFound => SuperviseError::NotFound { program },
                        _ => SuperviseError::NotExecutable {
                            program,
                            source: err,
                        },
                    },
                    _ if err.raw_os_error() == Some(libc::EBUSY) => {
                        SuperviseError::Seccomp(io::Error::other(
                            "this process is already supervised: the kernel allows one \
                             seccomp listener per process tree (EBUSY)",
                        ))
                    }
                    _ => SuperviseError::Seccomp(err),
                });
            }
        };
        let listener = match fetched {
            Ok(Some(fd)) => fd,
            Ok(None) => {
                return Err(SuperviseError::Seccomp(io::Error::other(
                    "the child did not report its listener",
                )))
            }
            Err(err) => return Err(SuperviseError::Seccomp(err)),
        };
        let core = Arc::new(Core {
            listener,
            decide: self.decide,
            on_event: self.on_event,
            sent: Mutex::new(HashSet::new()),
            cgroups: Mutex::new(HashMap::new()),
        });
        let done = Arc::new(AtomicBool::new(false));
        let loop_done = done.clone();
        let thread = std::thread::Builder::new()
            .name("sockfilter-supervise".into())
            .spawn(move || {
                // Marks the end also when a callback panics: the listener is
                // then closed and the program's held calls fail with ENOSYS.
                struct Done(Arc<AtomicBool>);
                impl Drop for Done {
                    fn drop(&mut self) {
                        self.0.store(true, Ordering::SeqCst);
                    }
                }
                let _done = Done(loop_done);
                notify_loop(&core);
            })?;
        Ok(Supervised {
            child,
            thread: Some(thread),
            done,
        })
    }

    /// Runs `cmd` under supervision until it exits and every descendant it
    /// left behind is gone, forwarding SIGINT, SIGTERM, SIGHUP and SIGQUIT to
    /// it. A second such signal after the command exited stops supervising
    /// the remaining descendants (their held calls then fail with `ENOSYS`).
    ///
    /// Blocks those signals and SIGCHLD in the calling thread while it runs.
    pub fn run(self, cmd: &mut Command) -> Result<ExitStatus, SuperviseError> {
        use nix::sys::signal::{SigSet, SigmaskHow, Signal};
        let mut set = SigSet::empty();
        for s in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
            Signal::SIGCHLD,
        ] {
            set.add(s);
        }
        let mut old = SigSet::empty();
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))
            .map_err(io::Error::from)?;
        // The command starts with the signal mask of the caller, not ours.
        let child_mask = *old.as_ref();
        // SAFETY: pthread_sigmask is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                libc::pthread_sigmask(libc::SIG_SETMASK, &child_mask, std::ptr::null_mut());
                Ok(())
            });
        }
        let result = self.spawn(cmd).and_then(|mut sup| {
            let pid = sup.id() as libc::pid_t;
            let mut status = None;
            loop {
                if status.is_none() {
                    status = sup.child.try_wait()?;
                }
                if let Some(st) = status {
                    if sup.finished() {
                        return Ok(st);
                    }
                }
                let ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 100_000_000,
                };
                // SAFETY: siginfo_t is plain data.
                let mut info: libc::siginfo_t = unsafe { zeroed() };
                // SAFETY: plain system call on a valid signal set and siginfo.
                let sig = unsafe { libc::sigtimedwait(set.as_ref() as *const _, &mut info, &ts) };
                // A signal from the terminal (SI_KERNEL) already reached the
                // command, which shares our process group: forward only those
                // sent to sockfilter itself.
                if sig > 0
                    && sig != libc::SIGCHLD
                    && (info.si_code != libc::SI_KERNEL || status.is_some())
                {
                    match status {
                        // SAFETY: plain system call.
                        None => unsafe {
                            libc::kill(pid, sig);
                        },
                        Some(st) => return Ok(st),
                    }
                }
            }
        });
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
        result
    }
}

/// A command running under supervision.
#[derive(Debug)]
pub struct Supervised {
    child: Child,
    thread: Option<JoinHandle<()>>,
    done: Arc<AtomicBool>,
}

impl Supervised {
    /// The command's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The command's process, e.g. to take its piped standard streams.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// True once no supervised task is left (the command and every
    /// descendant have exited and been reaped).
    pub fn finished(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }

    /// Waits for the command to exit, then for every descendant it left
    /// behind, and returns the command's status.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait()?;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Ok(status)
    }
}

const SO_DOMAIN: libc::c_int = 39;
const SO_PROTOCOL: libc::c_int = 38;
const SO_COOKIE: libc::c_int = 57;
const PIDFD_THREAD: libc::c_int = libc::O_EXCL;

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// In the child between fork and exec: install the filter, report
/// `[pid, listener fd]` and wait until the parent has taken the listener.
fn child_setup(prog: &filter::Program, fds: [RawFd; 4]) -> io::Result<()> {
    let [report, ack, parent_report, parent_ack] = fds;
    // SAFETY: async-signal-safe system calls on memory valid for the call.
    unsafe {
        // The parent's ends: without them here, the parent going away is seen.
        libc::close(parent_report);
        libc::close(parent_ack);
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        let fprog = prog.fprog();
        let fd = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &fprog as *const libc::sock_fprog,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let msg: [i32; 2] = [libc::getpid(), fd as i32];
        if libc::write(report, msg.as_ptr().cast(), 8) != 8 {
            return Err(io::Error::last_os_error());
        }
        let mut b = 0u8;
        if libc::read(ack, (&mut b as *mut u8).cast(), 1) != 1 {
            return Err(io::Error::other("supervisor went away"));
        }
        libc::close(fd as i32);
    }
    Ok(())
}

/// In the parent: take the child's listener with pidfd_getfd and let it exec.
fn fetch_listener(report: OwnedFd, ack: OwnedFd) -> io::Result<Option<OwnedFd>> {
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        // SAFETY: reading into a valid buffer.
        let n = unsafe { libc::read(report.as_raw_fd(), buf[got..].as_mut_ptr().cast(), 8 - got) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Ok(None);
        }
        got += n as usize;
    }
    let pid = i32::from_ne_bytes(buf[..4].try_into().unwrap());
    let fd = i32::from_ne_bytes(buf[4..].try_into().unwrap());
    let pidfd = pidfd_open(pid, 0)?;
    let listener = pidfd_getfd(&pidfd, fd)?;
    // SAFETY: writing one byte from a valid buffer.
    unsafe { libc::write(ack.as_raw_fd(), b"k".as_ptr().cast(), 1) };
    Ok(Some(listener))
}

fn pidfd_open(pid: i32, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain system call.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn pidfd_getfd(pidfd: &OwnedFd, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain system call.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The classic BPF program of the filter.
mod filter {
    use std::io;

    /// A seccomp filter program.
    pub struct Program(Vec<libc::sock_filter>);

    // SAFETY: the program is plain data, only read after construction.
    unsafe impl Send for Program {}
    // SAFETY: as above.
    unsafe impl Sync for Program {}

    impl Program {
        pub fn fprog(&self) -> libc::sock_fprog {
            libc::sock_fprog {
                len: self.0.len() as u16,
                filter: self.0.as_ptr() as *mut libc::sock_filter,
            }
        }
    }

    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

    const OFF_NR: u32 = 0;
    const OFF_ARCH: u32 = 4;
    const fn off_arg_lo(n: u32) -> u32 {
        16 + 8 * n + if cfg!(target_endian = "little") { 0 } else { 4 }
    }
    const fn off_arg_hi(n: u32) -> u32 {
        16 + 8 * n + if cfg!(target_endian = "little") { 4 } else { 0 }
    }

    #[derive(Clone, Copy, PartialEq)]
    enum T {
        Next,
        L(&'static str),
    }

    struct Asm {
        ins: Vec<(u16, T, T, u32)>,
        labels: Vec<(&'static str, usize)>,
    }

    impl Asm {
        fn label(&mut self, l: &'static str) {
            self.labels.push((l, self.ins.len()));
        }
        fn ld(&mut self, off: u32) {
            self.ins.push((LD_W_ABS, T::Next, T::Next, off));
        }
        fn jeq(&mut self, k: u32, t: T, f: T) {
            self.ins.push((JEQ_K, t, f, k));
        }
        fn jge(&mut self, k: u32, t: T, f: T) {
            self.ins.push((JGE_K, t, f, k));
        }
        fn ret(&mut self, k: u32) {
            self.ins.push((RET_K, T::Next, T::Next, k));
        }
        fn finish(self) -> io::Result<Program> {
            let find = |i: usize, t: T| -> io::Result<u8> {
                let target = match t {
                    T::Next => return Ok(0),
                    T::L(l) => self
                        .labels
                        .iter()
                        .find(|(n, _)| *n == l)
                        .map(|(_, at)| *at)
                        .ok_or_else(|| io::Error::other("bpf: unknown label"))?,
                };
                u8::try_from(target - i - 1).map_err(|_| io::Error::other("bpf: jump too far"))
            };
            let mut out = Vec::with_capacity(self.ins.len());
            for (i, &(code, jt, jf, k)) in self.ins.iter().enumerate() {
                out.push(libc::sock_filter {
                    code,
                    jt: find(i, jt)?,
                    jf: find(i, jf)?,
                    k,
                });
            }
            Ok(Program(out))
        }
    }

    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH_NATIVE: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH_NATIVE: u32 = 0xC000_00B7;
    const AUDIT_ARCH_I386: u32 = 0x4000_0003;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;

    /// The filter: native socket calls are held, i386 ones refused, io_uring
    /// (which would bypass the filter) reported as missing.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    pub fn program() -> io::Result<Program> {
        let notif = T::L("notif");
        let allow = T::L("allow");
        let enosys = T::L("enosys");
        let eperm = T::L("eperm");
        let mut a = Asm {
            ins: Vec::new(),
            labels: Vec::new(),
        };
        a.ld(OFF_ARCH);
        a.jeq(AUDIT_ARCH_NATIVE, T::L("native"), T::Next);
        if cfg!(target_arch = "x86_64") {
            a.jeq(AUDIT_ARCH_I386, T::L("i386"), T::Next);
        }
        a.ret(libc::SECCOMP_RET_KILL_PROCESS);
        a.label("native");
        a.ld(OFF_NR);
        if cfg!(target_arch = "x86_64") {
            a.jge(X32_SYSCALL_BIT, enosys, T::Next);
        }
        a.jeq(libc::SYS_io_uring_setup as u32, enosys, T::Next);
        for nr in [
            libc::SYS_bind,
            libc::SYS_listen,
            libc::SYS_connect,
            libc::SYS_accept,
            libc::SYS_accept4,
            libc::SYS_sendmsg,
            libc::SYS_sendmmsg,
        ] {
            a.jeq(nr as u32, notif, T::Next);
        }
        a.jeq(libc::SYS_sendto as u32, T::Next, allow);
        // sendto: held only with a destination address (args[4] != NULL).
        a.ld(off_arg_lo(4));
        a.jeq(0, T::Next, notif);
        a.ld(off_arg_hi(4));
        a.jeq(0, allow, notif);
        if cfg!(target_arch = "x86_64") {
            a.label("i386");
            a.ld(OFF_NR);
            // socketcall, bind, connect, listen, accept4, sendto, sendmsg, sendmmsg
            for nr in [102u32, 361, 362, 363, 364, 369, 370, 345] {
                a.jeq(nr, eperm, T::Next);
            }
            a.jeq(425, enosys, allow);
        }
        a.label("allow");
        a.ret(libc::SECCOMP_RET_ALLOW);
        a.label("notif");
        a.ret(libc::SECCOMP_RET_USER_NOTIF);
        a.label("enosys");
        a.ret(libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
        a.label("eperm");
        a.ret(libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
        a.finish()
    }

    /// Unsupported architecture.
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    pub fn program() -> io::Result<Program> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "supervise supports x86_64 and aarch64 only",
        ))
    }
}

/// Shared state of one supervision.
struct Core {
    listener: OwnedFd,
    decide: Box<DecideFn>,
    on_event: Option<Box<EventFn>>,
    /// (socket cookie, pid, destination) already allowed for sendto/sendmsg.
    sent: Mutex<HashSet<(u64, u32, Endpoint)>>,
    /// cgroup id -> cgroup path.
    cgroups: Mutex<HashMap<u64, String>>,
}

/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (Linux 6.6): the caller and the
/// supervisor hand the CPU to each other directly, which halves the latency.
const SYNC_WAKE_UP: u64 = 1;

fn notify_loop(core: &Arc<Core>) {
    let fd = core.listener.as_raw_fd();
    // SAFETY: the flags are passed by value; an older kernel says EINVAL.
    unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS, SYNC_WAKE_UP) };
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, -1) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if pfd.revents & libc::POLLIN == 0 {
            if pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                return;
            }
            continue;
        }
        // SAFETY: seccomp_notif is plain data; the kernel wants it zeroed.
        let mut notif: libc::seccomp_notif = unsafe { zeroed() };
        // SAFETY: valid pointer to a seccomp_notif for this ioctl.
        let r = unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut notif) };
        if r < 0 {
            continue; // ENOENT: the task went away; EINTR.
        }
        handle(core, &notif);
    }
}

type Errno = i32;
type SysResult = Result<i64, Errno>;

fn last_errno() -> Errno {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn cvt(r: libc::c_long) -> SysResult {
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(r)
    }
}

/// One held call.
struct Call {
    core: Arc<Core>,
    id: u64,
    tid: u32,
    args: [u64; 6],
    /// A pidfd of the calling thread (valid once checked with `valid()`).
    pidfd: Option<Arc<OwnedFd>>,
}

enum Answer {
    Result(SysResult),
    Continue,
    /// Already answered (e.g. by ADDFD with SEND), or handed to a worker.
    Done,
}

impl Call {
    fn clone_for_worker(&self) -> Call {
        Call {
            core: self.core.clone(),
            id: self.id,
            tid: self.tid,
            args: self.args,
            pidfd: self.pidfd.clone(),
        }
    }

    fn valid(&self) -> bool {
        // SAFETY: valid pointer to the u64 id.
        unsafe {
            libc::ioctl(
                self.core.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
                &self.id,
            ) == 0
        }
    }

    fn send(&self, answer: Answer) {
        let mut resp = libc::seccomp_notif_resp {
            id: self.id,
            val: 0,
            error: 0,
            flags: 0,
        };
        match answer {
            Answer::Done => return,
            Answer::Continue => resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
            Answer::Result(Ok(v)) => resp.val = v,
            Answer::Result(Err(e)) => resp.error = -e,
        }
        // SAFETY: valid pointer to a response; failure means the caller is gone.
        unsafe {
            libc::ioctl(
                self.core.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &resp,
            );
        }
    }

    fn read_mem(&self, addr: u64, len: usize) -> Result<Vec<u8>, Errno> {
        let mut buf = vec![0u8; len];
        if len == 0 {
            return Ok(buf);
        }
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: len,
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: len,
        };
        // SAFETY: local iovec points to our buffer of len bytes.
        let n = unsafe { libc::process_vm_readv(self.tid as i32, &local, 1, &remote, 1, 0) };
        if n < 0 {
            let e = last_errno();
            return Err(if e == libc::ESRCH {
                libc::ESRCH
            } else {
                libc::EFAULT
            });
        }
        if n as usize != len {
            return Err(libc::EFAULT);
        }
        Ok(buf)
    }

    fn write_mem(&self, addr: u64, data: &[u8]) -> Result<(), Errno> {
        if data.is_empty() {
            return Ok(());
        }
        let local = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: data.len(),
        };
        // SAFETY: local iovec points to data.
        let n = unsafe { libc::process_vm_writev(self.tid as i32, &local, 1, &remote, 1, 0) };
        if n < 0 || n as usize != data.len() {
            return Err(libc::EFAULT);
        }
        Ok(())
    }

    fn emit(&self, req: &Request, verdict: &Verdict, local: Option<Endpoint>) {
        let Some(f) = &self.core.on_event else {
            return;
        };
        let unspecified = match req.family {
            Family::Ipv4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::Ipv6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let netns = std::fs::metadata(format!("/proc/{}/ns/net", req.tid))
            .ok()
            .map(|m| m.ino());
        let ev = Event {
            kind: req.op.event_kind(),
            time: SystemTime::now(),
            verdict: verdict.action,
            rule: verdict.rule.clone(),
            owner: Some(req.owner()),
            proto: req.proto,
            family: req.family,
            local: local.or(req.local).unwrap_or(Endpoint::new(unspecified, 0)),
            remote: req.remote,
            socket: req.socket,
            existing: false,
            netns,
            details: Details {
                backlog: req.backlog,
                listener: req.listener,
                ..Default::default()
            },
        };
        f(&ev);
    }
}

/// A duplicate of the caller's socket and what it is.
struct Sock {
    fd: OwnedFd,
    family: Family,
    ty: libc::c_int,
}

impl Sock {
    fn proto(&self) -> Proto {
        match self.ty {
            libc::SOCK_STREAM | libc::SOCK_SEQPACKET => Proto::Tcp,
            _ => Proto::Udp,
        }
    }
    fn nonblocking(&self) -> bool {
        // SAFETY: plain fcntl on an owned fd.
        let fl = unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_GETFL) };
        fl >= 0 && fl & libc::O_NONBLOCK != 0
    }
    fn cookie(&self) -> u64 {
        cookie(self.fd.as_raw_fd())
    }
    fn local(&self) -> Option<Endpoint> {
        sockname(self.fd.as_raw_fd(), false)
    }
}

fn getsockopt_int(fd: RawFd, opt: libc::c_int) -> Result<libc::c_int, Errno> {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid pointers for an int option.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(v)
    }
}

fn cookie(fd: RawFd) -> u64 {
    let mut v: u64 = 0;
    let mut len = 8 as libc::socklen_t;
    // SAFETY: valid pointers for a u64 option.
    unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_COOKIE,
            (&mut v as *mut u64).cast(),
            &mut len,
        )
    };
    v
}

fn sockname(fd: RawFd, peer: bool) -> Option<Endpoint> {
    // SAFETY: sockaddr_storage is plain data.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = (&mut ss as *mut libc::sockaddr_storage).cast();
    // SAFETY: valid pointers to a sockaddr_storage and its length.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if r < 0 {
        return None;
    }
    // SAFETY: reading the initialized prefix of ss as bytes.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&ss as *const libc::sockaddr_storage).cast::<u8>(),
            len as usize,
        )
    };
    match parse_sockaddr(bytes) {
        Addr::Ep(e) => Some(e),
        _ => None,
    }
}

enum Addr {
    Ep(Endpoint),
    Unspec,
    Bad(Errno),
}

/// Parses a socket address as the kernel would read it: AF_INET needs 16
/// bytes, AF_INET6 24.
fn parse_sockaddr(b: &[u8]) -> Addr {
    if b.len() < 2 {
        return Addr::Bad(libc::EINVAL);
    }
    let fam = u16::from_ne_bytes([b[0], b[1]]) as libc::c_int;
    match fam {
        libc::AF_INET => {
            if b.len() < 16 {
                return Addr::Bad(libc::EINVAL);
            }
            Addr::Ep(sin(b))
        }
        libc::AF_INET6 => {
            if b.len() < 24 {
                return Addr::Bad(libc::EINVAL);
            }
            let port = u16::from_be_bytes([b[2], b[3]]);
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[8..24]);
            Addr::Ep(Endpoint::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        libc::AF_UNSPEC => Addr::Unspec,
        _ => Addr::Bad(libc::EAFNOSUPPORT),
    }
}

fn sin(b: &[u8]) -> Endpoint {
    let port = u16::from_be_bytes([b[2], b[3]]);
    Endpoint::new(IpAddr::V4(Ipv4Addr::new(b[4], b[5], b[6], b[7])), port)
}

/// The endpoint a call on `sock` with address bytes `b` goes to, as the
/// kernel reads them: AF_UNSPEC means "AF_INET" to IPv4 bind and sendto, and
/// "no address" (connect: disconnect) otherwise.
fn target(sock: &Sock, b: &[u8], op: Syscall) -> Addr {
    match parse_sockaddr(b) {
        Addr::Unspec if sock.family == Family::Ipv4 && op != Syscall::Connect => {
            if b.len() < 16 {
                Addr::Bad(libc::EINVAL)
            } else {
                Addr::Ep(sin(b))
            }
        }
        other => other,
    }
}

/// `struct pidfd_info` (Linux 6.13), version 0.
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    exit_code: i32,
}

/// `_IOWR(PIDFS_IOCTL_MAGIC, 11, struct pidfd_info)`.
const PIDFD_GET_INFO: libc::c_ulong = (3 << 30) | (64 << 16) | (0xFF << 8) | 11;
const PIDFD_INFO_PID: u64 = 1;
const PIDFD_INFO_CREDS: u64 = 2;
const PIDFD_INFO_CGROUPID: u64 = 4;

fn pidfd_info(pidfd: &OwnedFd) -> Option<PidfdInfo> {
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_PID | PIDFD_INFO_CREDS | PIDFD_INFO_CGROUPID,
        ..Default::default()
    };
    // SAFETY: valid pointer to a pidfd_info of the size encoded in the request.
    let r = unsafe { libc::ioctl(pidfd.as_raw_fd(), PIDFD_GET_INFO, &mut info) };
    if r < 0 || info.mask & (PIDFD_INFO_PID | PIDFD_INFO_CREDS) != PIDFD_INFO_PID | PIDFD_INFO_CREDS
    {
        return None;
    }
    Some(info)
}

/// Thread-group id and real uid from /proc/TID/status.
fn proc_status(tid: u32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u32>().ok())
    };
    (
        field("Tgid:").unwrap_or(tid),
        field("Uid:").unwrap_or(u32::MAX),
    )
}

fn proc_cgroup(tid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{tid}/cgroup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        })
}

impl Call {
    /// Thread-group id, real uid and cgroup id (0 when unknown) of the
    /// caller: from its pidfd (Linux 6.13), else from /proc.
    fn who_ids(&self) -> (u32, u32, u64) {
        if let Some(info) = self.pidfd.as_deref().and_then(pidfd_info) {
            let cg = if info.mask & PIDFD_INFO_CGROUPID != 0 {
                info.cgroupid
            } else {
                0
            };
            return (info.tgid, info.ruid, cg);
        }
        let (pid, uid) = proc_status(self.tid);
        (pid, uid, 0)
    }

    /// Who the caller is: pid, uid, comm, exe, cgroup.
    fn who(&self) -> (u32, u32, String, Option<String>, Option<String>) {
        let tid = self.tid;
        let (pid, uid, cgid) = self.who_ids();
        let comm = std::fs::read_to_string(format!("/proc/{tid}/comm"))
            .map(|s| s.trim_end_matches('\n').to_string())
            .unwrap_or_default();
        let exe = std::fs::read_link(format!("/proc/{tid}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        let cgroup = if cgid == 0 {
            proc_cgroup(tid)
        } else {
            let cached = self.core.cgroups.lock().unwrap().get(&cgid).cloned();
            match cached {
                Some(path) => Some(path),
                None => {
                    let path = proc_cgroup(tid);
                    if let Some(p) = &path {
                        let mut map = self.core.cgroups.lock().unwrap();
                        if map.len() > 4096 {
                            map.clear();
                        }
                        map.insert(cgid, p.clone());
                    }
                    path
                }
            }
        };
        (pid, uid, comm, exe, cgroup)
    }
}

fn syscall_of(nr: i32) -> Option<Syscall> {
    Some(match nr as libc::c_long {
        libc::SYS_bind => Syscall::Bind,
        libc::SYS_listen => Syscall::Listen,
        libc::SYS_connect => Syscall::Connect,
        libc::SYS_accept => Syscall::Accept,
        libc::SYS_accept4 => Syscall::Accept4,
        libc::SYS_sendto => Syscall::Sendto,
        libc::SYS_sendmsg => Syscall::Sendmsg,
        libc::SYS_sendmmsg => Syscall::Sendmmsg,
        _ => return None,
    })
}

fn handle(core: &Arc<Core>, notif: &libc::seccomp_notif) {
    let mut call = Call {
        core: core.clone(),
        id: notif.id,
        tid: notif.pid,
        args: notif.data.args,
        pidfd: None,
    };
    let answer = match syscall_of(notif.data.nr) {
        Some(sc) => match open_pidfd(call.tid) {
            Ok(fd) => {
                call.pidfd = Some(Arc::new(fd));
                serve(&call, sc)
            }
            Err(e) => Answer::Result(Err(e)),
        },
        None => Answer::Result(Err(libc::ENOSYS)),
    };
    call.send(answer);
}

fn open_pidfd(tid: u32) -> Result<OwnedFd, Errno> {
    match pidfd_open(tid as i32, PIDFD_THREAD) {
        Ok(fd) => Ok(fd),
        // Before Linux 6.9: only thread-group leaders have pidfds.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let pid = proc_status(tid).0;
            pidfd_open(pid as i32, 0).map_err(|e| e.raw_os_error().unwrap_or(libc::ESRCH))
        }
        Err(e) => Err(e.raw_os_error().unwrap_or(libc::ESRCH)),
    }
}

/// Takes the caller's socket; None when the call carries no decision.
fn take_socket(call: &Call) -> Result<Option<Sock>, Errno> {
    let pidfd = call.pidfd.as_ref().ok_or(libc::ESRCH)?;
    // The pidfd names the caller only if the notification is still pending.
    if !call.valid() {
        return Err(libc::ESRCH);
    }
    let fd = pidfd_getfd(pidfd, call.args[0] as i32).map_err(|e| match e.raw_os_error() {
        Some(libc::EBADF) => libc::EBADF,
        Some(e) => e,
        None => libc::EPERM,
    })?;
    let domain = getsockopt_int(fd.as_raw_fd(), SO_DOMAIN)?;
    let family = match domain {
        libc::AF_INET => Family::Ipv4,
        libc::AF_INET6 => Family::Ipv6,
        _ => return Ok(None),
    };
    let ty = getsockopt_int(fd.as_raw_fd(), libc::SO_TYPE)?;
    let _ = getsockopt_int(fd.as_raw_fd(), SO_PROTOCOL);
    Ok(Some(Sock { fd, family, ty }))
}

fn serve(call: &Call, sc: Syscall) -> Answer {
    let sock = match take_socket(call) {
        Ok(Some(s)) => s,
        Ok(None) => return Answer::Continue,
        Err(e) => return Answer::Result(Err(e)),
    };
    match sc {
        Syscall::Bind => Answer::Result(do_bind(call, &sock)),
        Syscall::Listen => Answer::Result(do_listen(call, &sock)),
        Syscall::Connect => do_connect(call, sock),
        Syscall::Accept | Syscall::Accept4 => do_accept(call, sock, sc),
        Syscall::Sendto | Syscall::Sendmsg | Syscall::Sendmmsg => do_send(call, sock, sc),
    }
}

impl Call {
    fn request(
        &self,
        sock: &Sock,
        op: Operation,
        syscall: Syscall,
        local: Option<Endpoint>,
        remote: Option<Endpoint>,
    ) -> Request {
        let (pid, uid, comm, exe, cgroup) = self.who();
        Request {
            pid,
            tid: self.tid,
            uid,
            comm,
            exe,
            cgroup,
            op,
            syscall,
            proto: sock.proto(),
            family: sock.family,
            local,
            remote,
            socket: sock.cookie(),
            backlog: None,
            listener: None,
        }
    }

    /// Asks the callback, after checking the caller still waits (so /proc
    /// data read for the request was the caller's).
    fn decide(&self, req: &Request) -> Option<Verdict> {
        if !self.valid() {
            return None;
        }
        Some((self.core.decide)(req))
    }

    fn read_addr(&self, ptr: u64, len: u64) -> Result<Vec<u8>, Errno> {
        if len > size_of::<libc::sockaddr_storage>() as u64 {
            return Err(libc::EINVAL);
        }
        self.read_mem(ptr, len as usize)
    }
}

fn sockaddr_ptr(b: &[u8]) -> *const libc::sockaddr {
    b.as_ptr().cast()
}

fn do_bind(call: &Call, sock: &Sock) -> SysResult {
    let bytes = call.read_addr(call.args[1], call.args[2] as u32 as u64)?;
    let ep = match target(sock, &bytes, Syscall::Bind) {
        Addr::Ep(e) => e,
        Addr::Unspec => return Err(libc::EAFNOSUPPORT),
        Addr::Bad(e) => return Err(e),
    };
    let req = call.request(sock, Operation::Bind, Syscall::Bind, Some(ep), None);
    let verdict = call.decide(&req).ok_or(libc::ESRCH)?;
    if !verdict.allows() {
        call.emit(&req, &verdict, None);
        return Err(libc::EPERM);
    }
    // SAFETY: bytes holds the address copy of len bytes.
    let r = cvt(unsafe {
        libc::bind(
            sock.fd.as_raw_fd(),
            sockaddr_ptr(&bytes),
            bytes.len() as libc::socklen_t,
        )
    } as libc::c_long);
    call.emit(&req, &verdict, if r.is_ok() { sock.local() } else { None });
    r
}

fn do_listen(call: &Call, sock: &Sock) -> SysResult {
    let backlog = call.args[1] as i32;
    let mut req = call.request(sock, Operation::Listen, Syscall::Listen, sock.local(), None);
    req.backlog = Some(backlog.max(0) as u32);
    let verdict = call.decide(&req).ok_or(libc::ESRCH)?;
    if !verdict.allows() {
        call.emit(&req, &verdict, None);
        return Err(libc::EPERM);
    }
    // SAFETY: plain system call on an owned fd.
    let r = cvt(unsafe { libc::listen(sock.fd.as_raw_fd(), backlog) } as libc::c_long);
    call.emit(&req, &verdict, sock.local());
    r
}

fn do_connect(call: &Call, sock: Sock) -> Answer {
    let bytes = match call.read_addr(call.args[1], call.args[2] as u32 as u64) {
        Ok(b) => b,
        Err(e) => return Answer::Result(Err(e)),
    };
    let perform = |sock: &Sock| {
        // SAFETY: bytes holds the address copy.
        cvt(unsafe {
            libc::connect(
                sock.fd.as_raw_fd(),
                sockaddr_ptr(&bytes),
                bytes.len() as libc::socklen_t,
            )
        } as libc::c_long)
    };
    let ep = match target(&sock, &bytes, Syscall::Connect) {
        Addr::Ep(e) => e,
        // Disconnect: no destination, nothing to decide.
        Addr::Unspec => return Answer::Result(perform(&sock)),
        Addr::Bad(e) => return Answer::Result(Err(e)),
    };
    let req = call.request(
        &sock,
        Operation::Connect,
        Syscall::Connect,
        sock.local(),
        Some(ep),
    );
    let Some(verdict) = call.decide(&req) else {
        return Answer::Result(Err(libc::ESRCH));
    };
    if !verdict.allows() {
        call.emit(&req, &verdict, None);
        return Answer::Result(Err(libc::EPERM));
    }
    if sock.nonblocking() {
        let r = perform(&sock);
        call.emit(&req, &verdict, sock.local());
        return Answer::Result(r);
    }
    // A blocking connect may take long: serve it on its own thread.
    let worker = call.clone_for_worker();
    std::thread::spawn(move || {
        let r = {
            // SAFETY: bytes holds the address copy.
            cvt(unsafe {
                libc::connect(
                    sock.fd.as_raw_fd(),
                    sockaddr_ptr(&bytes),
                    bytes.len() as libc::socklen_t,
                )
            } as libc::c_long)
        };
        worker.emit(&req, &verdict, sock.local());
        worker.send(Answer::Result(r));
    });
    Answer::Done
}

fn do_accept(call: &Call, sock: Sock, sc: Syscall) -> Answer {
    let flags = if sc == Syscall::Accept4 {
        call.args[3] as i32
    } else {
        0
    };
    if flags & !(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) != 0 {
        return Answer::Result(Err(libc::EINVAL));
    }
    if sock.nonblocking() {
        return accept_once(call, &sock, sc, flags);
    }
    let worker = call.clone_for_worker();
    std::thread::spawn(move || loop {
        let mut pfd = libc::pollfd {
            fd: sock.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 200) };
        if !worker.valid() {
            return; // the caller was interrupted or died
        }
        if n > 0 {
            let answer = accept_once(&worker, &sock, sc, flags);
            worker.send(answer);
            return;
        }
    });
    Answer::Done
}

fn accept_once(call: &Call, sock: &Sock, sc: Syscall, flags: i32) -> Answer {
    // SAFETY: sockaddr_storage is plain data.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: valid pointers to ss and len.
    let nfd = unsafe {
        libc::accept4(
            sock.fd.as_raw_fd(),
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_CLOEXEC,
        )
    };
    if nfd < 0 {
        return Answer::Result(Err(last_errno()));
    }
    // SAFETY: a new fd owned by nobody else.
    let conn = unsafe { OwnedFd::from_raw_fd(nfd) };
    // SAFETY: the first len bytes of ss were written by the kernel.
    let peer_bytes = unsafe {
        std::slice::from_raw_parts(
            (&ss as *const libc::sockaddr_storage).cast::<u8>(),
            len as usize,
        )
    }
    .to_vec();
    let remote = match parse_sockaddr(&peer_bytes) {
        Addr::Ep(e) => Some(e),
        _ => None,
    };
    let connsock = Sock {
        fd: conn,
        family: sock.family,
        ty: sock.ty,
    };
    let mut req = call.request(&connsock, Operation::Accept, sc, connsock.local(), remote);
    req.listener = Some(sock.cookie());
    let Some(verdict) = call.decide(&req) else {
        return Answer::Result(Err(libc::ESRCH));
    };
    call.emit(&req, &verdict, None);
    if !verdict.allows() {
        // The connection is closed (the peer sees a reset or EOF).
        return Answer::Result(Err(libc::ECONNABORTED));
    }
    let cfd = connsock.fd.as_raw_fd();
    if flags & libc::SOCK_NONBLOCK != 0 {
        // SAFETY: fcntl on an owned fd.
        unsafe {
            let fl = libc::fcntl(cfd, libc::F_GETFL);
            libc::fcntl(cfd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
    let (addr, addrlen) = (call.args[1], call.args[2]);
    if addr != 0 && addrlen != 0 {
        let r = call.read_mem(addrlen, 4).and_then(|b| {
            let want = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            if want < 0 {
                return Err(libc::EINVAL);
            }
            let n = (want as usize).min(peer_bytes.len());
            call.write_mem(addr, &peer_bytes[..n])?;
            call.write_mem(addrlen, &(peer_bytes.len() as i32).to_ne_bytes())
        });
        if let Err(e) = r {
            return Answer::Result(Err(e));
        }
    }
    let add = libc::seccomp_notif_addfd {
        id: call.id,
        flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
        srcfd: cfd as u32,
        newfd: 0,
        newfd_flags: if flags & libc::SOCK_CLOEXEC != 0 {
            libc::O_CLOEXEC as u32
        } else {
            0
        },
    };
    // SAFETY: valid pointer to the addfd request.
    let r = unsafe {
        libc::ioctl(
            call.core.listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ADDFD,
            &add,
        )
    };
    if r < 0 {
        return Answer::Result(Err(last_errno()));
    }
    Answer::Done
}

/// Largest payload copied for one emulated send.
const MAX_PAYLOAD: usize = 1 << 20;
/// The kernel's UIO_MAXIOV.
const MAX_IOV: usize = 1024;

/// One message to send, copied out of the caller.
struct Msg {
    name: Option<Vec<u8>>,
    data: Vec<u8>,
    control: Vec<u8>,
    ep: Option<Endpoint>,
}

fn read_msghdr(call: &Call, sock: &Sock, ptr: u64, sc: Syscall) -> Result<Msg, Errno> {
    let raw = call.read_mem(ptr, size_of::<libc::msghdr>())?;
    // SAFETY: msghdr is plain data and raw has its size.
    let h: libc::msghdr = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
    let name = if h.msg_name.is_null() {
        None
    } else {
        Some(call.read_addr(h.msg_name as u64, h.msg_namelen as u64)?)
    };
    let ep = match &name {
        None => None,
        Some(b) => match target(sock, b, sc) {
            Addr::Ep(e) => Some(e),
            Addr::Unspec => None,
            Addr::Bad(e) => return Err(e),
        },
    };
    let iovlen = h.msg_iovlen as usize;
    if iovlen > MAX_IOV {
        return Err(libc::EMSGSIZE);
    }
    let mut data = Vec::new();
    if iovlen > 0 {
        let iovs = call.read_mem(h.msg_iov as u64, iovlen * size_of::<libc::iovec>())?;
        for i in 0..iovlen {
            // SAFETY: iovec is plain data; the offset is within iovs.
            let v: libc::iovec = unsafe {
                std::ptr::read_unaligned(iovs.as_ptr().add(i * size_of::<libc::iovec>()).cast())
            };
            let take = v.iov_len.min(MAX_PAYLOAD - data.len());
            data.extend(call.read_mem(v.iov_base as u64, take)?);
        }
    }
    if h.msg_controllen > 65536 {
        return Err(libc::ENOBUFS);
    }
    let control = if h.msg_control.is_null() {
        Vec::new()
    } else {
        call.read_mem(h.msg_control as u64, h.msg_controllen)?
    };
    Ok(Msg {
        name,
        data,
        control,
        ep,
    })
}

fn send_msg(fd: RawFd, m: &Msg, flags: i32) -> SysResult {
    let mut iov = libc::iovec {
        iov_base: m.data.as_ptr() as *mut libc::c_void,
        iov_len: m.data.len(),
    };
    // SAFETY: msghdr is plain data.
    let mut h: libc::msghdr = unsafe { zeroed() };
    if let Some(n) = &m.name {
        h.msg_name = n.as_ptr() as *mut libc::c_void;
        h.msg_namelen = n.len() as u32;
    }
    h.msg_iov = &mut iov;
    h.msg_iovlen = 1;
    if !m.control.is_empty() {
        h.msg_control = m.control.as_ptr() as *mut libc::c_void;
        h.msg_controllen = m.control.len();
    }
    // SAFETY: every pointer in h refers to live buffers of m.
    cvt(unsafe { libc::sendmsg(fd, &h, flags) } as libc::c_long)
}

fn do_send(call: &Call, sock: Sock, sc: Syscall) -> Answer {
    let flags = match sc {
        Syscall::Sendto => call.args[3] as i32,
        Syscall::Sendmsg => call.args[2] as i32,
        _ => call.args[3] as i32,
    };
    // A stream socket ignores the destination unless it is a fast-open
    // connect: nothing to decide, and no pointer the kernel would use for one.
    if sock.ty == libc::SOCK_STREAM && flags & libc::MSG_FASTOPEN == 0 {
        return Answer::Continue;
    }
    let msgs: Result<Vec<Msg>, Errno> = match sc {
        Syscall::Sendto => (|| {
            let name = call.read_addr(call.args[4], call.args[5] as u32 as u64)?;
            let ep = match target(&sock, &name, sc) {
                Addr::Ep(e) => Some(e),
                Addr::Unspec => None,
                Addr::Bad(e) => return Err(e),
            };
            let len = (call.args[2] as usize).min(MAX_PAYLOAD);
            let data = call.read_mem(call.args[1], len)?;
            Ok(vec![Msg {
                name: Some(name),
                data,
                control: Vec::new(),
                ep,
            }])
        })(),
        Syscall::Sendmsg => read_msghdr(call, &sock, call.args[1], sc).map(|m| vec![m]),
        _ => (|| {
            let vlen = (call.args[2] as u32 as usize).min(MAX_IOV);
            let stride = size_of::<libc::mmsghdr>();
            let mut v = Vec::with_capacity(vlen);
            for i in 0..vlen {
                v.push(read_msghdr(
                    call,
                    &sock,
                    call.args[1] + (i * stride) as u64,
                    sc,
                )?);
            }
            Ok(v)
        })(),
    };
    let msgs = match msgs {
        Ok(m) => m,
        Err(e) => return Answer::Result(Err(e)),
    };
    // Decide every destination not already allowed for this socket.
    let cookie = sock.cookie();
    let mut pid = None;
    for m in &msgs {
        let Some(ep) = m.ep else { continue };
        let pid_now = *pid.get_or_insert_with(|| call.who_ids().0);
        let key = (cookie, pid_now, ep);
        if call.core.sent.lock().unwrap().contains(&key) {
            continue;
        }
        let req = call.request(&sock, Operation::Connect, sc, sock.local(), Some(ep));
        let Some(verdict) = call.decide(&req) else {
            return Answer::Result(Err(libc::ESRCH));
        };
        call.emit(&req, &verdict, None);
        if !verdict.allows() {
            return Answer::Result(Err(libc::EPERM));
        }
        let mut sent = call.core.sent.lock().unwrap();
        if sent.len() > 65536 {
            sent.clear();
        }
        sent.insert(key);
    }
    let blocking = !sock.nonblocking() && flags & libc::MSG_DONTWAIT == 0;
    if !blocking {
        return Answer::Result(send_all(call, &sock, &msgs, sc, flags));
    }
    match send_all(call, &sock, &msgs, sc, flags | libc::MSG_DONTWAIT) {
        Err(libc::EAGAIN) => {}
        r => return Answer::Result(r),
    }
    // The send would block: finish it on its own thread.
    let worker = call.clone_for_worker();
    std::thread::spawn(move || {
        let r = send_all(&worker, &sock, &msgs, sc, flags);
        worker.send(Answer::Result(r));
    });
    Answer::Done
}

fn send_all(call: &Call, sock: &Sock, msgs: &[Msg], sc: Syscall, flags: i32) -> SysResult {
    let fd = sock.fd.as_raw_fd();
    if sc != Syscall::Sendmmsg {
        return send_msg(fd, &msgs[0], flags);
    }
    let mut done = 0usize;
    for (i, m) in msgs.iter().enumerate() {
        match send_msg(fd, m, flags) {
            Ok(n) => {
                let at = call.args[1] + (i * size_of::<libc::mmsghdr>()) as u64;
                let off = std::mem::offset_of!(libc::mmsghdr, msg_len) as u64;
                let _ = call.write_mem(at + off, &(n as u32).to_ne_bytes());
                done += 1;
            }
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(done as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_assembles() {
        let p = filter::program().unwrap();
        assert!(p.fprog().len > 10);
    }

    #[test]
    fn sockaddr_parsing() {
        let mut b = vec![0u8; 16];
        b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&8080u16.to_be_bytes());
        b[4..8].copy_from_slice(&[127, 0, 0, 1]);
        match parse_sockaddr(&b) {
            Addr::Ep(e) => assert_eq!(e.to_string(), "127.0.0.1:8080"),
            _ => panic!("not parsed"),
        }
        assert!(matches!(parse_sockaddr(&b[..8]), Addr::Bad(libc::EINVAL)));
        b[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert!(matches!(parse_sockaddr(&b), Addr::Bad(libc::EAFNOSUPPORT)));
    }
}
