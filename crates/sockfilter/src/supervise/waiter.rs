//! One thread that waits, for every held blocking `accept` at once, until
//! its listener has a connection.
//!
//! A server may keep any number of threads in `accept()`; a thread (or a
//! worker) per waiting call would let the program make the supervisor
//! start as many threads as it likes, or, with a bounded pool, stall every
//! other call behind the waiting ones. Waiting costs one `poll` entry here
//! instead; the accept itself, which returns at once, goes to a worker.

use super::call::Call;
use super::socket::Sock;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often waiting calls are checked for still being pending (a caller
/// interrupted by a signal, or gone, leaves no wake-up on the listener).
const CHECK: Duration = Duration::from_millis(200);
/// How long the thread stays without anything to wait for before it ends.
const IDLE: Duration = Duration::from_secs(5);

type Ready = Box<dyn FnOnce(Call, Sock) + Send>;

struct Waiting {
    call: Call,
    sock: Sock,
    ready: Ready,
}

#[derive(Default)]
struct State {
    waiting: Vec<Waiting>,
    running: bool,
}

/// The waiting calls and the thread that polls their listeners.
pub(super) struct Waiter {
    state: Mutex<State>,
    /// Wakes the thread for a new waiting call (an eventfd).
    wake: OwnedFd,
}

impl Waiter {
    /// A waiter whose thread starts with the first waiting call.
    pub(super) fn new() -> std::io::Result<Waiter> {
        Ok(Waiter {
            state: Mutex::default(),
            wake: super::notify::eventfd()?,
        })
    }

    /// Calls `ready(call, sock)` once `sock` is readable, on this waiter's
    /// thread; drops the call when it stops being pending first.
    pub(super) fn wait_readable(
        self: &Arc<Self>,
        call: Call,
        sock: Sock,
        ready: impl FnOnce(Call, Sock) + Send + 'static,
    ) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.waiting.push(Waiting {
            call,
            sock,
            ready: Box::new(ready),
        });
        if !st.running {
            let me = self.clone();
            let started = std::thread::Builder::new()
                .name("sockfilter-wait".into())
                .spawn(move || me.run());
            st.running = started.is_ok();
        }
        drop(st);
        let one = 1u64;
        // SAFETY: writing 8 bytes from a valid u64 to an eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn run(self: Arc<Self>) {
        let mut idle_since = Instant::now();
        loop {
            let mut pfds: Vec<libc::pollfd> = {
                let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if st.waiting.is_empty() && idle_since.elapsed() >= IDLE {
                    st.running = false;
                    return;
                }
                st.waiting
                    .iter()
                    .map(|w| libc::pollfd {
                        fd: w.sock.fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect()
            };
            pfds.push(libc::pollfd {
                fd: self.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            // SAFETY: pfds is a valid array of pollfds.
            unsafe {
                libc::poll(
                    pfds.as_mut_ptr(),
                    pfds.len() as libc::nfds_t,
                    CHECK.as_millis() as i32,
                )
            };
            let mut n = 0u64;
            // SAFETY: reading 8 bytes into a valid u64 from a non-blocking eventfd.
            unsafe { libc::read(self.wake.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
            // Calls registered after the snapshot keep their place at the end.
            let polled = pfds.len() - 1;
            let (ready, gone) = {
                let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let mut ready = Vec::new();
                let mut gone = Vec::new();
                for i in (0..polled).rev() {
                    if pfds[i].revents != 0 {
                        ready.push(st.waiting.remove(i));
                    } else if !st.waiting[i].call.valid() {
                        gone.push(st.waiting.remove(i));
                    }
                }
                if !st.waiting.is_empty() {
                    idle_since = Instant::now();
                }
                (ready, gone)
            };
            drop(gone); // interrupted or dead callers: nothing to answer
            for w in ready {
                (w.ready)(w.call, w.sock);
            }
        }
    }
}
