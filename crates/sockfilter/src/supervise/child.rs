//! Installing the filter: what runs in the child between `fork` and
//! `exec`, and how the parent takes the child's listener.

use super::filter;
use super::sys::{pidfd_getfd, pidfd_open};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// In the child between fork and exec: install the Landlock TCP backstop
/// and the filter, report `[pid, listener fd, Landlock errno]` and wait
/// until the parent has taken the listener.
pub(super) fn child_setup(prog: &filter::Program, fds: [RawFd; 4]) -> io::Result<()> {
    let [report, ack, parent_report, parent_ack] = fds;
    // SAFETY: async-signal-safe system calls on memory valid for the call.
    unsafe {
        // The parent's ends: without them here, the parent going away is seen.
        libc::close(parent_report);
        libc::close(parent_ack);
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        let landlock = super::landlock::restrict_tcp();
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
        let msg: [i32; 3] = [libc::getpid(), fd as i32, landlock];
        if libc::write(report, msg.as_ptr().cast(), 12) != 12 {
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

/// What the child reports: its listener, taken with `pidfd_getfd`, and
/// why the Landlock TCP backstop is missing (0: it is in place).
pub(super) struct Installed {
    pub(super) listener: OwnedFd,
    pub(super) landlock_errno: i32,
}

/// In the parent: take the child's listener with pidfd_getfd and let it exec.
pub(super) fn fetch_listener(report: OwnedFd, ack: OwnedFd) -> io::Result<Option<Installed>> {
    let mut buf = [0u8; 12];
    let mut got = 0;
    while got < 12 {
        // SAFETY: reading into a valid buffer.
        let n = unsafe { libc::read(report.as_raw_fd(), buf[got..].as_mut_ptr().cast(), 12 - got) };
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
    let fd = i32::from_ne_bytes(buf[4..8].try_into().unwrap());
    let landlock_errno = i32::from_ne_bytes(buf[8..].try_into().unwrap());
    let pidfd = pidfd_open(pid, 0)?;
    let listener = pidfd_getfd(&pidfd, fd)?;
    // SAFETY: writing one byte from a valid buffer.
    unsafe { libc::write(ack.as_raw_fd(), b"k".as_ptr().cast(), 1) };
    Ok(Some(Installed {
        listener,
        landlock_errno,
    }))
}
