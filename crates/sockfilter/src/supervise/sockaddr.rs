//! Socket addresses as the kernel reads them.

use super::request::Syscall;
use super::socket::Sock;
use super::sys::Errno;
use sockfilter_model::event::{Endpoint, Family};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub(super) enum Addr {
    Ep(Endpoint),
    Unspec,
    Bad(Errno),
}

/// Parses a socket address as the kernel would read it: AF_INET needs 16
/// bytes, AF_INET6 24.
pub(super) fn parse_sockaddr(b: &[u8]) -> Addr {
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

pub(super) fn sin(b: &[u8]) -> Endpoint {
    let port = u16::from_be_bytes([b[2], b[3]]);
    Endpoint::new(IpAddr::V4(Ipv4Addr::new(b[4], b[5], b[6], b[7])), port)
}

/// The endpoint a call on `sock` with address bytes `b` goes to, as the
/// kernel reads them: AF_UNSPEC means "AF_INET" to IPv4 bind and sendto, and
/// "no address" (connect: disconnect) otherwise.
pub(super) fn target(sock: &Sock, b: &[u8], op: Syscall) -> Addr {
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

pub(super) fn sockaddr_ptr(b: &[u8]) -> *const libc::sockaddr {
    b.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;

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
