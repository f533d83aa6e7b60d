//! The address dimensions (local and remote IP): the kernel looks an address
//! up in an LPM trie, so every prefix a rule names becomes an entry whose
//! bitmap also holds the rules of every shorter prefix containing it.

use super::bitmaps::{set, Interner};
use sockfilter_model::policy::{Cidr, Rule};
use std::collections::HashMap;
use std::net::IpAddr;

/// An LPM prefix: family tag (4 or 6), address (IPv4 as ::ffff:a.b.c.d) and
/// the number of address bits that count (0-128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// 4 for entries matched by IPv4 sockets, 6 for IPv6 sockets.
    pub tag: u8,
    /// The address, masked to `bits`.
    pub addr: [u8; 16],
    /// Significant bits of `addr`.
    pub bits: u8,
}

/// IPv4 addresses as ::ffff:a.b.c.d; IPv6 as they are.
pub(super) fn v6_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// `addr` with all but its first `bits` bits zeroed.
pub(super) fn mask(addr: [u8; 16], bits: u8) -> [u8; 16] {
    let v = u128::from_be_bytes(addr);
    let m = if bits == 0 {
        0
    } else {
        u128::MAX << (128 - bits as u32)
    };
    (v & m).to_be_bytes()
}

/// The LPM prefixes one CIDR stands for. An IPv4 network matches IPv4
/// sockets and v4-mapped addresses of IPv6 sockets; an IPv6 network only
/// IPv6 sockets.
fn prefixes(c: &Cidr) -> Vec<Prefix> {
    let addr = v6_bytes(c.addr());
    if c.is_ipv4() {
        let bits = 96 + c.prefix_len();
        vec![Prefix { tag: 4, addr, bits }, Prefix { tag: 6, addr, bits }]
    } else {
        vec![Prefix {
            tag: 6,
            addr,
            bits: c.prefix_len(),
        }]
    }
}

/// The LPM entries of one address dimension (`field` of each rule; `wild`
/// holds the rules that do not constrain it), with a root entry per tag so
/// that every address finds one.
pub(super) fn ip_dimension(
    rules: &[Rule],
    field: impl Fn(&Rule) -> Option<&Vec<Cidr>>,
    wild: &[u64],
    bm: &mut Interner,
) -> Vec<(Prefix, u32)> {
    // Every prefix some rule names, with the rules naming it.
    let mut named: HashMap<Prefix, Vec<usize>> = HashMap::new();
    for (i, r) in rules.iter().enumerate() {
        for c in field(r).into_iter().flatten() {
            for p in prefixes(c) {
                named.entry(p).or_default().push(i);
            }
        }
    }
    let mut all: Vec<Prefix> = named.keys().copied().collect();
    for tag in [4u8, 6] {
        all.push(Prefix {
            tag,
            addr: [0; 16],
            bits: 0,
        });
    }
    all.sort_by_key(|p| (p.tag, p.bits, p.addr));
    all.dedup();
    // A prefix's bitmap: the wildcard rules plus every rule naming a prefix
    // that contains it (LPM returns the longest match only).
    all.into_iter()
        .map(|p| {
            let mut bits = wild.to_vec();
            for len in 0..=p.bits {
                let outer = Prefix {
                    tag: p.tag,
                    addr: mask(p.addr, len),
                    bits: len,
                };
                for &r in named.get(&outer).into_iter().flatten() {
                    set(&mut bits, r);
                }
            }
            (p, bm.id(&bits))
        })
        .collect()
}
