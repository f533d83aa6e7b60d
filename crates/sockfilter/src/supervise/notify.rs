//! The notification loop: receives each held call and dispatches it to
//! the emulation of its system call family.

use super::accept::do_accept;
use super::bind_listen::{do_bind, do_listen};
use super::call::{Answer, Call};
use super::caller::open_pidfd;
use super::connect_send::{do_connect, do_send};
use super::credentials::Creds;
use super::request::{Operation, Syscall, Verdict};
use super::socket::take_socket;
use super::socket::Sock;
use super::supervisor::{DecideFn, EventFn};
use super::waiter::Waiter;
use super::workers::Workers;
use sockfilter_model::event::Endpoint;
use std::collections::{HashMap, HashSet};
use std::io;
use std::mem::zeroed;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

/// Shared state of one supervision.
pub(super) struct Core {
    pub(super) listener: OwnedFd,
    pub(super) decide: Box<DecideFn>,
    pub(super) on_event: Option<Box<EventFn>>,
    /// (socket cookie, pid, destination) already allowed for sendto/sendmsg.
    pub(super) sent: Mutex<HashSet<(u64, u32, Endpoint)>>,
    /// cgroup id -> cgroup path.
    pub(super) cgroups: Mutex<HashMap<u64, String>>,
    /// The supervisor's own credentials: calls made with exactly these are
    /// performed without a worker.
    pub(super) own_creds: Option<Creds>,
    /// The threads that perform calls with the callers' credentials.
    pub(super) workers: Arc<Workers>,
    /// Work the notification loop finishes for the workers (reporting,
    /// writing results into the caller, answering).
    pub(super) completions: Mutex<Vec<Completion>>,
    /// An eventfd that wakes the notification loop for `completions`.
    pub(super) wake: OwnedFd,
    /// Bytes copied out of callers for sends not yet performed.
    pub(super) in_flight: std::sync::atomic::AtomicUsize,
    /// Where held blocking `accept` calls wait for a connection.
    pub(super) waiter: Arc<Waiter>,
}

/// The end of a call that a worker performed, run on the notification loop.
pub(super) type Completion = Box<dyn FnOnce() + Send>;

impl Core {
    /// Queues `c` for the notification loop.
    pub(super) fn complete(&self, c: Completion) {
        self.completions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(c);
        let one = 1u64;
        // SAFETY: writing 8 bytes from a valid u64 to an eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn run_completions(&self) {
        let mut n = 0u64;
        // SAFETY: reading 8 bytes into a valid u64 from a non-blocking eventfd.
        unsafe { libc::read(self.wake.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
        let done = std::mem::take(&mut *self.completions.lock().unwrap_or_else(|e| e.into_inner()));
        for c in done {
            c();
        }
    }
}

/// An eventfd for `Core::wake`.
pub(super) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain system call.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd owned by nobody else.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (Linux 6.6): the caller and the
/// supervisor hand the CPU to each other directly, which halves the latency.
pub(super) const SYNC_WAKE_UP: u64 = 1;

pub(super) fn notify_loop(core: &Arc<Core>) {
    let fd = core.listener.as_raw_fd();
    // SAFETY: the flags are passed by value; an older kernel says EINVAL.
    unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS, SYNC_WAKE_UP) };
    loop {
        let mut pfds = [
            libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: core.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if pfds[1].revents & libc::POLLIN != 0 {
            core.run_completions();
        }
        let pfd = pfds[0];
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

pub(super) fn syscall_of(nr: i32) -> Option<Syscall> {
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

pub(super) fn handle(core: &Arc<Core>, notif: &libc::seccomp_notif) {
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
                serve(call.clone(), sc)
            }
            Err(e) => Answer::Result(Err(e)),
        },
        None => Answer::Result(Err(libc::ENOSYS)),
    };
    call.send(answer);
}

pub(super) fn serve(call: Call, sc: Syscall) -> Answer {
    let sock = match take_socket(&call) {
        Ok(Some(s)) => s,
        // A fast-open send continued on a non-IP socket would make a TCP
        // connect if a dup2() race put a TCP socket there meanwhile, and
        // Landlock does not check fast-open connects: refused (the flag
        // means nothing to other families).
        Ok(None) if fast_open(&call, sc) => return Answer::Result(Err(libc::EPERM)),
        Ok(None) => return Answer::Continue,
        Err(e) => return Answer::Result(Err(e)),
    };
    if !sock.decidable() {
        return refuse_undecidable(&call, &sock, sc);
    }
    match sc {
        Syscall::Bind => do_bind(call, sock),
        Syscall::Listen => do_listen(call, sock),
        Syscall::Connect => do_connect(call, sock),
        Syscall::Accept | Syscall::Accept4 => do_accept(call, sock, sc),
        Syscall::Sendto | Syscall::Sendmsg | Syscall::Sendmmsg => do_send(call, sock, sc),
    }
}

/// Name of the (built-in) rule reported for calls on IP sockets whose
/// protocol a policy cannot decide about.
pub(super) const UNSUPPORTED_PROTOCOL: &str = "sockfilter:unsupported-protocol";

/// A call on an IP socket of a protocol other than TCP, MPTCP, UDP or
/// UDP-Lite fails with `EPERM`, reported as denied by
/// [`UNSUPPORTED_PROTOCOL`]: a policy has no words for it, so allowing it
/// would let it past every rule.
fn refuse_undecidable(call: &Call, sock: &Sock, sc: Syscall) -> Answer {
    let op = match sc {
        Syscall::Bind => Operation::Bind,
        Syscall::Listen => Operation::Listen,
        Syscall::Accept | Syscall::Accept4 => Operation::Accept,
        _ => Operation::Connect,
    };
    let req = call.request(sock, op, sc, sock.local(), None);
    call.emit(&req, &Verdict::deny().with_rule(UNSUPPORTED_PROTOCOL), None);
    Answer::Result(Err(libc::EPERM))
}

/// Whether the call is a send with `MSG_FASTOPEN`.
fn fast_open(call: &Call, sc: Syscall) -> bool {
    let flags = match sc {
        Syscall::Sendto | Syscall::Sendmmsg => call.args[3],
        Syscall::Sendmsg => call.args[2],
        _ => return false,
    };
    flags as i32 & libc::MSG_FASTOPEN != 0
}
