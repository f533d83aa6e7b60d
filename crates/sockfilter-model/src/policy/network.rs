//! Address and port matching: [`Cidr`] networks and [`PortRange`]s.

use super::parser::is_digits;
use std::fmt;
use std::net::IpAddr;

/// An IP network: an address and a prefix length, with no host bits set.
///
/// An IPv4 network matches IPv4 addresses and the IPv4 address embedded in a
/// v4-mapped IPv6 address (`::ffff:a.b.c.d`, what an IPv6 socket sees for an
/// IPv4 peer). An IPv6 network matches IPv6 addresses only (compared as they
/// are, so `::ffff:0:0/96` matches every v4-mapped address).
///
/// ```
/// use sockfilter_model::policy::Cidr;
/// let net: Cidr = "10.0.0.0/8".parse().unwrap();
/// assert!(net.contains("10.1.2.3".parse().unwrap()));
/// assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
/// assert!(!net.contains("11.0.0.1".parse().unwrap()));
/// let host: Cidr = "::1".parse().unwrap();
/// assert_eq!(host.prefix_len(), 128);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Builds a network. Fails (with a message) when the prefix is longer
    /// than the address (32 or 128 bits) or the address has host bits set.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, String> {
        let max = max_prefix(addr);
        if prefix > max {
            return Err(format!(
                "prefix length /{prefix} is longer than {max} bits, the most an {} address has",
                if addr.is_ipv4() { "IPv4" } else { "IPv6" }
            ));
        }
        let cidr = Cidr { addr, prefix };
        let network = cidr.network();
        if network != addr {
            return Err(format!(
                "host bits are set (did you mean \"{network}/{prefix}\"?)"
            ));
        }
        Ok(cidr)
    }

    /// The network address (host bits are zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length: 0-32 for IPv4, 0-128 for IPv6.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// True for an IPv4 network.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether `ip` is in this network (see the type's documentation for
    /// v4-mapped addresses).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask32(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V4(net), IpAddr::V6(ip)) => ip
                .to_ipv4_mapped()
                .is_some_and(|ip| mask32(u32::from(ip), self.prefix) == u32::from(net)),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask128(u128::from(ip), self.prefix) == u128::from(net)
            }
            (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }

    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(mask32(u32::from(a), self.prefix).into()),
            IpAddr::V6(a) => IpAddr::V6(mask128(u128::from(a), self.prefix).into()),
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn mask32(x: u32, prefix: u8) -> u32 {
    x & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(x: u128, prefix: u8) -> u128 {
    x & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl std::str::FromStr for Cidr {
    type Err = String;

    /// Parses `ADDR/LEN` or a bare address (a /32 or /128).
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| format!("{addr_text:?} is not an IPv4 or IPv6 address"))?;
        let prefix = match prefix_text {
            None => max_prefix(addr),
            Some(p) if is_digits(p) => match p.parse::<u8>() {
                Ok(n) => n,
                Err(_) => {
                    return Err(format!(
                        "prefix length /{p} is longer than {} bits",
                        max_prefix(addr)
                    ))
                }
            },
            Some(p) => return Err(format!("prefix length {p:?} is not a number")),
        };
        Cidr::new(addr, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An inclusive range of ports, `lo <= hi` (a single port has `lo == hi`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// The lowest port in the range.
    pub lo: u16,
    /// The highest port in the range.
    pub hi: u16,
}

impl PortRange {
    /// The range holding only `port`.
    pub fn single(port: u16) -> PortRange {
        PortRange { lo: port, hi: port }
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}
