//! Compiling a [`Policy`] into the contents of the kernel's policy maps
//! (`bpf/policy.h`). Pure computation: the result is written to the maps by
//! [`super::Enforcer`], and is unit-tested here against `Policy::decide`.
//!
//! Scheme: rules are numbered in file order. For every dimension of a
//! request (kind, local/remote address, local/remote port, exe, comm, uid,
//! cgroup, remote host) each possible value maps to a bitmap of the rules
//! that value allows in that dimension; a rule that does not constrain the
//! dimension is in every bitmap. `unit` and `container` are functions of the
//! cgroup path, so they are compiled into the cgroup dimension: each cgroup
//! where a named unit or container starts gets an entry. The first rule set
//! in the bitmaps of all dimensions decides. Identical bitmaps are stored
//! once.
//!
//! One file per part: `bitmaps` (the bitmap store), `dimensions` (which
//! rule fields constrain which dimension; kind, port and keyed dimensions),
//! `addresses` (the LPM dimensions), `hosts` (remote host patterns),
//! `cgroups` (cgroups, units and containers) and `unenforceable` (rules
//! the kernel hooks cannot see).

mod addresses;
mod bitmaps;
mod cgroups;
mod dimensions;
mod hosts;
#[cfg(test)]
mod tests;
mod unenforceable;

pub use addresses::Prefix;
pub use cgroups::workload_roots;
pub use hosts::host_id;
pub use unenforceable::unenforceable;

use addresses::ip_dimension;
use bitmaps::Interner;
use cgroups::cgroup_dimension;
use dimensions::{comm_key, keyed_dimension, kind_dimension, port_dimension, Wildcards};
use hosts::host_dimension;
use sockfilter_model::policy::{Action, HostPattern, Operation, Policy, Rule};

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
    let mut bm = Interner::new(words);
    let unconstrained = Wildcards::of(rules, words);

    // Bitmap ids are handed out in the order the dimensions are built here;
    // the order is kept so that a policy always compiles to the same maps.
    let kind = kind_dimension(rules, &mut bm);
    let local_ip = ip_dimension(
        rules,
        |r| r.local_ip.as_ref(),
        &unconstrained[dim::LOCAL_IP],
        &mut bm,
    );
    let remote_ip = ip_dimension(
        rules,
        |r| r.remote_ip.as_ref(),
        &unconstrained[dim::REMOTE_IP],
        &mut bm,
    );
    let local_ports = port_dimension(
        rules,
        |r| r.local_port.as_ref(),
        &unconstrained[dim::LOCAL_PORT],
        &mut bm,
    );
    let remote_ports = port_dimension(
        rules,
        |r| r.remote_port.as_ref(),
        &unconstrained[dim::REMOTE_PORT],
        &mut bm,
    );
    let exe = keyed_dimension(rules, |r| r.exe.clone(), &unconstrained[dim::EXE], &mut bm);
    let comm_keys = |r: &Rule| {
        r.comm
            .as_ref()
            .map(|cs| cs.iter().map(|c| comm_key(c)).collect())
    };
    let comm = keyed_dimension(rules, comm_keys, &unconstrained[dim::COMM], &mut bm);
    let uid = keyed_dimension(rules, |r| r.uid.clone(), &unconstrained[dim::UID], &mut bm);
    let cgroups = cgroup_dimension(policy, cgroup_id, tree, cgroup_root, &mut bm)?;
    let hosts = host_dimension(rules, &unconstrained[dim::REMOTE_HOST], &mut bm);
    let wild = unconstrained.ids(&mut bm);

    Ok(Compiled {
        rules: rules.len(),
        words,
        default_verdict: verdict_code(policy.default),
        dims_used: unconstrained.used(),
        wild,
        bitmaps: bm.into_bitmaps(),
        kind,
        local_ip,
        remote_ip,
        local_ports,
        remote_ports,
        exe,
        comm,
        uid,
        cgroup: cgroups.bitmaps,
        hosts,
        workload_roots: cgroups.workload_roots,
        verdicts: rules.iter().map(|r| verdict_code(r.action)).collect(),
    })
}
