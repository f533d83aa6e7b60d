//! Emulation of `accept` and `accept4`.

use super::call::{Answer, Blocking, Call};
use super::request::{Operation, Syscall};
use super::sockaddr::{parse_sockaddr, Addr};
use super::socket::Sock;
use super::sys::{last_errno, Errno};
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `accept`/`accept4`: the connection is accepted on the duplicate of the
/// listener (by a thread with the caller's credentials, so the new socket is
/// the caller's), decided on its peer, and installed in the caller.
pub(super) fn do_accept(call: Call, sock: Sock, sc: Syscall) -> Answer {
    let flags = if sc == Syscall::Accept4 {
        call.args[3] as i32
    } else {
        0
    };
    if flags & !(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) != 0 {
        return Answer::Result(Err(libc::EINVAL));
    }
    if sock.nonblocking() {
        return accept_now(call, sock, sc, flags);
    }
    // Blocking: wait on the waiter's thread, accept when there is a
    // connection (a worker, when the caller's credentials need one).
    let waiter = call.core.waiter.clone();
    waiter.wait_readable(call, sock, move |call, sock| {
        let c = call.clone();
        let answer = accept_now(call, sock, sc, flags);
        c.send(answer);
    });
    Answer::Done
}

/// Accepts on the listener with the caller's credentials, then decides and
/// installs the connection. A blocking listener that another thread emptied
/// meanwhile goes back to waiting.
fn accept_now(call: Call, sock: Sock, sc: Syscall, flags: i32) -> Answer {
    let blocking = !sock.nonblocking();
    call.perform(
        Blocking::No,
        move || {
            if blocking && !readable(&sock) {
                return (None, sock);
            }
            (Some(accept(&sock)), sock)
        },
        move |call, (accepted, sock)| match accepted {
            None => {
                let waiter = call.core.waiter.clone();
                waiter.wait_readable(call, sock, move |call, sock| {
                    let c = call.clone();
                    let answer = accept_now(call, sock, sc, flags);
                    c.send(answer);
                });
                Answer::Done
            }
            Some(Err(e)) => Answer::Result(Err(e)),
            Some(Ok((conn, peer))) => install(&call, &sock, sc, flags, conn, peer),
        },
    )
}

/// True when the listener has a connection now.
fn readable(sock: &Sock) -> bool {
    let mut pfd = libc::pollfd {
        fd: sock.fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, 0) > 0 }
}

/// `accept4` on the listener: the connection and its peer's address.
fn accept(sock: &Sock) -> Result<(OwnedFd, Vec<u8>), Errno> {
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
        return Err(last_errno());
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
    Ok((conn, peer_bytes))
}

/// Decides the accepted connection and, when allowed, writes the peer's
/// address into the caller and installs the connection as the call's result.
fn install(
    call: &Call,
    sock: &Sock,
    sc: Syscall,
    flags: i32,
    conn: OwnedFd,
    peer_bytes: Vec<u8>,
) -> Answer {
    let remote = match parse_sockaddr(&peer_bytes) {
        Addr::Ep(e) => Some(e),
        _ => None,
    };
    let connsock = Sock {
        fd: conn,
        family: sock.family,
        ty: sock.ty,
        protocol: sock.protocol,
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
