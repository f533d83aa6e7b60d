//! Making a denied UDP socket receive nothing more. Destroying a UDP socket
//! (`bpf_sock_destroy()` or `SOCK_DESTROY`, both `udp_abort()`) reports
//! `ECONNABORTED` once and disconnects it, but a socket bound to an explicit
//! port stays bound and goes on receiving datagrams. So enforce also gives
//! such a socket a socket filter that drops every packet, and locks it
//! (`SO_LOCK_FILTER`): its owner can neither detach nor replace it, and
//! nothing reaches the socket again, for as long as it lives.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Drops every packet (classic BPF: `ret #0`).
const DROP_ALL: [libc::sock_filter; 1] = [libc::sock_filter {
    code: (libc::BPF_RET | libc::BPF_K) as u16,
    jt: 0,
    jf: 0,
    k: 0,
}];

/// Gives the socket with cookie `cookie`, held by process `pid`, a locked
/// drop-all filter. Fails if `pid` no longer holds it.
pub fn deafen(pid: u32, cookie: u64) -> io::Result<()> {
    let socket = borrow_by_cookie(pid, cookie)?;
    let prog = libc::sock_fprog {
        len: DROP_ALL.len() as u16,
        filter: DROP_ALL.as_ptr().cast_mut(),
    };
    setsockopt(&socket, libc::SO_ATTACH_FILTER, &prog)?;
    setsockopt(&socket, libc::SO_LOCK_FILTER, &1i32)
}

fn setsockopt<T>(fd: &OwnedFd, opt: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: value points to a T of the size given; fd is open.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A duplicate (`pidfd_getfd`) of the descriptor of `pid` that refers to
/// the socket with cookie `cookie`.
fn borrow_by_cookie(pid: u32, cookie: u64) -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall; the descriptor is owned at once.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pidfd_open returned a new descriptor nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .map(|t| t.to_string_lossy().starts_with("socket:["))
            .unwrap_or(false);
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if !is_socket {
            continue;
        }
        // SAFETY: a plain syscall; the descriptor is owned at once.
        let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
        if dup < 0 {
            continue; // closed meanwhile
        }
        // SAFETY: pidfd_getfd returned a new descriptor nothing else owns.
        let dup = unsafe { OwnedFd::from_raw_fd(dup as i32) };
        if socket_cookie(&dup) == Some(cookie) {
            return Ok(dup);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("process {pid} holds no socket {cookie:#x}"),
    ))
}

fn socket_cookie(fd: &OwnedFd) -> Option<u64> {
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: cookie and len are valid for the kernel to write.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn a_deafened_socket_receives_nothing_and_its_owner_cannot_undo_it() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let fd = rx.as_raw_fd();
        // SAFETY: borrowed for the call only; rx keeps ownership.
        let cookie = socket_cookie(&unsafe { OwnedFd::from_raw_fd(libc::dup(fd)) }).unwrap();
        deafen(std::process::id(), cookie).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(
            rx.recv(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let zero = 0i32;
        // SAFETY: plain setsockopt on rx's descriptor, with an int.
        let detach = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_DETACH_FILTER,
                (&zero as *const i32).cast(),
                4,
            )
        };
        assert_eq!(detach, -1);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EPERM));
    }
}
