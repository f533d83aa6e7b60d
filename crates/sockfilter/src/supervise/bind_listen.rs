//! Emulation of `bind` and `listen`.

use super::call::{Answer, Blocking, Call};
use super::request::{Operation, Syscall};
use super::sockaddr::{sockaddr_ptr, target, Addr};
use super::socket::Sock;
use super::sys::cvt;
use std::os::fd::AsRawFd;

/// `bind(fd, addr, len)`: decided on the address asked for, performed on
/// the duplicate with the copy that was decided on.
pub(super) fn do_bind(call: Call, sock: Sock) -> Answer {
    let bytes = match call.read_addr(call.args[1], call.args[2] as u32 as u64) {
        Ok(b) => b,
        Err(e) => return Answer::Result(Err(e)),
    };
    let ep = match target(&sock, &bytes, Syscall::Bind) {
        Addr::Ep(e) => e,
        Addr::Unspec => return Answer::Result(Err(libc::EAFNOSUPPORT)),
        Addr::Bad(e) => return Answer::Result(Err(e)),
    };
    let req = call.request(&sock, Operation::Bind, Syscall::Bind, Some(ep), None);
    let Some(verdict) = call.decide(&req) else {
        return Answer::Result(Err(libc::ESRCH));
    };
    if !verdict.allows() {
        call.emit(&req, &verdict, None);
        return Answer::Result(Err(libc::EPERM));
    }
    call.perform(
        Blocking::No,
        move || {
            // SAFETY: bytes holds the address copy of len bytes.
            let r = cvt(unsafe {
                libc::bind(
                    sock.fd.as_raw_fd(),
                    sockaddr_ptr(&bytes),
                    bytes.len() as libc::socklen_t,
                )
            } as libc::c_long);
            (r, sock)
        },
        move |call, (r, sock)| {
            call.emit(&req, &verdict, if r.is_ok() { sock.local() } else { None });
            Answer::Result(r)
        },
    )
}

/// `listen(fd, backlog)`: decided on the socket's address.
pub(super) fn do_listen(call: Call, sock: Sock) -> Answer {
    let backlog = call.args[1] as i32;
    let mut req = call.request(
        &sock,
        Operation::Listen,
        Syscall::Listen,
        sock.local(),
        None,
    );
    req.backlog = Some(backlog.max(0) as u32);
    let Some(verdict) = call.decide(&req) else {
        return Answer::Result(Err(libc::ESRCH));
    };
    if !verdict.allows() {
        call.emit(&req, &verdict, None);
        return Answer::Result(Err(libc::EPERM));
    }
    call.perform(
        Blocking::No,
        move || {
            // SAFETY: plain system call on an owned fd.
            let r = cvt(unsafe { libc::listen(sock.fd.as_raw_fd(), backlog) } as libc::c_long);
            (r, sock)
        },
        move |call, (r, sock)| {
            call.emit(&req, &verdict, sock.local());
            Answer::Result(r)
        },
    )
}
