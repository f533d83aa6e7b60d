//! One rule, the [`Subject`] it is matched against, and how it matches.

use super::{Action, Cidr, HostPattern, Operation, PortRange};
use crate::event::{Endpoint, Family, Proto};
use crate::workload::Workload;

/// One `[[rule]]` of a policy.
///
/// A field that is `None` matches anything; a list matches when any of its
/// items does (lists are never empty). A field that constrains something the
/// [`Subject`] does not know (for example `remote_ip` when `remote` is None,
/// or `exe` when `exe` is None) does not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule's name, unique in its policy; reported with the decisions it makes.
    pub name: String,
    /// What the rule does with the operations it matches.
    pub action: Action,
    /// The operations the rule applies to, deduplicated, in [`Operation::ALL`]
    /// order (all four when the file has no `on`).
    pub on: Vec<Operation>,
    /// TCP or UDP only.
    pub proto: Option<Proto>,
    /// The socket's address family (an IPv6 socket stays `Ipv6` for v4-mapped peers).
    pub family: Option<Family>,
    /// Networks the local address must be in.
    pub local_ip: Option<Vec<Cidr>>,
    /// Networks the remote address must be in.
    pub remote_ip: Option<Vec<Cidr>>,
    /// `connect` only: DNS names (or `*.domain`) that must have resolved
    /// to the remote address (the subject's `remote_host`). An address
    /// never resolved through DNS that sockfilter saw has no name and does
    /// not match.
    pub remote_host: Option<Vec<HostPattern>>,
    /// Port ranges the local port must be in.
    pub local_port: Option<Vec<PortRange>>,
    /// Port ranges the remote port must be in.
    pub remote_port: Option<Vec<PortRange>>,
    /// Absolute executable paths, compared exactly.
    pub exe: Option<Vec<String>>,
    /// Command names (at most 15 bytes each), compared exactly.
    pub comm: Option<Vec<String>>,
    /// Real user ids.
    pub uid: Option<Vec<u32>>,
    /// A cgroup v2 path; matches that cgroup and everything below it.
    pub cgroup: Option<String>,
    /// systemd units (services or scopes), compared exactly with the unit
    /// the process's cgroup path names ([`Workload::unit`]).
    pub unit: Option<Vec<String>>,
    /// Container ids, or prefixes of at least 12 lowercase hex digits,
    /// matched against the container the cgroup path names.
    pub container: Option<Vec<String>>,
    /// The 1-based line of the rule's `[[rule]]` header in the policy file.
    pub line: usize,
}

impl Rule {
    /// Whether this rule matches `subject` (every field that is present matches).
    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        self.on.contains(&subject.op)
            && self.proto.is_none_or(|p| p == subject.proto)
            && self.family.is_none_or(|f| f == subject.family)
            && ip_matches(&self.local_ip, subject.local)
            && ip_matches(&self.remote_ip, subject.remote)
            && self.remote_host.as_ref().is_none_or(|ps| {
                subject
                    .remote_host
                    .is_some_and(|h| ps.iter().any(|p| p.matches(h)))
            })
            && port_matches(&self.local_port, subject.local)
            && port_matches(&self.remote_port, subject.remote)
            && str_matches(&self.exe, subject.exe)
            && str_matches(&self.comm, subject.comm)
            && self
                .uid
                .as_ref()
                .is_none_or(|uids| subject.uid.is_some_and(|u| uids.contains(&u)))
            && self
                .cgroup
                .as_ref()
                .is_none_or(|c| subject.cgroup.is_some_and(|s| cgroup_contains(c, s)))
            && (!self.constrains_workload()
                || subject
                    .cgroup
                    .is_some_and(|c| self.matches_workload(&Workload::of_cgroup(c))))
    }

    /// Whether the rule has `unit` or `container`.
    pub fn constrains_workload(&self) -> bool {
        self.unit.is_some() || self.container.is_some()
    }

    /// Whether the unit and container a cgroup path names satisfy the
    /// rule's `unit` and `container` (true when it has neither).
    pub fn matches_workload(&self, w: &Workload) -> bool {
        self.unit
            .as_ref()
            .is_none_or(|units| w.unit.as_ref().is_some_and(|u| units.contains(u)))
            && self.container.as_ref().is_none_or(|ids| {
                w.container
                    .as_ref()
                    .is_some_and(|c| ids.iter().any(|p| c.id.starts_with(p.as_str())))
            })
    }
}

fn ip_matches(cidrs: &Option<Vec<Cidr>>, endpoint: Option<Endpoint>) -> bool {
    cidrs
        .as_ref()
        .is_none_or(|cidrs| endpoint.is_some_and(|e| cidrs.iter().any(|c| c.contains(e.ip))))
}

fn port_matches(ranges: &Option<Vec<PortRange>>, endpoint: Option<Endpoint>) -> bool {
    ranges
        .as_ref()
        .is_none_or(|ranges| endpoint.is_some_and(|e| ranges.iter().any(|r| r.contains(e.port))))
}

fn str_matches(items: &Option<Vec<String>>, value: Option<&str>) -> bool {
    items
        .as_ref()
        .is_none_or(|items| value.is_some_and(|v| items.iter().any(|i| i == v)))
}

/// Whether cgroup path `path` is `parent` or below it, comparing whole path
/// components: `/a` contains `/a` and `/a/b` but not `/ab`; `/` contains every path.
pub fn cgroup_contains(parent: &str, path: &str) -> bool {
    let parent = parent.trim_end_matches('/');
    match path.strip_prefix(parent) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// One operation to decide about: what is being done, on which socket, by whom.
///
/// Fields that are None are unknown; a rule that constrains an unknown field
/// does not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject<'a> {
    /// The operation.
    pub op: Operation,
    /// The socket's protocol.
    pub proto: Proto,
    /// The socket's address family.
    pub family: Family,
    /// The local endpoint (for `bind`, the address being bound).
    pub local: Option<Endpoint>,
    /// The remote endpoint (for `connect`, the destination; for `accept`, the peer).
    pub remote: Option<Endpoint>,
    /// The DNS name that resolved to the remote address (lowercase), when known.
    pub remote_host: Option<&'a str>,
    /// Absolute path of the process's executable.
    pub exe: Option<&'a str>,
    /// The process's command name.
    pub comm: Option<&'a str>,
    /// The process's real user id.
    pub uid: Option<u32>,
    /// The process's cgroup v2 path, as in `/proc/PID/cgroup`.
    pub cgroup: Option<&'a str>,
}

impl<'a> Subject<'a> {
    /// A subject with only the operation, protocol and family known.
    pub fn new(op: Operation, proto: Proto, family: Family) -> Subject<'a> {
        Subject {
            op,
            proto,
            family,
            local: None,
            remote: None,
            remote_host: None,
            exe: None,
            comm: None,
            uid: None,
            cgroup: None,
        }
    }
}
