//! The fallback destroy path: sock_diag's `SOCK_DESTROY`, the way `ss -K`
//! does it. The kernel finds the socket by a lookup on its endpoints and
//! then checks the cookie, so a listener or unconnected UDP socket in an
//! SO_REUSEPORT group is reached only if the lookup picks it: `ss -K`, which
//! always asks with peer port 0, reaches one member only. The lookup picks a
//! member by a hash of the peer, so [`destroy_here`] asks again with other
//! peer ports until the cookie matches. Kernels with BPF socket iterators use
//! [`super::iter`] instead.

use super::{DestroyError, DestroyTarget};
use crate::diag::{nl_socket, request, REQ_LEN};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};

/// netlink message type of a sock_diag destroy request (`SOCK_DESTROY`).
const SOCK_DESTROY: u16 = 21;
/// netlink message type of an error or acknowledgement.
const NLMSG_ERROR: u16 = 2;

fn raw_addr(family: sockfilter_model::Family, ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match (family, ip) {
        (sockfilter_model::Family::Ipv4, ip) => {
            let v4 = match ip.to_canonical() {
                IpAddr::V4(v4) => v4,
                IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            };
            out[..4].copy_from_slice(&v4.octets());
        }
        (sockfilter_model::Family::Ipv6, IpAddr::V6(v6)) => out = v6.octets(),
        (sockfilter_model::Family::Ipv6, IpAddr::V4(v4)) => out = v4.to_ipv6_mapped().octets(),
    }
    out
}

/// The `SOCK_DESTROY` request: nlmsghdr + inet_diag_req_v2 naming one socket
/// exactly (both endpoints and the cookie). `fake_peer_port` stands in for
/// the remote port of a socket without one (see [`destroy_here`]).
fn destroy_request(t: &DestroyTarget, seq: u32, fake_peer_port: u16) -> [u8; REQ_LEN] {
    let family = match t.family {
        sockfilter_model::Family::Ipv4 => libc::AF_INET as u8,
        sockfilter_model::Family::Ipv6 => libc::AF_INET6 as u8,
    };
    let protocol = match t.proto {
        sockfilter_model::Proto::Tcp => libc::IPPROTO_TCP as u8,
        sockfilter_model::Proto::Udp => libc::IPPROTO_UDP as u8,
    };
    let mut b = request(family, protocol, u32::MAX);
    b[4..6].copy_from_slice(&SOCK_DESTROY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    b[6..8].copy_from_slice(&flags.to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    let (rport, rip) = match t.remote {
        Some(r) => (r.port, raw_addr(t.family, r.ip)),
        None => (fake_peer_port, [0u8; 16]),
    };
    let id = &mut b[24..72];
    id[0..2].copy_from_slice(&t.local.port.to_be_bytes());
    id[2..4].copy_from_slice(&rport.to_be_bytes());
    id[4..20].copy_from_slice(&raw_addr(t.family, t.local.ip));
    id[20..36].copy_from_slice(&rip);
    id[36..40].copy_from_slice(&0u32.to_ne_bytes());
    id[40..44].copy_from_slice(&(t.cookie as u32).to_ne_bytes());
    id[44..48].copy_from_slice(&((t.cookie >> 32) as u32).to_ne_bytes());
    b
}

/// Sends one destroy request in the calling thread's namespace; returns the
/// kernel's errno (0 = destroyed).
fn destroy_once(sock: &OwnedFd, req: &[u8; REQ_LEN]) -> io::Result<i32> {
    // SAFETY: req is a valid buffer of REQ_LEN bytes; the kernel is the peer.
    let n = unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 1024];
    loop {
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let msg = &buf[..n as usize];
        if msg.len() >= 20 && u16::from_ne_bytes([msg[4], msg[5]]) == NLMSG_ERROR {
            return Ok(-i32::from_ne_bytes(msg[16..20].try_into().unwrap()));
        }
        if msg.len() < 16 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "short netlink answer to SOCK_DESTROY",
            ));
        }
    }
}

/// How many peer ports [`destroy_here`] tries for a socket without a remote
/// endpoint before concluding it is gone. The lookup picks an SO_REUSEPORT
/// member by a hash of the peer, uniformly: a group of n members is missed
/// with probability (1 - 1/n)^tries (2 members: 2^-1024; 64 members: 1e-7).
/// A socket that has closed costs all the tries (~5 ms).
const REUSEPORT_TRIES: u16 = 1024;

pub(super) fn destroy_here(t: &DestroyTarget) -> Result<(), DestroyError> {
    let sock = nl_socket()?;
    // The kernel finds the socket by a lookup on its endpoints, then checks
    // the cookie. A mismatch is ESTALE for TCP on recent kernels, ENOENT for
    // TCP up to 6.1 (inet_diag_find_one_icsk maps it) and for UDP, and
    // ENOENT is also the answer when nothing is bound there. A listener or
    // unconnected UDP socket in an SO_REUSEPORT group is picked by a hash of
    // the (absent) peer, so other peer ports reach the other members.
    let tries = if t.remote.is_some() {
        1
    } else {
        REUSEPORT_TRIES
    };
    for i in 0..tries {
        let fake_port = if i == 0 { 0 } else { 40000 + i };
        match destroy_once(&sock, &destroy_request(t, u32::from(i) + 1, fake_port))? {
            0 => return Ok(()),
            libc::ESTALE | libc::ENOENT if t.remote.is_none() => continue,
            libc::ESTALE | libc::ENOENT => return Err(DestroyError::NotFound { cookie: t.cookie }),
            libc::EOPNOTSUPP => return Err(DestroyError::Unsupported),
            libc::EPERM | libc::EACCES => return Err(DestroyError::PermissionDenied),
            errno => return Err(io::Error::from_raw_os_error(errno).into()),
        }
    }
    Err(DestroyError::NotFound { cookie: t.cookie })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockfilter_model::{Endpoint, Family, Proto};
    use std::net::Ipv6Addr;

    fn target(family: Family, local: IpAddr, remote: Option<IpAddr>) -> DestroyTarget {
        DestroyTarget {
            family,
            proto: Proto::Tcp,
            local: Endpoint::new(local, 8080),
            remote: remote.map(|ip| Endpoint::new(ip, 40000)),
            cookie: 0x1_0000_0002,
            netns: None,
            pid: None,
        }
    }

    #[test]
    fn request_names_the_socket_exactly() {
        let t = target(
            Family::Ipv4,
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
        );
        let b = destroy_request(&t, 5, 0);
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes(b[4..6].try_into().unwrap()), 21);
        assert_eq!(
            u16::from_ne_bytes(b[6..8].try_into().unwrap()),
            (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16
        );
        assert_eq!(
            (b[16], b[17]),
            (libc::AF_INET as u8, libc::IPPROTO_TCP as u8)
        );
        assert_eq!(&b[24..28], &[0x1f, 0x90, 0x9c, 0x40]);
        assert_eq!(&b[28..32], &[10, 0, 0, 1]);
        assert_eq!(&b[44..48], &[10, 0, 0, 2]);
        assert_eq!(u32::from_ne_bytes(b[64..68].try_into().unwrap()), 2);
        assert_eq!(u32::from_ne_bytes(b[68..72].try_into().unwrap()), 1);
    }

    #[test]
    fn v4_peers_of_v6_sockets_are_mapped() {
        let t = target(
            Family::Ipv6,
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        );
        let b = destroy_request(&t, 1, 0);
        assert_eq!(&b[44..60], &Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets());
        let l = target(Family::Ipv4, IpAddr::V4(Ipv4Addr::LOCALHOST), None);
        let b = destroy_request(&l, 1, 40001);
        assert_eq!(&b[26..28], &40001u16.to_be_bytes());
        assert_eq!(&b[44..60], &[0u8; 16]);
    }
}
