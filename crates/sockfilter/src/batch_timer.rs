//! A one-shot sleep with microsecond resolution for the watch consumer's
//! batching (`watch.rs`). tokio's timer wheel rounds every sleep up to whole
//! milliseconds, which made a "short" batching wait 1–2 ms; a timerfd in the
//! same epoll set wakes the runtime when it is due.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// A monotonic timerfd registered with the tokio reactor.
pub(crate) struct BatchTimer {
    fd: AsyncFd<OwnedFd>,
}

impl BatchTimer {
    /// Creates the timer (must run inside a tokio runtime).
    pub(crate) fn new() -> io::Result<BatchTimer> {
        // SAFETY: plain system call; the result is checked.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(BatchTimer {
            // SAFETY: the AsyncFd owns the descriptor, which stays open and
            // unchanged for as long as it is registered.
            fd: unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)? },
        })
    }

    /// Sleeps for `d` (at least 1 ns).
    pub(crate) async fn sleep(&mut self, d: Duration) -> io::Result<()> {
        let nanos = d.as_nanos().max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (nanos / 1_000_000_000) as libc::time_t,
                tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: valid descriptor and itimerspec; the old value is not asked for.
        if unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0
        {
            return Err(io::Error::last_os_error());
        }
        loop {
            let mut guard = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            // SAFETY: reads 8 bytes into a buffer of 8 bytes.
            let n = unsafe {
                libc::read(
                    self.fd.get_ref().as_raw_fd(),
                    expirations.as_mut_ptr().cast(),
                    expirations.len(),
                )
            };
            if n == 8 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock {
                return Err(err);
            }
            guard.clear_ready();
        }
    }
}
