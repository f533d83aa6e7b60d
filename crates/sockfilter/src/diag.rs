//! sock_diag (inet_diag) netlink: the sockets that exist right now, in every
//! network namespace, straight from the kernel — the same source `ss` uses.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
pub(crate) const REQ_LEN: usize = 16 + 56;
const MSG_LEN: usize = 72;

/// TCP states as the kernel numbers them.
pub mod tcp_state {
    /// Connected.
    pub const ESTABLISHED: u8 = 1;
    /// Connecting.
    pub const SYN_SENT: u8 = 2;
    /// Handshake in progress (accepted side).
    pub const SYN_RECV: u8 = 3;
    /// Closed; for UDP: not connected.
    pub const CLOSE: u8 = 7;
    /// Listening.
    pub const LISTEN: u8 = 10;
}

/// One socket as inet_diag reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagSocket {
    /// libc::IPPROTO_TCP or IPPROTO_UDP.
    pub protocol: u8,
    /// libc::AF_INET or AF_INET6.
    pub family: u8,
    /// TCP state number (UDP: ESTABLISHED when connected, CLOSE otherwise).
    pub state: u8,
    /// Local address and port.
    pub local: (IpAddr, u16),
    /// Remote address and port (unspecified:0 when none).
    pub remote: (IpAddr, u16),
    /// Socket inode (links in /proc/PID/fd read `socket:[INODE]`).
    pub inode: u64,
    /// Socket cookie (SO_COOKIE; what `ss -e` prints as `sk:`).
    pub cookie: u64,
    /// Owning uid as the kernel records it.
    pub uid: u32,
    /// Inode of the network namespace the socket lives in.
    pub netns: u64,
}

impl DiagSocket {
    /// Whether the socket has a remote endpoint.
    pub fn is_connected(&self) -> bool {
        self.remote.1 != 0
    }
}

pub(crate) fn nl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd is owned on success.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn request(family: u8, protocol: u8, states: u32) -> [u8; REQ_LEN] {
    let mut b = [0u8; REQ_LEN];
    b[0..4].copy_from_slice(&(REQ_LEN as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    b[6..8].copy_from_slice(&flags.to_ne_bytes());
    b[8..12].copy_from_slice(&1u32.to_ne_bytes());
    b[16] = family;
    b[17] = protocol;
    b[20..24].copy_from_slice(&states.to_ne_bytes());
    b
}

fn addr(family: u8, raw: &[u8]) -> IpAddr {
    if family == libc::AF_INET as u8 {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        let mut a = [0u8; 16];
        a.copy_from_slice(&raw[..16]);
        IpAddr::V6(Ipv6Addr::from(a))
    }
}

/// Parses one `inet_diag_msg`. Returns None for a short message.
fn parse_msg(protocol: u8, m: &[u8], netns: u64) -> Option<DiagSocket> {
    if m.len() < MSG_LEN {
        return None;
    }
    let family = m[0];
    let id = &m[4..52];
    let sport = u16::from_be_bytes([id[0], id[1]]);
    let dport = u16::from_be_bytes([id[2], id[3]]);
    let c0 = u32::from_ne_bytes(id[40..44].try_into().ok()?) as u64;
    let c1 = u32::from_ne_bytes(id[44..48].try_into().ok()?) as u64;
    Some(DiagSocket {
        protocol,
        family,
        state: m[1],
        local: (addr(family, &id[4..20]), sport),
        remote: (addr(family, &id[20..36]), dport),
        uid: u32::from_ne_bytes(m[64..68].try_into().ok()?),
        inode: u32::from_ne_bytes(m[68..72].try_into().ok()?) as u64,
        cookie: c0 | (c1 << 32),
        netns,
    })
}

/// Dumps one family/protocol in the calling thread's network namespace.
fn dump(family: u8, protocol: u8, states: u32, netns: u64) -> io::Result<Vec<DiagSocket>> {
    let sock = nl_socket()?;
    let req = request(family, protocol, states);
    // SAFETY: req is a valid buffer of REQ_LEN bytes; the kernel is the peer.
    let n = unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut rest = &buf[..n as usize];
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes(rest[4..6].try_into().unwrap());
            if len < 16 || len > rest.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "truncated netlink message",
                ));
            }
            match ty {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let errno = i32::from_ne_bytes(rest[16..20].try_into().unwrap_or([0; 4]));
                    if errno == 0 {
                        return Ok(out);
                    }
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                SOCK_DIAG_BY_FAMILY => out.extend(parse_msg(protocol, &rest[16..len], netns)),
                _ => {}
            }
            let aligned = (len + 3) & !3;
            rest = &rest[aligned.min(rest.len())..];
        }
    }
}

/// TCP states worth reporting: listening and every connected state (not
/// TIME_WAIT or CLOSE, which no process holds).
const TCP_STATES: u32 = (1 << 1)
    | (1 << 2)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 8)
    | (1 << 9)
    | (1 << 10)
    | (1 << 11);

/// TCP and UDP sockets (IPv4 and IPv6) of the calling thread's namespace:
/// TCP listening or connected, UDP with a local port.
pub fn sockets_here(netns: u64) -> io::Result<Vec<DiagSocket>> {
    let mut all = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        all.extend(dump(family, libc::IPPROTO_TCP as u8, TCP_STATES, netns)?);
        let udp = dump(family, libc::IPPROTO_UDP as u8, u32::MAX, netns)?;
        all.extend(udp.into_iter().filter(|s| s.local.1 != 0));
    }
    Ok(all)
}

/// Sockets of every network namespace that has a process, each dumped from
/// inside its namespace (a thread enters it with setns).
pub fn sockets_all_namespaces() -> io::Result<Vec<DiagSocket>> {
    let mut namespaces: BTreeMap<u64, u32> = BTreeMap::new();
    for pid in crate::procfs::pids() {
        if let Some(ino) = crate::procfs::netns_inode(pid) {
            namespaces.entry(ino).or_insert(pid);
        }
    }
    let mine = crate::procfs::netns_inode(std::process::id());
    let mut all = Vec::new();
    for (ino, pid) in namespaces {
        if Some(ino) == mine {
            all.extend(sockets_here(ino)?);
            continue;
        }
        // A namespace can vanish while we look: skip it, it has no sockets.
        if let Ok(Ok(socks)) = in_namespace_of(pid, move || sockets_here(ino)) {
            all.extend(socks);
        }
    }
    Ok(all)
}

/// Runs `f` on a fresh thread that has entered `pid`'s network namespace.
pub fn in_namespace_of<T: Send + 'static>(
    pid: u32,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::spawn(move || -> io::Result<T> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?
}

/// Destroying sockets lives in [`crate::destroy`]; these names stay here for
/// existing callers.
pub use crate::destroy::{destroy, destroy_supported, DestroyError, DestroyTarget};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_messages_are_ignored() {
        assert_eq!(parse_msg(6, &[0u8; 10], 0), None);
    }

    #[test]
    fn parses_an_inet_diag_msg() {
        let mut m = [0u8; MSG_LEN];
        m[0] = libc::AF_INET as u8;
        m[1] = tcp_state::LISTEN;
        m[4..6].copy_from_slice(&8080u16.to_be_bytes());
        m[8..12].copy_from_slice(&[127, 0, 0, 1]);
        m[44..48].copy_from_slice(&7u32.to_ne_bytes());
        m[48..52].copy_from_slice(&1u32.to_ne_bytes());
        m[68..72].copy_from_slice(&12345u32.to_ne_bytes());
        let s = parse_msg(6, &m, 9).unwrap();
        assert_eq!(s.local, (IpAddr::V4(Ipv4Addr::LOCALHOST), 8080));
        assert_eq!(s.cookie, 7 | (1 << 32));
        assert_eq!(s.inode, 12345);
        assert!(!s.is_connected());
    }
}
