//! The remote host dimension: the DNS name a connection's remote address
//! was resolved from, matched against the rules' `remote_host` patterns.

use super::bitmaps::{set, Interner};
use sockfilter_model::policy::{HostPattern, Rule};

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

/// Every pattern some rule names -> bitmap id. The kernel finds only the
/// most specific pattern matching a name, so a pattern's bitmap holds every
/// rule whose patterns cover it, besides `wild` (the rules naming no host).
pub(super) fn host_dimension(
    rules: &[Rule],
    wild: &[u64],
    bm: &mut Interner,
) -> Vec<(HostPattern, u32)> {
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
