//! Emulation of `bind` and `listen`.

use super::call::Call;
use super::request::{Operation, Syscall};
use super::sockaddr::{sockaddr_ptr, target, Addr};
use super::socket::Sock;
use super::sys::{cvt, SysResult};
use std::os::fd::AsRawFd;

pub(super) fn do_bind(call: &Call, sock: &Sock) -> SysResult {
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

pub(super) fn do_listen(call: &Call, sock: &Sock) -> SysResult {
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
