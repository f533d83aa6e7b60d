//! Which rule fields constrain which dimension, and the dimensions whose
//! values are looked up exactly: kind, ports, and keyed values (exe, comm,
//! uid).

use super::bitmaps::{clear, set, Interner};
use super::{dim, op_code};
use sockfilter_model::event::{Family, Proto};
use sockfilter_model::policy::{Operation, PortRange, Rule};
use std::collections::HashMap;
use std::hash::Hash;
use std::ops::Index;

/// Whether a rule constrains a dimension.
type Constrains = fn(&Rule) -> bool;

/// Per dimension (in `dim` order), whether a rule constrains it. A rule
/// that does not is in every bitmap of the dimension, including the
/// wildcard one used for a value no rule names.
const CONSTRAINS: [(usize, Constrains); dim::COUNT] = [
    // Every rule has a kind (`on`, `proto`, `family`) and the kind table
    // has every kind, so the wildcard kind bitmap (every rule) serves only
    // if the kernel's kind lookup finds nothing; see `Wildcards::of`.
    (dim::KIND, |_| false),
    (dim::LOCAL_IP, |r| r.local_ip.is_some()),
    (dim::REMOTE_IP, |r| r.remote_ip.is_some()),
    (dim::LOCAL_PORT, |r| r.local_port.is_some()),
    (dim::REMOTE_PORT, |r| r.remote_port.is_some()),
    (dim::EXE, |r| r.exe.is_some()),
    (dim::COMM, |r| r.comm.is_some()),
    (dim::UID, |r| r.uid.is_some()),
    (dim::CGROUP, |r| {
        r.cgroup.is_some() || r.constrains_workload()
    }),
    (dim::REMOTE_HOST, |r| r.remote_host.is_some()),
];

// `Wildcards` indexes by position; the table must be in `dim` order.
const _: () = {
    let mut d = 0;
    while d < dim::COUNT {
        assert!(CONSTRAINS[d].0 == d);
        d += 1;
    }
};

/// Per dimension, the rules that do not constrain it, and which dimensions
/// some rule constrains (the kernel skips the lookups of the others).
pub(super) struct Wildcards {
    bits: [Vec<u64>; dim::COUNT],
    used: u32,
}

impl Wildcards {
    /// The wildcards of `rules`, as bitmaps of `words` words.
    pub(super) fn of(rules: &[Rule], words: usize) -> Wildcards {
        let bits = std::array::from_fn(|d| {
            let mut bits = vec![0u64; words];
            for (i, r) in rules.iter().enumerate() {
                if !(CONSTRAINS[d].1)(r) {
                    set(&mut bits, i);
                }
            }
            bits
        });
        // The kind is always looked up: it is what `on`, `proto` and
        // `family` compile into.
        let mut used = 1 << dim::KIND;
        for (d, constrains) in CONSTRAINS {
            if rules.iter().any(constrains) {
                used |= 1 << d;
            }
        }
        Wildcards { bits, used }
    }

    /// Bit per dimension that some rule constrains (`Compiled::dims_used`).
    pub(super) fn used(&self) -> u32 {
        self.used
    }

    /// The wildcard bitmap id of every dimension (`Compiled::wild`), interned
    /// in `dim` order.
    pub(super) fn ids(&self, bm: &mut Interner) -> [u32; dim::COUNT] {
        let mut wild = [0u32; dim::COUNT];
        for (d, bits) in self.bits.iter().enumerate() {
            wild[d] = bm.id(bits);
        }
        wild
    }
}

/// The rules that do not constrain a dimension (indexed by `dim`).
impl Index<usize> for Wildcards {
    type Output = [u64];

    fn index(&self, d: usize) -> &[u64] {
        &self.bits[d]
    }
}

/// The kind dimension: `op * 4 + udp * 2 + ipv6` -> bitmap id of the rules
/// whose `on`, `proto` and `family` admit that kind.
pub(super) fn kind_dimension(rules: &[Rule], bm: &mut Interner) -> [u32; 16] {
    let mut kind = [0u32; 16];
    for op in Operation::ALL {
        for udp in [false, true] {
            for v6 in [false, true] {
                let mut bits = bm.empty();
                for (i, r) in rules.iter().enumerate() {
                    let proto_ok = match r.proto {
                        None => true,
                        Some(Proto::Udp) => udp,
                        Some(Proto::Tcp) => !udp,
                    };
                    let family_ok = match r.family {
                        None => true,
                        Some(Family::Ipv6) => v6,
                        Some(Family::Ipv4) => !v6,
                    };
                    if r.on.contains(&op) && proto_ok && family_ok {
                        set(&mut bits, i);
                    }
                }
                kind[op_code(op) * 4 + usize::from(udp) * 2 + usize::from(v6)] = bm.id(&bits);
            }
        }
    }
    kind
}

/// A port dimension: a table of every port -> bitmap id, built by one sweep
/// over the port line (the kernel indexes it by port, so no lookup misses).
pub(super) fn port_dimension(
    rules: &[Rule],
    field: impl Fn(&Rule) -> Option<&Vec<PortRange>>,
    wild: &[u64],
    bm: &mut Interner,
) -> Vec<u32> {
    // Sweep the port line: +rule at lo, -rule after hi.
    let mut starts: Vec<Vec<(usize, bool)>> = vec![Vec::new(); 65537];
    for (i, r) in rules.iter().enumerate() {
        for pr in field(r).into_iter().flatten() {
            starts[pr.lo as usize].push((i, true));
            starts[pr.hi as usize + 1].push((i, false));
        }
    }
    // A rule's ranges may overlap: it leaves the bitmap when its last one ends.
    let mut count = vec![0u32; rules.len()];
    let mut bits = wild.to_vec();
    let mut table = vec![0u32; 65536];
    let mut current = bm.id(&bits);
    for (port, slot) in table.iter_mut().enumerate() {
        if !starts[port].is_empty() {
            for &(r, open) in &starts[port] {
                if open {
                    count[r] += 1;
                    set(&mut bits, r);
                } else {
                    count[r] -= 1;
                    if count[r] == 0 {
                        clear(&mut bits, r);
                    }
                }
            }
            current = bm.id(&bits);
        }
        *slot = current;
    }
    table
}

/// A dimension looked up by exact value (exe, comm, uid): every value some
/// rule names -> bitmap id, in the order the values first appear. A value
/// no rule names gets the wildcard bitmap.
pub(super) fn keyed_dimension<K: Clone + Eq + Hash>(
    rules: &[Rule],
    field: impl Fn(&Rule) -> Option<Vec<K>>,
    wild: &[u64],
    bm: &mut Interner,
) -> Vec<(K, u32)> {
    let mut by_value: HashMap<K, Vec<u64>> = HashMap::new();
    let mut order: Vec<K> = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        for v in field(r).into_iter().flatten() {
            let bits = by_value.entry(v.clone()).or_insert_with(|| {
                order.push(v.clone());
                wild.to_vec()
            });
            set(bits, i);
        }
    }
    order
        .into_iter()
        .map(|k| {
            let id = bm.id(&by_value[&k]);
            (k, id)
        })
        .collect()
}

/// A comm as the kernel keeps it: at most 15 bytes, NUL-padded to 16.
pub(super) fn comm_key(comm: &str) -> [u8; 16] {
    let mut k = [0u8; 16];
    let n = comm.len().min(15);
    k[..n].copy_from_slice(&comm.as_bytes()[..n]);
    k
}
