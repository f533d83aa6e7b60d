//! Rules the kernel hooks cannot enforce as written.

use sockfilter_model::policy::{Operation, Policy};

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
