//! Compiling a [`Policy`] into the contents of the kernel's policy maps
//! (`bpf/policy.h`). Pure computation: the result is written to the maps by
//! [`super::Enforcer`], and is unit-tested here against `Policy::decide`.
//!
//! Scheme: rules are numbered in file order. For every dimension of a
//! request (kind, local/remote address, local/remote port, exe, comm, uid,
//! cgroup) each possible value maps to a bitmap of the rules that value
//! allows in that dimension (`unit` and `container` are functions of the
//! cgroup path, so they are compiled into the cgroup dimension: each cgroup
//! where a named unit or container starts gets an entry) (a rule that does not constrain the dimension is
//! in every bitmap). The first rule set in all nine bitmaps decides.
//! Identical bitmaps are stored once.

use sockfilter_model::event::{Family, Proto};
use sockfilter_model::policy::{
    cgroup_contains, Action, Cidr, HostPattern, Operation, Policy, Rule,
};
use sockfilter_model::workload::Workload;
use std::collections::HashMap;
use std::net::IpAddr;

/// Most rules a policy may have (`SF_MAX_RULES`).
pub const MAX_RULES: usize = 16384;
/// Bitmap words for MAX_RULES.
pub const WORDS: usize = MAX_RULES / 64;
/// Summary words.
pub const SUMMARY: usize = WORDS / 64;

/// Dimension numbers (`enum sf_dim`).
pub mod dim {
    /// Operation x protocol x family.
    pub const KIND: usize = 0;
    /// Local address.
    pub const LOCAL_IP: usize = 1;
    /// Remote address.
    pub const REMOTE_IP: usize = 2;
    /// Local port.
    pub const LOCAL_PORT: usize = 3;
    /// Remote port.
    pub const REMOTE_PORT: usize = 4;
    /// Executable.
    pub const EXE: usize = 5;
    /// Command name.
    pub const COMM: usize = 6;
    /// User id.
    pub const UID: usize = 7;
    /// cgroup subtree.
    pub const CGROUP: usize = 8;
    /// The DNS name the remote address was resolved from (connect).
    pub const REMOTE_HOST: usize = 9;
    /// How many.
    pub const COUNT: usize = 10;
}

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

/// The compiled policy: what goes into each map for one slot.
pub struct Compiled {
    /// Rules in the policy.
    pub rules: usize,
    /// Bitmap words in use.
    pub words: usize,
    /// `enum sf_verdict` of the default.
    pub default_verdict: u32,
    /// Bit per dimension that some rule constrains.
    pub dims_used: u32,
    /// Per dimension: the bitmap for a value no rule names (or an unknown one).
    pub wild: [u32; dim::COUNT],
    /// All distinct bitmaps; a bitmap's id is its index.
    pub bitmaps: Vec<Vec<u64>>,
    /// `op * 4 + udp * 2 + ipv6` -> bitmap id.
    pub kind: [u32; 16],
    /// Local address prefixes -> bitmap id (includes a root entry per tag).
    pub local_ip: Vec<(Prefix, u32)>,
    /// Remote address prefixes -> bitmap id.
    pub remote_ip: Vec<(Prefix, u32)>,
    /// Port -> bitmap id, local.
    pub local_ports: Vec<u32>,
    /// Port -> bitmap id, remote.
    pub remote_ports: Vec<u32>,
    /// Executable path -> bitmap id.
    pub exe: Vec<(String, u32)>,
    /// comm (NUL-padded) -> bitmap id.
    pub comm: Vec<([u8; 16], u32)>,
    /// uid -> bitmap id.
    pub uid: Vec<(u32, u32)>,
    /// cgroup id -> bitmap id.
    pub cgroup: Vec<(u64, u32)>,
    /// remote_host pattern -> bitmap id: the rules the pattern's names
    /// satisfy (the kernel looks up the longest pattern matching a name,
    /// so a pattern's bitmap includes every `*.` pattern above it).
    pub hosts: Vec<(HostPattern, u32)>,
    /// The cgroups (path, id) where a unit or container named by a rule
    /// starts, as found when compiling: when this set changes (a unit
    /// restarted, a container started) the policy must be compiled again.
    pub workload_roots: Vec<(String, u64)>,
    /// Rule index -> `enum sf_verdict`.
    pub verdicts: Vec<u32>,
}

/// Why a policy cannot be compiled as written.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// Too many rules.
    #[error("the policy has {0} rules; sockfilter enforce handles at most {MAX_RULES}")]
    TooManyRules(usize),
    /// A rule names a cgroup that does not exist.
    #[error("rule {rule:?} (line {line}): cgroup {path} does not exist under {root}; it must exist when the policy is loaded")]
    NoCgroup {
        /// Rule name.
        rule: String,
        /// Its line.
        line: usize,
        /// The cgroup path.
        path: String,
        /// The cgroup2 mount.
        root: String,
    },
    /// A container prefix names several running containers.
    #[error("rule {rule:?} (line {line}): container {prefix:?} is the prefix of several running containers ({}); write more of the id", ids.join(", "))]
    AmbiguousContainer {
        /// Rule name.
        rule: String,
        /// Its line.
        line: usize,
        /// The prefix in the rule.
        prefix: String,
        /// The ids it is a prefix of.
        ids: Vec<String>,
    },
}

/// The parent of a cgroup path (`/a/b` -> `/a`, `/a` -> `/`).
fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The cgroups of `tree` (every cgroup of the hierarchy, path and id) where
/// a unit or container that some rule names starts: the cgroup whose
/// parent does not name the same unit and container.
pub fn workload_roots(policy: &Policy, tree: &[(String, u64)]) -> Vec<(String, u64)> {
    let rules: Vec<&Rule> = policy
        .rules
        .iter()
        .filter(|r| r.constrains_workload())
        .collect();
    if rules.is_empty() {
        return Vec::new();
    }
    let mut roots: Vec<(String, u64)> = tree
        .iter()
        .filter(|(path, _)| {
            let w = Workload::of_cgroup(path);
            if w.unit.is_none() && w.container.is_none() {
                return false;
            }
            let up = Workload::of_cgroup(parent(path));
            (up.unit != w.unit || up.container != w.container)
                && rules.iter().any(|r| r.matches_workload(&w))
        })
        .cloned()
        .collect();
    roots.sort();
    roots
}

/// Refuses a container prefix that names more than one container of `tree`.
fn check_container_prefixes(policy: &Policy, tree: &[(String, u64)]) -> Result<(), CompileError> {
    let mut ids: Vec<String> = tree
        .iter()
        .filter_map(|(path, _)| Workload::of_cgroup(path).container.map(|c| c.id))
        .collect();
    ids.sort();
    ids.dedup();
    for r in &policy.rules {
        for prefix in r.container.iter().flatten().filter(|p| p.len() < 64) {
            let hits: Vec<String> = ids
                .iter()
                .filter(|id| id.starts_with(prefix.as_str()))
                .cloned()
                .collect();
            if hits.len() > 1 {
                return Err(CompileError::AmbiguousContainer {
                    rule: r.name.clone(),
                    line: r.line,
                    prefix: prefix.clone(),
                    ids: hits,
                });
            }
        }
    }
    Ok(())
}

/// `enum sf_verdict` of an action.
pub fn verdict_code(a: Action) -> u32 {
    match a {
        Action::Allow => 1,
        Action::Deny => 2,
        Action::Audit => 3,
    }
}

/// Operation number (`enum sf_op`).
pub fn op_code(op: Operation) -> usize {
    match op {
        Operation::Bind => 0,
        Operation::Listen => 1,
        Operation::Connect => 2,
        Operation::Accept => 3,
    }
}

struct Interner {
    words: usize,
    ids: HashMap<Vec<u64>, u32>,
    list: Vec<Vec<u64>>,
}

impl Interner {
    fn id(&mut self, bits: &[u64]) -> u32 {
        if let Some(&id) = self.ids.get(bits) {
            return id;
        }
        let id = self.list.len() as u32;
        self.ids.insert(bits.to_vec(), id);
        self.list.push(bits.to_vec());
        id
    }

    fn empty(&self) -> Vec<u64> {
        vec![0; self.words]
    }
}

fn set(bits: &mut [u64], rule: usize) {
    bits[rule / 64] |= 1 << (rule % 64);
}

fn clear(bits: &mut [u64], rule: usize) {
    bits[rule / 64] &= !(1 << (rule % 64));
}

/// IPv4 addresses as ::ffff:a.b.c.d; IPv6 as they are.
fn v6_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn mask(addr: [u8; 16], bits: u8) -> [u8; 16] {
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

fn ip_dimension(
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

fn port_dimension(
    rules: &[Rule],
    field: impl Fn(&Rule) -> Option<&Vec<sockfilter_model::policy::PortRange>>,
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

fn keyed_dimension<K: Clone + Eq + std::hash::Hash>(
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

/// The remote-host bitmap id of `name` (lowercase) in `hosts`, as the
/// kernel finds it (bpf/dns.h): the exact name, then `*.` suffixes from the
/// longest; None when no pattern matches.
pub fn host_id(hosts: &[(HostPattern, u32)], name: &str) -> Option<u32> {
    let labels: Vec<&str> = name.split('.').collect();
    let mut candidates = vec![HostPattern::Exact(name.to_string())];
    for i in 1..labels.len() {
        candidates.push(HostPattern::Below(labels[i..].join(".")));
    }
    candidates
        .iter()
        .find_map(|p| hosts.iter().find(|(q, _)| q == p).map(|(_, id)| *id))
}

/// Whether every name `pattern` matches is matched by `by` too.
fn covers(by: &HostPattern, pattern: &HostPattern) -> bool {
    match (by, pattern) {
        (HostPattern::Exact(a), HostPattern::Exact(b)) => a == b,
        (HostPattern::Exact(_), HostPattern::Below(_)) => false,
        (HostPattern::Below(_), HostPattern::Exact(n)) => by.matches(n),
        (HostPattern::Below(d), HostPattern::Below(s)) => d == s || by.matches(s),
    }
}

fn host_dimension(rules: &[Rule], wild: &[u64], bm: &mut Interner) -> Vec<(HostPattern, u32)> {
    let mut patterns: Vec<&HostPattern> = rules
        .iter()
        .filter_map(|r| r.remote_host.as_ref())
        .flatten()
        .collect();
    patterns.sort();
    patterns.dedup();
    patterns
        .into_iter()
        .map(|p| {
            let mut bits = wild.to_vec();
            for (i, r) in rules.iter().enumerate() {
                if r.remote_host.iter().flatten().any(|q| covers(q, p)) {
                    set(&mut bits, i);
                }
            }
            (p.clone(), bm.id(&bits))
        })
        .collect()
}

/// Compiles `policy`. `cgroup_id` turns a cgroup path (as in
/// /proc/PID/cgroup) into its id, or None if it does not exist; `tree` is
/// every cgroup of the hierarchy (path and id), where the units and
/// containers that rules name are looked for.
pub fn compile(
    policy: &Policy,
    cgroup_id: impl Fn(&str) -> Option<u64>,
    tree: &[(String, u64)],
    cgroup_root: &str,
) -> Result<Compiled, CompileError> {
    let rules = &policy.rules;
    if rules.len() > MAX_RULES {
        return Err(CompileError::TooManyRules(rules.len()));
    }
    let words = rules.len().div_ceil(64).max(1);
    let mut bm = Interner {
        words,
        ids: HashMap::new(),
        list: Vec::new(),
    };

    // Rules that do not constrain a dimension, per dimension.
    let wildcard = |constrains: &dyn Fn(&Rule) -> bool| -> Vec<u64> {
        let mut bits = vec![0u64; words];
        for (i, r) in rules.iter().enumerate() {
            if !constrains(r) {
                set(&mut bits, i);
            }
        }
        bits
    };
    let w_local_ip = wildcard(&|r| r.local_ip.is_some());
    let w_remote_ip = wildcard(&|r| r.remote_ip.is_some());
    let w_local_port = wildcard(&|r| r.local_port.is_some());
    let w_remote_port = wildcard(&|r| r.remote_port.is_some());
    let w_exe = wildcard(&|r| r.exe.is_some());
    let w_comm = wildcard(&|r| r.comm.is_some());
    let w_uid = wildcard(&|r| r.uid.is_some());
    let w_cgroup = wildcard(&|r| r.cgroup.is_some() || r.constrains_workload());
    let ones = wildcard(&|_| false);

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

    let local_ip = ip_dimension(rules, |r| r.local_ip.as_ref(), &w_local_ip, &mut bm);
    let remote_ip = ip_dimension(rules, |r| r.remote_ip.as_ref(), &w_remote_ip, &mut bm);
    let local_ports = port_dimension(rules, |r| r.local_port.as_ref(), &w_local_port, &mut bm);
    let remote_ports = port_dimension(rules, |r| r.remote_port.as_ref(), &w_remote_port, &mut bm);
    let exe = keyed_dimension(rules, |r| r.exe.clone(), &w_exe, &mut bm);
    let comm = keyed_dimension(
        rules,
        |r| {
            r.comm.as_ref().map(|cs| {
                cs.iter()
                    .map(|c| {
                        let mut k = [0u8; 16];
                        let n = c.len().min(15);
                        k[..n].copy_from_slice(&c.as_bytes()[..n]);
                        k
                    })
                    .collect()
            })
        },
        &w_comm,
        &mut bm,
    );
    let uid = keyed_dimension(rules, |r| r.uid.clone(), &w_uid, &mut bm);

    // cgroups: every cgroup that a rule names, and every cgroup where a
    // unit or container that a rule names starts, gets the rules that match
    // it; the kernel uses the deepest such ancestor of a process's cgroup.
    check_container_prefixes(policy, tree)?;
    let roots = workload_roots(policy, tree);
    let mut entries: Vec<(String, u64)> = roots.clone();
    let mut named: Vec<&str> = rules.iter().filter_map(|r| r.cgroup.as_deref()).collect();
    named.sort_unstable();
    named.dedup();
    for path in named {
        let Some(id) = cgroup_id(path) else {
            let r = rules
                .iter()
                .find(|r| r.cgroup.as_deref() == Some(path))
                .unwrap();
            return Err(CompileError::NoCgroup {
                rule: r.name.clone(),
                line: r.line,
                path: path.to_string(),
                root: cgroup_root.to_string(),
            });
        };
        entries.push((path.to_string(), id));
    }
    entries.sort();
    entries.dedup();
    let mut cgroup = Vec::new();
    for (path, id) in &entries {
        let workload = Workload::of_cgroup(path);
        let mut bits = bm.empty();
        for (i, r) in rules.iter().enumerate() {
            if r.cgroup.as_deref().is_none_or(|c| cgroup_contains(c, path))
                && r.matches_workload(&workload)
            {
                set(&mut bits, i);
            }
        }
        cgroup.push((*id, bm.id(&bits)));
    }

    let w_remote_host = wildcard(&|r| r.remote_host.is_some());
    let hosts = host_dimension(rules, &w_remote_host, &mut bm);

    let mut wild = [0u32; dim::COUNT];
    let mut dims_used = 0u32;
    for (d, w, used) in [
        (dim::KIND, &ones, true),
        (
            dim::LOCAL_IP,
            &w_local_ip,
            rules.iter().any(|r| r.local_ip.is_some()),
        ),
        (
            dim::REMOTE_IP,
            &w_remote_ip,
            rules.iter().any(|r| r.remote_ip.is_some()),
        ),
        (
            dim::LOCAL_PORT,
            &w_local_port,
            rules.iter().any(|r| r.local_port.is_some()),
        ),
        (
            dim::REMOTE_PORT,
            &w_remote_port,
            rules.iter().any(|r| r.remote_port.is_some()),
        ),
        (dim::EXE, &w_exe, rules.iter().any(|r| r.exe.is_some())),
        (dim::COMM, &w_comm, rules.iter().any(|r| r.comm.is_some())),
        (dim::UID, &w_uid, rules.iter().any(|r| r.uid.is_some())),
        (
            dim::CGROUP,
            &w_cgroup,
            rules
                .iter()
                .any(|r| r.cgroup.is_some() || r.constrains_workload()),
        ),
        (
            dim::REMOTE_HOST,
            &w_remote_host,
            rules.iter().any(|r| r.remote_host.is_some()),
        ),
    ] {
        wild[d] = bm.id(w);
        if used {
            dims_used |= 1 << d;
        }
    }

    Ok(Compiled {
        rules: rules.len(),
        words,
        default_verdict: verdict_code(policy.default),
        dims_used,
        wild,
        bitmaps: bm.list,
        kind,
        local_ip,
        remote_ip,
        local_ports,
        remote_ports,
        exe,
        comm,
        uid,
        cgroup,
        hosts,
        workload_roots: roots,
        verdicts: rules.iter().map(|r| verdict_code(r.action)).collect(),
    })
}

/// Reasons a rule cannot be enforced by the kernel as written. The kernel
/// hooks see different things for each operation; a rule that asks for
/// what its hook cannot see would silently never match, so it is refused.
/// Returns `(rule index, message)` for each problem.
pub fn unenforceable(policy: &Policy) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, r) in policy.rules.iter().enumerate() {
        let has = |b: bool, what: &str, ops: &[Operation], why: &str| -> Option<String> {
            let hit: Vec<&str> = ops
                .iter()
                .filter(|o| r.on.contains(o))
                .map(|o| o.as_str())
                .collect();
            (b && !hit.is_empty()).then(|| {
                format!(
                    "rule {:?}: `{what}` cannot be matched on {}: {why}",
                    r.name,
                    hit.join(", ")
                )
            })
        };
        let problems = [
            has(
                r.remote_ip.is_some() || r.remote_port.is_some(),
                "remote_ip/remote_port",
                &[Operation::Bind, Operation::Listen],
                "a bound or listening socket has no remote endpoint",
            ),
            has(
                r.local_ip.is_some() || r.local_port.is_some(),
                "local_ip/local_port",
                &[Operation::Connect],
                "the kernel chooses the local address of a connection after the connect hook has decided",
            ),
            r.exe
                .iter()
                .flatten()
                .find(|p| p.len() >= crate::abi::EXE_LEN)
                .map(|p| format!("rule {:?}: exe {p:?} is longer than the {} bytes the kernel side keeps", r.name, crate::abi::EXE_LEN - 1)),
        ];
        out.extend(problems.into_iter().flatten().map(|m| (i, m)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockfilter_model::event::Endpoint;
    use sockfilter_model::policy::Subject;
    use std::path::Path;

    /// A software model of bpf/policy.h's `decide`, over the compiled maps.
    fn kernel_decide(c: &Compiled, s: &Subject, cgroup_ids: &[(&str, u64)]) -> (u32, u32) {
        let v6 = s.family == Family::Ipv6;
        let tag = if v6 { 6 } else { 4 };
        let lpm = |table: &[(Prefix, u32)], ip: IpAddr, wild: u32| {
            let addr = v6_bytes(ip);
            table
                .iter()
                .filter(|(p, _)| p.tag == tag && mask(addr, p.bits) == p.addr)
                .max_by_key(|(p, _)| p.bits)
                .map_or(wild, |(_, id)| *id)
        };
        let mut ids = c.wild;
        ids[dim::KIND] =
            c.kind[op_code(s.op) * 4 + usize::from(s.proto == Proto::Udp) * 2 + usize::from(v6)];
        if let Some(l) = s.local {
            ids[dim::LOCAL_IP] = lpm(&c.local_ip, l.ip, c.wild[dim::LOCAL_IP]);
            ids[dim::LOCAL_PORT] = c.local_ports[l.port as usize];
        }
        if let Some(r) = s.remote {
            ids[dim::REMOTE_IP] = lpm(&c.remote_ip, r.ip, c.wild[dim::REMOTE_IP]);
            ids[dim::REMOTE_PORT] = c.remote_ports[r.port as usize];
        }
        if let (Some(h), Operation::Connect, Some(_)) = (s.remote_host, s.op, s.remote) {
            if let Some(id) = host_id(&c.hosts, h) {
                ids[dim::REMOTE_HOST] = id;
            }
        }
        if let Some(e) = s.exe {
            if let Some((_, id)) = c.exe.iter().find(|(p, _)| p == e) {
                ids[dim::EXE] = *id;
            }
        }
        if let Some(u) = s.uid {
            if let Some((_, id)) = c.uid.iter().find(|(k, _)| *k == u) {
                ids[dim::UID] = *id;
            }
        }
        if let Some(cg) = s.cgroup {
            // deepest ancestor first
            let mut path = cg.to_string();
            loop {
                if let Some((_, id)) = cgroup_ids.iter().find(|(p, _)| *p == path) {
                    if let Some((_, b)) = c.cgroup.iter().find(|(k, _)| k == id) {
                        ids[dim::CGROUP] = *b;
                        break;
                    }
                }
                if path == "/" {
                    break;
                }
                path = match path.rfind('/') {
                    Some(0) => "/".into(),
                    Some(i) => path[..i].into(),
                    None => break,
                };
            }
        }
        for w in 0..c.words {
            let y = ids
                .iter()
                .fold(u64::MAX, |acc, &id| acc & c.bitmaps[id as usize][w]);
            if y != 0 {
                let rule = w * 64 + y.trailing_zeros() as usize;
                return (c.verdicts[rule], rule as u32 + 1);
            }
        }
        (c.default_verdict, 0)
    }

    fn policy(text: &str) -> Policy {
        Policy::parse(text, Path::new("test.toml")).unwrap()
    }

    fn ep(s: &str) -> Endpoint {
        let a: std::net::SocketAddr = s.parse().unwrap();
        Endpoint::new(a.ip(), a.port())
    }

    #[test]
    fn compiled_name_rules_equal_the_model() {
        let p = policy(
            r#"
default = "deny"
[[rule]]
name = "api"
action = "audit"
on = ["connect"]
remote_host = ["api.example.org"]
[[rule]]
name = "deny-ads"
action = "deny"
on = ["connect"]
remote_host = ["*.ads.example.org"]
[[rule]]
name = "org"
action = "allow"
on = ["connect"]
remote_host = ["*.example.org", "exact.test"]
remote_port = [443]
[[rule]]
name = "dns"
action = "allow"
remote_port = [53]
"#,
        );
        let c = compile(&p, |_| None, &[], "/").unwrap();
        assert_ne!(c.dims_used & (1 << dim::REMOTE_HOST), 0);
        let names = [
            None,
            Some("api.example.org"),
            Some("x.api.example.org"),
            Some("a.ads.example.org"),
            Some("ads.example.org"),
            Some("example.org"),
            Some("exact.test"),
            Some("a.exact.test"),
            Some("other.test"),
        ];
        for name in names {
            for port in [53, 443, 80] {
                let mut s = Subject::new(Operation::Connect, Proto::Tcp, Family::Ipv4);
                s.remote = Some(ep(&format!("192.0.2.1:{port}")));
                s.remote_host = name;
                let d = p.decide(&s);
                let want = (
                    verdict_code(d.action),
                    d.rule.map_or(0, |n| {
                        p.rules.iter().position(|r| r.name == n).unwrap() as u32 + 1
                    }),
                );
                assert_eq!(kernel_decide(&c, &s, &[]), want, "{name:?}:{port}");
            }
        }
    }

    #[test]
    fn compiled_decisions_equal_the_model_on_many_requests() {
        let p = policy(
            r#"
default = "audit"
[[rule]]
name = "nginx-web"
action = "allow"
on = ["listen"]
local_port = [80, 443]
exe = ["/usr/sbin/nginx"]
[[rule]]
name = "no-web"
action = "deny"
on = ["listen", "bind"]
local_port = ["80-443"]
[[rule]]
name = "lan-only"
action = "deny"
on = ["connect"]
uid = [1000]
remote_ip = ["0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/3", "::/0"]
[[rule]]
name = "inner-allowed"
action = "allow"
on = ["connect"]
remote_ip = ["10.0.0.0/8"]
[[rule]]
name = "refuse-inbound"
action = "deny"
on = ["accept"]
remote_ip = ["203.0.113.0/24", "2001:db8::/32"]
[[rule]]
name = "svc"
action = "audit"
cgroup = "/system.slice"
proto = "udp"
"#,
        );
        let cgroups = [("/system.slice", 7u64), ("/system.slice/a.service", 8)];
        let c = compile(
            &p,
            |path| cgroups.iter().find(|(p, _)| *p == path).map(|(_, id)| *id),
            &[],
            "/sys/fs/cgroup",
        )
        .unwrap();
        let mut checked = 0;
        for op in Operation::ALL {
            for proto in [Proto::Tcp, Proto::Udp] {
                for (family, ips) in [
                    (
                        Family::Ipv4,
                        vec!["10.1.2.3", "203.0.113.9", "8.8.8.8", "127.0.0.1"],
                    ),
                    (
                        Family::Ipv6,
                        vec![
                            "::ffff:10.1.2.3",
                            "2001:db8::1",
                            "::1",
                            "::ffff:203.0.113.5",
                        ],
                    ),
                ] {
                    for ip in &ips {
                        for port in [22u16, 80, 100, 443, 444, 8080] {
                            for exe in [None, Some("/usr/sbin/nginx"), Some("/usr/bin/python3")] {
                                for uid in [None, Some(0), Some(1000)] {
                                    for cg in [
                                        None,
                                        Some("/"),
                                        Some("/system.slice/a.service"),
                                        Some("/system.slicex"),
                                    ] {
                                        let ip: IpAddr = ip.parse().unwrap();
                                        let mut s = Subject::new(op, proto, family);
                                        s.local = Some(Endpoint::new(ip, port));
                                        s.remote = (op != Operation::Listen
                                            && op != Operation::Bind)
                                            .then(|| Endpoint::new(ip, port));
                                        s.exe = exe;
                                        s.uid = uid;
                                        s.cgroup = cg;
                                        let want = p.decide(&s);
                                        let want_rule = want
                                            .rule
                                            .map(|n| {
                                                p.rules.iter().position(|r| r.name == n).unwrap()
                                                    as u32
                                                    + 1
                                            })
                                            .unwrap_or(0);
                                        let got = kernel_decide(&c, &s, &cgroups);
                                        assert_eq!(
                                            got,
                                            (verdict_code(want.action), want_rule),
                                            "{s:?}"
                                        );
                                        checked += 1;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 10_000);
        let _ = ep("1.2.3.4:5");
    }

    #[test]
    fn unit_and_container_rules_compile_into_the_cgroup_dimension() {
        let id = "3f2a4c9d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f";
        let other = "a".repeat(64);
        let p = policy(&format!(
            r#"
default = "allow"
[[rule]]
name = "web-only-listens"
action = "deny"
on = ["bind"]
unit = ["web.service"]
[[rule]]
name = "trusted-container"
action = "allow"
container = ["{}"]
[[rule]]
name = "other-containers"
action = "deny"
cgroup = "/system.slice"
"#,
            &id[..12]
        ));
        let tree: Vec<(String, u64)> = [
            "/",
            "/system.slice",
            "/system.slice/web.service",
            "/system.slice/web.service/worker",
            "/system.slice/db.service",
            &format!("/system.slice/docker-{id}.scope"),
            &format!("/system.slice/docker-{other}.scope"),
            "/kubepods",
            "/kubepods/pod9c1e6f3a-2b4d-4e8f-a1b2-c3d4e5f60718",
            &format!("/kubepods/pod9c1e6f3a-2b4d-4e8f-a1b2-c3d4e5f60718/{id}"),
            "/user.slice/user-1000.slice/user@1000.service/app.slice/web.service",
        ]
        .iter()
        .enumerate()
        .map(|(i, p)| (p.to_string(), 100 + i as u64))
        .collect();
        let id_of = |path: &str| tree.iter().find(|(p, _)| p == path).map(|(_, i)| *i);
        let c = compile(&p, id_of, &tree, "/sys/fs/cgroup").unwrap();
        let roots: Vec<&str> = c.workload_roots.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            roots,
            vec![
                format!("/kubepods/pod9c1e6f3a-2b4d-4e8f-a1b2-c3d4e5f60718/{id}").as_str(),
                format!("/system.slice/docker-{id}.scope").as_str(),
                "/system.slice/web.service",
            ],
            "where the named units and containers start, and only there"
        );
        let ids: Vec<(&str, u64)> = tree.iter().map(|(p, i)| (p.as_str(), *i)).collect();
        let mut checked = 0;
        for op in [Operation::Bind, Operation::Connect] {
            for (path, _) in &tree {
                for leaf in ["", "/container", "/x/y"] {
                    let cg = format!("{path}{leaf}");
                    let mut s = Subject::new(op, Proto::Tcp, Family::Ipv4);
                    s.cgroup = Some(&cg);
                    let want = p.decide(&s);
                    let got = kernel_decide(&c, &s, &ids);
                    let want_rule = want
                        .rule
                        .map_or(0, |n| p.rules.iter().position(|r| r.name == n).unwrap() + 1);
                    assert_eq!(
                        got,
                        (verdict_code(want.action), want_rule as u32),
                        "{op} in {cg}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 66);
        // A prefix that names two running containers is refused.
        let twins: Vec<(String, u64)> = vec![
            (format!("/docker/{id}"), 1),
            (format!("/docker/{}{}", &id[..12], "0".repeat(52)), 2),
        ];
        let err = compile(&p, |_| Some(1), &twins, "/").err().unwrap();
        assert!(err.to_string().contains("prefix of several"), "{err}");
    }

    #[test]
    fn ten_thousand_rules_compile_quickly_and_share_bitmaps() {
        let mut text = String::from("default = \"allow\"\n");
        for i in 0..10_000u32 {
            text.push_str(&format!(
                "[[rule]]\nname = \"r{i}\"\naction = \"deny\"\non = [\"connect\"]\nremote_ip = [\"10.{}.{}.0/24\"]\nremote_port = [{}]\n",
                i / 256,
                i % 256,
                1000 + i % 5000
            ));
        }
        let p = policy(&text);
        let t = std::time::Instant::now();
        let c = compile(&p, |_| None, &[], "/").unwrap();
        assert!(
            t.elapsed().as_secs_f64() < 5.0,
            "compile took {:?}",
            t.elapsed()
        );
        assert_eq!(c.words, 157);
        assert!(c.remote_ip.len() >= 20_000);
    }

    #[test]
    fn rules_the_kernel_cannot_see_are_refused() {
        let p = policy(
            "[[rule]]\nname = \"a\"\naction = \"deny\"\non = [\"accept\"]\nexe = [\"/bin/x\"]\nuid = [0]\n\
             [[rule]]\nname = \"b\"\naction = \"deny\"\non = [\"listen\"]\nremote_port = [1]\n\
             [[rule]]\nname = \"c\"\naction = \"deny\"\non = [\"connect\"]\nlocal_port = [1]\n\
             [[rule]]\nname = \"ok\"\naction = \"deny\"\non = [\"connect\"]\nremote_port = [1]\nexe = [\"/bin/x\"]\n",
        );
        let bad = unenforceable(&p);
        let idx: Vec<usize> = bad.iter().map(|(i, _)| *i).collect();
        // Process fields on accept are the listener's owner's: enforceable.
        assert_eq!(idx, vec![1, 2], "{bad:?}");
        assert!(bad[0].1.contains("no remote endpoint"));
    }
}
