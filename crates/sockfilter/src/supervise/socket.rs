//! The caller's socket: a duplicate taken with `pidfd_getfd`, and what it is.

use super::call::Call;
use super::sockaddr::{parse_sockaddr, Addr};
use super::sys::{last_errno, pidfd_getfd, Errno};
use sockfilter_model::event::{Endpoint, Family, Proto};
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

pub(super) const SO_DOMAIN: libc::c_int = 39;
pub(super) const SO_PROTOCOL: libc::c_int = 38;
pub(super) const SO_COOKIE: libc::c_int = 57;

/// A duplicate of the caller's socket and what it is.
pub(super) struct Sock {
    pub(super) fd: OwnedFd,
    pub(super) family: Family,
    pub(super) ty: libc::c_int,
    /// `SO_PROTOCOL`: IPPROTO_TCP, IPPROTO_UDP, ...
    pub(super) protocol: libc::c_int,
}

impl Sock {
    /// Whether a policy can decide about this socket's calls: TCP (and
    /// MPTCP, TCP on the wire), UDP and UDP-Lite. Not SCTP (which binds and
    /// connects through setsockopt too), ICMP "ping" sockets or raw sockets
    /// (whose packets carry their own headers).
    pub(super) fn decidable(&self) -> bool {
        matches!(
            self.protocol,
            libc::IPPROTO_TCP | libc::IPPROTO_MPTCP | libc::IPPROTO_UDP | libc::IPPROTO_UDPLITE
        )
    }

    /// The protocol a policy names: `tcp` for stream sockets, `udp` for the
    /// others (the nearest word for a socket that is not [`Self::decidable`]).
    pub(super) fn proto(&self) -> Proto {
        match self.ty {
            libc::SOCK_STREAM | libc::SOCK_SEQPACKET => Proto::Tcp,
            _ => Proto::Udp,
        }
    }
    pub(super) fn nonblocking(&self) -> bool {
        // SAFETY: plain fcntl on an owned fd.
        let fl = unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_GETFL) };
        fl >= 0 && fl & libc::O_NONBLOCK != 0
    }
    pub(super) fn cookie(&self) -> u64 {
        cookie(self.fd.as_raw_fd())
    }
    pub(super) fn local(&self) -> Option<Endpoint> {
        sockname(self.fd.as_raw_fd(), false)
    }
}

pub(super) fn getsockopt_int(fd: RawFd, opt: libc::c_int) -> Result<libc::c_int, Errno> {
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

pub(super) fn cookie(fd: RawFd) -> u64 {
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

pub(super) fn sockname(fd: RawFd, peer: bool) -> Option<Endpoint> {
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

/// Takes the caller's socket; None when the call carries no decision.
pub(super) fn take_socket(call: &Call) -> Result<Option<Sock>, Errno> {
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
    let protocol = getsockopt_int(fd.as_raw_fd(), SO_PROTOCOL)?;
    Ok(Some(Sock {
        fd,
        family,
        ty,
        protocol,
    }))
}
