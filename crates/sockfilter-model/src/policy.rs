//! Policy files: which socket operations are allowed, denied or audited.
//!
//! A policy is a TOML file (documented field by field in `docs/policy.md`):
//!
//! ```toml
//! default = "allow"
//!
//! [[rule]]
//! name = "nginx-web"
//! action = "allow"
//! on = ["listen"]
//! local_port = [80, 443]
//! exe = ["/usr/sbin/nginx"]
//!
//! [[rule]]
//! name = "web-ports-are-nginx-only"
//! action = "deny"
//! on = ["listen"]
//! local_port = [80, 443]
//! ```
//!
//! [`Policy::parse`] / [`Policy::load`] validate a file and report the first
//! problem as a [`PolicyError`] that displays as `FILE:LINE:COLUMN: message`.
//! [`Policy::decide`] runs the rules against one [`Subject`] (an operation on a
//! socket by a process): the first rule that matches decides, and the
//! policy's `default` decides when none does.
//!
//! The parsed [`Rule`]s keep every field public and typed, so enforcement
//! back ends (the BPF maps of `sockfilter enforce`, the seccomp supervisor of
//! `sockfilter supervise`) can compile them without re-reading the file.

use crate::event::{Endpoint, EventKind, Family, Proto, Verdict};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// What a rule (or the policy default) does with a matching operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Action {
    /// Let the operation go ahead.
    #[default]
    Allow,
    /// Refuse the operation.
    Deny,
    /// Let the operation go ahead and report it.
    Audit,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 3] = [Action::Allow, Action::Deny, Action::Audit];

    /// The name used in policy files (`"allow"`, `"deny"`, `"audit"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Audit => "audit",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Action> for Verdict {
    fn from(action: Action) -> Verdict {
        match action {
            Action::Allow => Verdict::Allow,
            Action::Deny => Verdict::Deny,
            Action::Audit => Verdict::Audit,
        }
    }
}

/// A socket operation a policy decides about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// An explicit `bind()`.
    Bind,
    /// A TCP `listen()`.
    Listen,
    /// An outbound TCP connection, or a `connect()` of a UDP socket.
    Connect,
    /// Accepting an inbound TCP connection.
    Accept,
}

impl Operation {
    /// Every operation, in lifecycle order (also what a rule without `on` applies to).
    pub const ALL: [Operation; 4] = [
        Operation::Bind,
        Operation::Listen,
        Operation::Connect,
        Operation::Accept,
    ];

    /// The name used in policy files (`"bind"`, `"listen"`, `"connect"`, `"accept"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Bind => "bind",
            Operation::Listen => "listen",
            Operation::Connect => "connect",
            Operation::Accept => "accept",
        }
    }

    /// The event kind that reports this operation.
    pub fn event_kind(self) -> EventKind {
        match self {
            Operation::Bind => EventKind::Bind,
            Operation::Listen => EventKind::Listen,
            Operation::Connect => EventKind::Connect,
            Operation::Accept => EventKind::Accept,
        }
    }

    /// The operation an event reports, or None for `close` (which policies do not decide).
    pub fn from_event_kind(kind: EventKind) -> Option<Operation> {
        match kind {
            EventKind::Bind => Some(Operation::Bind),
            EventKind::Listen => Some(Operation::Listen),
            EventKind::Connect => Some(Operation::Connect),
            EventKind::Accept => Some(Operation::Accept),
            EventKind::Close => None,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
            exe: None,
            comm: None,
            uid: None,
            cgroup: None,
        }
    }
}

/// The outcome of [`Policy::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'p> {
    /// What to do.
    pub action: Action,
    /// The name of the rule that decided; None when the policy default did.
    pub rule: Option<&'p str>,
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// What happens when no rule matches (`allow` when the file does not say).
    pub default: Action,
    /// The rules, in file order; the first that matches decides.
    pub rules: Vec<Rule>,
    /// The file the policy was read from (as given to [`Policy::load`] or [`Policy::parse`]).
    pub source: PathBuf,
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: impl AsRef<Path>) -> Result<Policy, PolicyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|err| PolicyError::Io {
            path: path.to_path_buf(),
            err,
        })?;
        Policy::parse(&text, path)
    }

    /// Validates policy text; `source` is the file name used in errors and kept in
    /// [`Policy::source`].
    ///
    /// ```
    /// use sockfilter_model::policy::{Action, Policy};
    /// let p = Policy::parse("default = \"deny\"\n[[rule]]\nname = \"a\"\naction = \"allow\"\n", "p.toml".as_ref()).unwrap();
    /// assert_eq!(p.default, Action::Deny);
    /// assert_eq!(p.rules[0].line, 2);
    /// let err = Policy::parse("[[rule]]\nname = \"a\"\naction = \"permit\"\n", "p.toml".as_ref()).unwrap_err();
    /// assert!(err.to_string().starts_with("p.toml:3:10: `action`"));
    /// ```
    pub fn parse(text: &str, source: &Path) -> Result<Policy, PolicyError> {
        let newlines = text.match_indices('\n').map(|(i, _)| i).collect();
        Parser {
            text,
            source,
            newlines,
        }
        .policy()
    }

    /// The first rule that matches `subject`, if any.
    pub fn first_match(&self, subject: &Subject<'_>) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(subject))
    }

    /// Decides about `subject`: the first matching rule's action, or the default.
    pub fn decide(&self, subject: &Subject<'_>) -> Decision<'_> {
        match self.first_match(subject) {
            Some(rule) => Decision {
                action: rule.action,
                rule: Some(&rule.name),
            },
            None => Decision {
                action: self.default,
                rule: None,
            },
        }
    }

    /// The rule called `name`.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{}: cannot read policy file: {err}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        err: std::io::Error,
    },
    /// The file is not a valid policy.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// 1-based column (in characters) of the offending key or value.
        column: usize,
        /// What is wrong and what is allowed.
        message: String,
    },
}

/// `(line, column)`, both 1-based, of byte `offset` in `text`; the column counts characters.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A TOML document as a tree that keeps the byte span of every key and value.
///
/// It is read through serde the way `toml::Spanned` is: a value asks for the
/// span-carrying struct, and keys and values that toml gives no span for (the
/// inner keys of dotted keys, for example) fall back to the span of the
/// enclosing value, so every error still has a position.
mod tree {
    use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::fmt;
    use std::ops::Range;

    // The names toml's deserializer recognises for `toml::Spanned` (serde_spanned
    // 0.6, used by toml 0.8) and for datetimes.
    const SPANNED: &str = "$__serde_spanned_private_Spanned";
    const START: &str = "$__serde_spanned_private_start";
    const END: &str = "$__serde_spanned_private_end";
    const VALUE: &str = "$__serde_spanned_private_value";
    const FIELDS: &[&str] = &[START, END, VALUE];
    const DATETIME: &str = "$__toml_private_datetime";
    const UNKNOWN: Range<usize> = usize::MAX..usize::MAX;

    pub(super) struct Node {
        pub span: Range<usize>,
        pub kind: Kind,
    }

    pub(super) enum Kind {
        Str(String),
        Int(i64),
        Float,
        Bool,
        Datetime,
        Array(Vec<Node>),
        Table(Vec<Entry>),
    }

    pub(super) struct Entry {
        pub key: String,
        pub key_span: Range<usize>,
        pub value: Node,
    }

    impl Kind {
        /// "a string", "an integer", ... for messages.
        pub fn describe(&self) -> &'static str {
            match self {
                Kind::Str(_) => "a string",
                Kind::Int(_) => "an integer",
                Kind::Float => "a float",
                Kind::Bool => "a boolean",
                Kind::Datetime => "a date/time",
                Kind::Array(_) => "a list",
                Kind::Table(_) => "a table",
            }
        }
    }

    impl Node {
        /// Parses a document; the root spans the whole text.
        pub fn parse(text: &str) -> Result<Node, toml::de::Error> {
            let kind = toml::from_str::<Kind>(text)?;
            let mut root = Node { span: 0..0, kind };
            root.fill(&(0..0));
            Ok(root)
        }

        /// Gives spans toml did not provide the span of the enclosing value.
        fn fill(&mut self, parent: &Range<usize>) {
            if self.span == UNKNOWN {
                self.span = parent.clone();
            }
            match &mut self.kind {
                Kind::Array(items) => {
                    for item in items {
                        item.fill(&self.span);
                    }
                }
                Kind::Table(entries) => {
                    for entry in entries {
                        entry.value.fill(&self.span);
                        if entry.key_span == UNKNOWN {
                            entry.key_span = entry.value.span.clone();
                        }
                    }
                }
                _ => {}
            }
        }
    }

    struct Key {
        name: String,
        span: Range<usize>,
    }

    impl<'de> Deserialize<'de> for Key {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
            d.deserialize_struct(SPANNED, FIELDS, KeyVisitor)
        }
    }

    struct KeyVisitor;

    impl<'de> Visitor<'de> for KeyVisitor {
        type Value = Key;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a key")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
            Ok(Key {
                name: v.to_owned(),
                span: UNKNOWN,
            })
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
            expect_key(&mut map, START)?;
            let (span, name) = spanned_rest::<A, String>(&mut map)?;
            Ok(Key { name, span })
        }
    }

    fn expect_key<'de, A: MapAccess<'de>>(map: &mut A, name: &str) -> Result<(), A::Error> {
        match map.next_key::<String>()? {
            Some(key) if key == name => Ok(()),
            _ => Err(de::Error::custom("malformed spanned value")),
        }
    }

    /// The rest of a spanned value whose start key has been read.
    fn spanned_rest<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
        map: &mut A,
    ) -> Result<(Range<usize>, T), A::Error> {
        let start: usize = map.next_value()?;
        expect_key(map, END)?;
        let end: usize = map.next_value()?;
        expect_key(map, VALUE)?;
        let value: T = map.next_value()?;
        Ok((start..end, value))
    }

    /// A table whose first key has been read.
    fn table_rest<'de, A: MapAccess<'de>>(
        first: Option<Key>,
        map: &mut A,
    ) -> Result<Kind, A::Error> {
        if first
            .as_ref()
            .is_some_and(|k| k.name == DATETIME && k.span == UNKNOWN)
        {
            map.next_value::<IgnoredAny>()?;
            return Ok(Kind::Datetime);
        }
        let mut entries = Vec::new();
        let mut next = first;
        while let Some(key) = next {
            let value = map.next_value::<Node>()?;
            entries.push(Entry {
                key: key.name,
                key_span: key.span,
                value,
            });
            next = map.next_key::<Key>()?;
        }
        Ok(Kind::Table(entries))
    }

    impl<'de> Deserialize<'de> for Node {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
            d.deserialize_struct(SPANNED, FIELDS, NodeVisitor)
        }
    }

    impl<'de> Deserialize<'de> for Kind {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
            d.deserialize_any(KindVisitor)
        }
    }

    fn unspanned(kind: Kind) -> Node {
        Node {
            span: UNKNOWN,
            kind,
        }
    }

    /// A value that toml may or may not wrap in its span.
    struct NodeVisitor;

    impl<'de> Visitor<'de> for NodeVisitor {
        type Value = Node;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a TOML value")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
            KindVisitor.visit_str(v).map(unspanned)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
            KindVisitor.visit_i64(v).map(unspanned)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
            KindVisitor.visit_u64(v).map(unspanned)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
            KindVisitor.visit_f64(v).map(unspanned)
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
            KindVisitor.visit_bool(v).map(unspanned)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Node, A::Error> {
            KindVisitor.visit_seq(seq).map(unspanned)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
            let first = map.next_key::<Key>()?;
            if first
                .as_ref()
                .is_some_and(|k| k.name == START && k.span == UNKNOWN)
            {
                let (span, kind) = spanned_rest::<A, Kind>(&mut map)?;
                return Ok(Node { span, kind });
            }
            table_rest(first, &mut map).map(unspanned)
        }
    }

    /// A value, without its span.
    struct KindVisitor;

    impl<'de> Visitor<'de> for KindVisitor {
        type Value = Kind;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a TOML value")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
            Ok(Kind::Str(v.to_owned()))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Kind, E> {
            Ok(Kind::Int(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Kind, E> {
            Ok(Kind::Int(i64::try_from(v).unwrap_or(i64::MAX)))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Kind, E> {
            Ok(Kind::Float)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Kind, E> {
            Ok(Kind::Bool)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<Node>()? {
                items.push(item);
            }
            Ok(Kind::Array(items))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
            let first = map.next_key::<Key>()?;
            table_rest(first, &mut map)
        }
    }
}

use tree::{Entry, Kind, Node};

const RULE_KEYS: &str = "name, action, on, proto, family, local_ip, remote_ip, local_port, remote_port, exe, comm, uid, cgroup";

struct Parser<'a> {
    text: &'a str,
    source: &'a Path,
    /// Byte offsets of every '\n', for line numbers without rescanning the
    /// text (a policy of 10,000 rules would otherwise take seconds).
    newlines: Vec<usize>,
}

impl Parser<'_> {
    /// 1-based line of byte `offset`.
    fn line_of(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&nl| nl < offset) + 1
    }

    fn error(&self, span: &Range<usize>, message: String) -> PolicyError {
        let (line, column) = line_col(self.text, span.start);
        PolicyError::Invalid {
            path: self.source.to_path_buf(),
            line,
            column,
            message,
        }
    }

    /// The source text of a value, for messages: its first line, at most 40 characters.
    fn raw(&self, node: &Node) -> String {
        let text = self.text.get(node.span.clone()).unwrap_or("").trim();
        let first = text.lines().next().unwrap_or("");
        if first.len() < text.len() || first.chars().count() > 40 {
            format!("{}...", first.chars().take(40).collect::<String>())
        } else {
            first.to_owned()
        }
    }

    fn policy(&self) -> Result<Policy, PolicyError> {
        let root = Node::parse(self.text).map_err(|e| {
            let message = e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            self.error(
                &e.span().unwrap_or(0..0),
                format!("invalid TOML: {message}"),
            )
        })?;
        let Kind::Table(entries) = &root.kind else {
            return Err(self.error(&root.span, "a policy must be a TOML table".into()));
        };
        let mut default = Action::Allow;
        let mut rules = Vec::new();
        for entry in entries {
            match entry.key.as_str() {
                "default" => default = self.action("default", &entry.value)?,
                "rule" => rules = self.rules(entry)?,
                other => {
                    let hint = if other == "rules" {
                        " (did you mean [[rule]]?)"
                    } else {
                        ""
                    };
                    return Err(self.error(
                        &entry.key_span,
                        format!(
                            "unknown top-level key `{other}`{hint}; a policy has `default` \
                             (\"allow\", \"deny\" or \"audit\") and [[rule]] tables"
                        ),
                    ));
                }
            }
        }
        Ok(Policy {
            default,
            rules,
            source: self.source.to_path_buf(),
        })
    }

    fn rules(&self, entry: &Entry) -> Result<Vec<Rule>, PolicyError> {
        let items =
            match &entry.value.kind {
                Kind::Array(items) => items,
                Kind::Table(_) => return Err(self.error(
                    &entry.key_span,
                    "`rule` must be written [[rule]] (double brackets, one per rule), not [rule]"
                        .into(),
                )),
                other => {
                    return Err(self.error(
                        &entry.value.span,
                        format!("`rule` must be [[rule]] tables, not {}", other.describe()),
                    ))
                }
            };
        let mut rules = Vec::with_capacity(items.len());
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (index, item) in items.iter().enumerate() {
            let Kind::Table(entries) = &item.kind else {
                return Err(self.error(
                    &item.span,
                    format!(
                        "each rule must be a table ([[rule]]), not {}",
                        item.kind.describe()
                    ),
                ));
            };
            let (rule, name_span) = self.rule(index, &item.span, entries)?;
            if let Some(first) = seen.get(&rule.name) {
                return Err(self.error(
                    &name_span,
                    format!(
                        "`name`: duplicate rule name {:?}; the rule on line {first} already uses it \
                         (rule names must be unique)",
                        rule.name
                    ),
                ));
            }
            seen.insert(rule.name.clone(), rule.line);
            rules.push(rule);
        }
        Ok(rules)
    }

    fn rule(
        &self,
        index: usize,
        span: &Range<usize>,
        entries: &[Entry],
    ) -> Result<(Rule, Range<usize>), PolicyError> {
        let mut name = None;
        let mut action = None;
        let mut rule = Rule {
            name: String::new(),
            action: Action::Allow,
            on: Operation::ALL.to_vec(),
            proto: None,
            family: None,
            local_ip: None,
            remote_ip: None,
            local_port: None,
            remote_port: None,
            exe: None,
            comm: None,
            uid: None,
            cgroup: None,
            line: self.line_of(span.start),
        };
        for Entry {
            key,
            key_span,
            value,
        } in entries
        {
            let field = key.as_str();
            match field {
                "name" => {
                    let s = self.string(field, value, "a unique rule name")?;
                    if s.trim().is_empty() {
                        return Err(self.error(&value.span, "`name` must not be empty".into()));
                    }
                    name = Some((s.to_owned(), value.span.clone()));
                }
                "action" => action = Some(self.action(field, value)?),
                "on" => {
                    let ops = self.list(field, value, "operations", |item| {
                        self.keyword(field, item, "operation", &Operation::ALL.map(|o| (o.as_str(), o)))
                    })?;
                    rule.on = Operation::ALL
                        .into_iter()
                        .filter(|o| ops.contains(o))
                        .collect();
                }
                "proto" => {
                    rule.proto = Some(self.keyword(
                        field,
                        value,
                        "protocol",
                        &[("tcp", Proto::Tcp), ("udp", Proto::Udp)],
                    )?)
                }
                "family" => {
                    rule.family = Some(self.keyword(
                        field,
                        value,
                        "address family",
                        &[("ipv4", Family::Ipv4), ("ipv6", Family::Ipv6)],
                    )?)
                }
                "local_ip" | "remote_ip" => {
                    let cidrs = Some(self.list(field, value, "CIDRs", |item| self.cidr(field, item))?);
                    if field == "local_ip" {
                        rule.local_ip = cidrs;
                    } else {
                        rule.remote_ip = cidrs;
                    }
                }
                "local_port" | "remote_port" => {
                    let ports = Some(self.list(field, value, "ports", |item| self.port(field, item))?);
                    if field == "local_port" {
                        rule.local_port = ports;
                    } else {
                        rule.remote_port = ports;
                    }
                }
                "exe" => {
                    rule.exe = Some(self.list(field, value, "absolute paths", |item| {
                        let s = self.string(field, item, "an absolute executable path")?;
                        if !s.starts_with('/') {
                            return Err(self.error(
                                &item.span,
                                format!(
                                    "`exe`: {s:?} is not an absolute path; `exe` matches the full path \
                                     of the executable (e.g. \"/usr/sbin/nginx\"); use `comm` to match \
                                     a command name"
                                ),
                            ));
                        }
                        Ok(s.to_owned())
                    })?)
                }
                "comm" => {
                    rule.comm = Some(self.list(field, value, "command names", |item| {
                        self.comm(item)
                    })?)
                }
                "uid" => {
                    rule.uid = Some(self.list(field, value, "user ids", |item| match item.kind {
                        Kind::Int(n) if (0..=i64::from(u32::MAX)).contains(&n) => Ok(n as u32),
                        Kind::Int(n) => Err(self.error(
                            &item.span,
                            format!("`uid`: {n} is not a user id; expected an integer from 0 to {}", u32::MAX),
                        )),
                        ref other => Err(self.error(
                            &item.span,
                            format!("`uid`: expected an integer user id, not {} ({})", other.describe(), self.raw(item)),
                        )),
                    })?)
                }
                "cgroup" => rule.cgroup = Some(self.cgroup(value)?),
                other => {
                    let which = match entries.iter().find(|e| e.key == "name") {
                        Some(Entry {
                            value:
                                Node {
                                    kind: Kind::Str(n), ..
                                },
                            ..
                        }) => format!("rule {n:?}"),
                        _ => format!("rule #{}", index + 1),
                    };
                    return Err(self.error(
                        key_span,
                        format!("unknown key `{other}` in {which}; a rule may have: {RULE_KEYS}"),
                    ));
                }
            }
        }
        let Some((name, name_span)) = name else {
            return Err(self.error(
                span,
                format!(
                    "rule #{} has no `name`; every rule needs a unique name, e.g. name = \"allow-ssh\"",
                    index + 1
                ),
            ));
        };
        let Some(action) = action else {
            return Err(self.error(
                span,
                format!(
                    "rule {name:?} has no `action`; expected action = \"allow\", \"deny\" or \"audit\""
                ),
            ));
        };
        rule.name = name;
        rule.action = action;
        Ok((rule, name_span))
    }

    fn string<'n>(&self, field: &str, node: &'n Node, what: &str) -> Result<&'n str, PolicyError> {
        match &node.kind {
            Kind::Str(s) => Ok(s),
            other => Err(self.error(
                &node.span,
                format!(
                    "`{field}`: expected a string ({what}), not {} ({})",
                    other.describe(),
                    self.raw(node)
                ),
            )),
        }
    }

    fn action(&self, field: &str, node: &Node) -> Result<Action, PolicyError> {
        self.keyword(field, node, "action", &Action::ALL.map(|a| (a.as_str(), a)))
    }

    /// A string that must be one of `options`.
    fn keyword<T: Copy>(
        &self,
        field: &str,
        node: &Node,
        noun: &str,
        options: &[(&str, T)],
    ) -> Result<T, PolicyError> {
        let expected = options
            .iter()
            .map(|(name, _)| format!("{name:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let Kind::Str(s) = &node.kind else {
            return Err(self.error(
                &node.span,
                format!(
                    "`{field}`: expected a string, one of {expected}; not {} ({})",
                    node.kind.describe(),
                    self.raw(node)
                ),
            ));
        };
        options
            .iter()
            .find(|(name, _)| name == s)
            .map(|&(_, v)| v)
            .ok_or_else(|| {
                self.error(
                    &node.span,
                    format!("`{field}`: unknown {noun} {s:?}; expected one of {expected}"),
                )
            })
    }

    /// A non-empty list, each item converted by `item`.
    fn list<T>(
        &self,
        field: &str,
        node: &Node,
        what: &str,
        item: impl FnMut(&Node) -> Result<T, PolicyError>,
    ) -> Result<Vec<T>, PolicyError> {
        match &node.kind {
            Kind::Array(items) if items.is_empty() => Err(self.error(
                &node.span,
                format!("`{field}` is an empty list, which matches nothing; remove the field to match anything"),
            )),
            Kind::Array(items) => items.iter().map(item).collect(),
            Kind::Table(_) => Err(self.error(
                &node.span,
                format!("`{field}` must be a list of {what}, not a table"),
            )),
            _ => Err(self.error(
                &node.span,
                format!(
                    "`{field}` must be a list of {what}; write {field} = [{}]",
                    self.raw(node)
                ),
            )),
        }
    }

    fn cidr(&self, field: &str, node: &Node) -> Result<Cidr, PolicyError> {
        let s = self.string(field, node, "a CIDR such as \"10.0.0.0/8\" or an address")?;
        s.parse().map_err(|why| {
            self.error(
                &node.span,
                format!("`{field}`: {s:?} is not a valid CIDR: {why}"),
            )
        })
    }

    fn port(&self, field: &str, node: &Node) -> Result<PortRange, PolicyError> {
        let bad_port = |n: &dyn fmt::Display| {
            self.error(
                &node.span,
                format!("`{field}`: {n} is not a port number; ports are 0-65535"),
            )
        };
        match &node.kind {
            Kind::Int(n) => u16::try_from(*n)
                .map(PortRange::single)
                .map_err(|_| bad_port(n)),
            Kind::Str(s) => {
                let Some((lo, hi)) = s
                    .split_once('-')
                    .filter(|(lo, hi)| is_digits(lo) && is_digits(hi))
                else {
                    let message = if is_digits(s) {
                        format!("`{field}`: {s:?} is a string; write a single port as a number without quotes ({s}), or a range as \"LO-HI\"")
                    } else {
                        format!("`{field}`: {s:?} is not a port range; write \"LO-HI\" with port numbers, e.g. \"8000-8999\"")
                    };
                    return Err(self.error(&node.span, message));
                };
                let parse = |p: &str| {
                    p.parse::<u16>().map_err(|_| {
                        self.error(
                            &node.span,
                            format!("`{field}`: range {s:?}: {p} is not a port number; ports are 0-65535"),
                        )
                    })
                };
                let (lo, hi) = (parse(lo)?, parse(hi)?);
                if lo > hi {
                    return Err(self.error(
                        &node.span,
                        format!("`{field}`: range {s:?} is backwards: {lo} is greater than {hi}; write \"{hi}-{lo}\""),
                    ));
                }
                Ok(PortRange { lo, hi })
            }
            other => Err(self.error(
                &node.span,
                format!(
                    "`{field}`: expected a port number or a \"LO-HI\" range string, not {} ({})",
                    other.describe(),
                    self.raw(node)
                ),
            )),
        }
    }

    fn comm(&self, node: &Node) -> Result<String, PolicyError> {
        let s = self.string("comm", node, "a command name")?;
        if s.is_empty() {
            return Err(self.error(&node.span, "`comm`: a command name cannot be empty".into()));
        }
        if s.len() > 15 {
            let mut end = 15;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            return Err(self.error(
                &node.span,
                format!(
                    "`comm`: {s:?} is {} bytes long, but the kernel truncates comm to 15 bytes, \
                     so it would never match; write {:?}",
                    s.len(),
                    &s[..end]
                ),
            ));
        }
        Ok(s.to_owned())
    }

    fn cgroup(&self, node: &Node) -> Result<String, PolicyError> {
        let s = self.string(
            "cgroup",
            node,
            "one cgroup v2 path, e.g. \"/system.slice/nginx.service\"",
        )?;
        let problem = if !s.starts_with('/') {
            Some("must start with \"/\", as paths in /proc/PID/cgroup do")
        } else if s.len() > 1 && s.ends_with('/') {
            Some("must not end with \"/\"")
        } else if s.contains("//") {
            Some("has an empty path component (\"//\")")
        } else {
            None
        };
        match problem {
            Some(p) => Err(self.error(
                &node.span,
                format!("`cgroup`: {s:?} {p}; write a cgroup v2 path such as \"/system.slice/nginx.service\""),
            )),
            None => Ok(s.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn parse(text: &str) -> Policy {
        Policy::parse(text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(text: &str) -> String {
        Policy::parse(text, Path::new("t.toml"))
            .expect_err("policy should be invalid")
            .to_string()
    }

    fn rule(body: &str) -> Rule {
        parse(&format!(
            "[[rule]]\nname = \"r\"\naction = \"deny\"\n{body}\n"
        ))
        .rules
        .remove(0)
    }

    fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> Option<Endpoint> {
        Some(Endpoint::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port))
    }

    fn ep(ip: &str, port: u16) -> Option<Endpoint> {
        Some(Endpoint::new(ip.parse().unwrap(), port))
    }

    fn tcp4(op: Operation) -> Subject<'static> {
        Subject::new(op, Proto::Tcp, Family::Ipv4)
    }

    #[test]
    fn empty_policy_allows() {
        let p = parse("");
        assert_eq!(p.default, Action::Allow);
        assert!(p.rules.is_empty());
        let d = p.decide(&tcp4(Operation::Connect));
        assert_eq!(
            d,
            Decision {
                action: Action::Allow,
                rule: None
            }
        );
    }

    #[test]
    fn default_is_parsed() {
        for a in Action::ALL {
            assert_eq!(parse(&format!("default = \"{a}\"")).default, a);
        }
        assert_eq!(
            err("default = \"block\""),
            "t.toml:1:11: `default`: unknown action \"block\"; expected one of \"allow\", \"deny\", \"audit\""
        );
        assert!(err("default = 1").starts_with("t.toml:1:11: `default`: expected a string"));
    }

    #[test]
    fn every_field_is_parsed() {
        let r = rule(
            r#"on = ["connect", "bind", "connect"]
proto = "udp"
family = "ipv6"
local_ip = ["10.0.0.0/8", "::1"]
remote_ip = ["192.168.1.7", "fe80::/10"]
local_port = [53, "1000-2000"]
remote_port = [0, 65535]
exe = ["/usr/bin/dig"]
comm = ["dig", "systemd-resolve"]
uid = [0, 4294967295]
cgroup = "/system.slice/x.service""#,
        );
        assert_eq!(r.name, "r");
        assert_eq!(r.action, Action::Deny);
        assert_eq!(r.line, 1);
        assert_eq!(r.on, vec![Operation::Bind, Operation::Connect]);
        assert_eq!(r.proto, Some(Proto::Udp));
        assert_eq!(r.family, Some(Family::Ipv6));
        let ips = |v: &Option<Vec<Cidr>>| {
            v.as_ref()
                .unwrap()
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(ips(&r.local_ip), ["10.0.0.0/8", "::1/128"]);
        assert_eq!(ips(&r.remote_ip), ["192.168.1.7/32", "fe80::/10"]);
        assert_eq!(
            r.local_port,
            Some(vec![
                PortRange::single(53),
                PortRange { lo: 1000, hi: 2000 }
            ])
        );
        assert_eq!(
            r.remote_port,
            Some(vec![PortRange::single(0), PortRange::single(65535)])
        );
        assert_eq!(r.exe, Some(vec!["/usr/bin/dig".to_owned()]));
        assert_eq!(
            r.comm,
            Some(vec!["dig".to_owned(), "systemd-resolve".to_owned()])
        );
        assert_eq!(r.uid, Some(vec![0, u32::MAX]));
        assert_eq!(r.cgroup.as_deref(), Some("/system.slice/x.service"));
    }

    #[test]
    fn absent_fields_match_anything() {
        let r = rule("");
        assert_eq!(r.on, Operation::ALL.to_vec());
        assert!(r.matches(&tcp4(Operation::Accept)));
        assert!(r.matches(&Subject::new(Operation::Bind, Proto::Udp, Family::Ipv6)));
    }

    #[test]
    fn inline_rule_tables_are_accepted() {
        let p = parse("rule = [{ name = \"a\", action = \"audit\" }]");
        assert_eq!(p.rules[0].action, Action::Audit);
    }

    #[test]
    fn rule_lines_are_recorded() {
        let p = parse("default = \"deny\"\n\n[[rule]]\nname = \"a\"\naction = \"allow\"\n\n# c\n[[rule]]\nname = \"b\"\naction = \"allow\"\n");
        assert_eq!(p.rules.iter().map(|r| r.line).collect::<Vec<_>>(), [3, 8]);
    }

    #[test]
    fn errors_point_at_the_offending_key_or_value() {
        let head = "[[rule]]\nname = \"r\"\naction = \"deny\"\n";
        let e = |body: &str| err(&format!("{head}{body}\n"));
        assert!(e("acton = \"deny\"").starts_with("t.toml:4:1: unknown key `acton` in rule \"r\""));
        assert!(
            err("defualt = \"deny\"").starts_with("t.toml:1:1: unknown top-level key `defualt`")
        );
        assert!(err("[[rules]]\nname = \"a\"").contains("did you mean [[rule]]?"));
        assert!(err("[rule]\nname = \"a\"").contains("must be written [[rule]]"));
        assert_eq!(
            e("local_ip = [\"10.0.0.0/8\", \"10.0.0.0/33\"]"),
            "t.toml:4:27: `local_ip`: \"10.0.0.0/33\" is not a valid CIDR: prefix length /33 is longer than 32 bits, the most an IPv4 address has"
        );
        assert!(e("remote_ip = [\"10.0.0.1/8\"]").contains("did you mean \"10.0.0.0/8\"?"));
        assert!(e("remote_ip = [\"nope\"]").contains("\"nope\" is not an IPv4 or IPv6 address"));
        assert!(e("local_port = [\"90-80\"]").starts_with(
            "t.toml:4:15: `local_port`: range \"90-80\" is backwards: 90 is greater than 80; write \"80-90\""
        ));
        assert!(e("local_port = [\"1-70000\"]").starts_with(
            "t.toml:4:15: `local_port`: range \"1-70000\": 70000 is not a port number"
        ));
        assert!(
            e("remote_port = [70000]").contains("70000 is not a port number; ports are 0-65535")
        );
        assert!(e("remote_port = [-1]").contains("-1 is not a port number"));
        assert!(e("remote_port = [\"80\"]").contains("without quotes (80)"));
        assert!(e("remote_port = [\"x-y\"]").contains("is not a port range"));
        assert!(e("remote_port = 80").contains("must be a list of ports; write remote_port = [80]"));
        assert_eq!(
            e("exe = []"),
            "t.toml:4:7: `exe` is an empty list, which matches nothing; remove the field to match anything"
        );
        assert!(e("exe = [\"nginx\"]").contains("not an absolute path"));
        assert!(e("comm = [\"systemd-resolved\"]").contains(
            "is 16 bytes long, but the kernel truncates comm to 15 bytes, so it would never match; write \"systemd-resolve\""
        ));
        assert!(e("uid = [-3]").contains("`uid`: -3 is not a user id"));
        assert!(e("uid = [\"root\"]").contains("expected an integer user id, not a string"));
        assert!(e("cgroup = \"system.slice\"").contains("must start with \"/\""));
        assert!(e("cgroup = \"/a/\"").contains("must not end with \"/\""));
        assert!(e("cgroup = [\"/a\"]").contains("`cgroup`: expected a string"));
        assert!(e("[rule.proto]\nx = 1").contains("not a table ([rule.proto]...)"));
        assert!(e("on = [\"send\"]").contains("unknown operation \"send\""));
        assert!(e("proto = \"sctp\"").contains("unknown protocol \"sctp\""));
        assert!(e("family = \"inet\"").contains("unknown address family \"inet\""));
        assert!(e("when = 1999-01-01").starts_with("t.toml:4:1: unknown key `when`"));
        assert!(e("proto = 1999-01-01").contains("not a date/time (1999-01-01)"));
        assert!(e("local.ip = 1").starts_with("t.toml:4:1: unknown key `local`"));
        assert!(e("name.x = 1").starts_with("t.toml:4:1: invalid TOML"));
        assert_eq!(
            err("[[rule]]\naction = \"deny\"\n"),
            "t.toml:1:1: rule #1 has no `name`; every rule needs a unique name, e.g. name = \"allow-ssh\""
        );
        assert!(
            err("[[rule]]\nname = \"x\"\n").starts_with("t.toml:1:1: rule \"x\" has no `action`")
        );
        assert!(err("x = ").starts_with("t.toml:1:5: invalid TOML"));
    }

    #[test]
    fn duplicate_names_point_at_the_second() {
        let text = "[[rule]]\nname = \"a\"\naction = \"deny\"\n\n[[rule]]\nname = \"a\"\naction = \"allow\"\n";
        assert_eq!(
            err(text),
            "t.toml:6:8: `name`: duplicate rule name \"a\"; the rule on line 1 already uses it (rule names must be unique)"
        );
    }

    #[test]
    fn first_match_wins_and_default_decides_the_rest() {
        let p = parse(
            r#"default = "audit"
[[rule]]
name = "ssh"
action = "allow"
local_port = [22]
[[rule]]
name = "no-listen"
action = "deny"
on = ["listen"]
"#,
        );
        let mut s = tcp4(Operation::Listen);
        s.local = v4(0, 0, 0, 0, 22);
        assert_eq!(
            p.decide(&s),
            Decision {
                action: Action::Allow,
                rule: Some("ssh")
            }
        );
        s.local = v4(0, 0, 0, 0, 23);
        assert_eq!(
            p.decide(&s),
            Decision {
                action: Action::Deny,
                rule: Some("no-listen")
            }
        );
        s.op = Operation::Connect;
        assert_eq!(
            p.decide(&s),
            Decision {
                action: Action::Audit,
                rule: None
            }
        );
        assert_eq!(p.first_match(&s), None);
        assert_eq!(p.rule("ssh").unwrap().line, 2);
    }

    #[test]
    fn unknown_subject_fields_do_not_match_constraints() {
        let s = tcp4(Operation::Connect);
        for body in [
            "remote_ip = [\"0.0.0.0/0\"]",
            "local_ip = [\"0.0.0.0/0\"]",
            "remote_port = [\"0-65535\"]",
            "local_port = [\"0-65535\"]",
            "exe = [\"/bin/x\"]",
            "comm = [\"x\"]",
            "uid = [0]",
            "cgroup = \"/\"",
        ] {
            assert!(
                !rule(body).matches(&s),
                "{body} matched an unknown subject field"
            );
        }
        let mut known = s;
        known.remote = v4(1, 2, 3, 4, 5);
        known.local = v4(1, 2, 3, 4, 5);
        known.exe = Some("/bin/x");
        known.comm = Some("x");
        known.uid = Some(0);
        known.cgroup = Some("/user.slice");
        let p = parse(
            "[[rule]]\nname = \"all\"\naction = \"deny\"\nremote_ip = [\"0.0.0.0/0\"]\nlocal_ip = [\"0.0.0.0/0\"]\n\
             remote_port = [\"0-65535\"]\nlocal_port = [\"0-65535\"]\nexe = [\"/bin/x\"]\ncomm = [\"x\"]\nuid = [0]\ncgroup = \"/\"\n",
        );
        assert_eq!(p.decide(&known).rule, Some("all"));
        assert_eq!(p.decide(&s).rule, None);
    }

    #[test]
    fn list_fields_match_any_item() {
        let r = rule("exe = [\"/a\", \"/b\"]\nuid = [1, 2]\ncomm = [\"x\", \"y\"]");
        let mut s = tcp4(Operation::Bind);
        s.exe = Some("/b");
        s.uid = Some(2);
        s.comm = Some("x");
        assert!(r.matches(&s));
        s.exe = Some("/b/c");
        assert!(!r.matches(&s));
        s.exe = Some("/a");
        s.uid = Some(3);
        assert!(!r.matches(&s));
    }

    #[test]
    fn proto_and_family_must_match() {
        let r = rule("proto = \"udp\"\nfamily = \"ipv6\"");
        assert!(r.matches(&Subject::new(Operation::Bind, Proto::Udp, Family::Ipv6)));
        assert!(!r.matches(&Subject::new(Operation::Bind, Proto::Tcp, Family::Ipv6)));
        assert!(!r.matches(&Subject::new(Operation::Bind, Proto::Udp, Family::Ipv4)));
    }

    #[test]
    fn cgroup_matches_its_subtree_by_component() {
        assert!(cgroup_contains("/a", "/a"));
        assert!(cgroup_contains("/a", "/a/b"));
        assert!(cgroup_contains("/a", "/a/b/c"));
        assert!(!cgroup_contains("/a", "/ab"));
        assert!(!cgroup_contains("/a/b", "/a"));
        assert!(cgroup_contains("/", "/anything/at/all"));
        assert!(cgroup_contains("/", "/"));
        let r = rule("cgroup = \"/system.slice/nginx.service\"");
        let mut s = tcp4(Operation::Listen);
        s.cgroup = Some("/system.slice/nginx.service");
        assert!(r.matches(&s));
        s.cgroup = Some("/system.slice/nginx.service/worker");
        assert!(r.matches(&s));
        s.cgroup = Some("/system.slice/nginx.service2");
        assert!(!r.matches(&s));
    }

    #[test]
    fn ipv4_cidrs_match_v4_mapped_addresses_only_through_the_embedded_address() {
        let r = rule("remote_ip = [\"10.0.0.0/8\"]");
        let mut s = Subject::new(Operation::Connect, Proto::Tcp, Family::Ipv6);
        s.remote = ep("::ffff:10.9.8.7", 443);
        assert!(r.matches(&s));
        s.remote = ep("::ffff:11.9.8.7", 443);
        assert!(!r.matches(&s));
        // Not v4-mapped: an IPv4 CIDR never matches a real IPv6 address.
        s.remote = ep("::a09:807", 443);
        assert!(!r.matches(&s));
        s.remote = ep("64:ff9b::a09:807", 443);
        assert!(!r.matches(&s));
        // An IPv6 CIDR never matches an IPv4 address.
        let r6 = rule("remote_ip = [\"::/0\"]");
        let mut s4 = tcp4(Operation::Connect);
        s4.remote = v4(10, 0, 0, 1, 1);
        assert!(!r6.matches(&s4));
        // ... but matches a v4-mapped address, which is an IPv6 address.
        assert!(r6.matches(&s));
        let zero: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(zero.contains(IpAddr::V4(Ipv4Addr::BROADCAST)));
        assert!(!zero.contains(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
    }

    #[test]
    fn cidr_parsing() {
        let c: Cidr = "192.168.0.0/16".parse().unwrap();
        assert_eq!(
            (c.addr(), c.prefix_len(), c.is_ipv4()),
            ("192.168.0.0".parse().unwrap(), 16, true)
        );
        assert!(c.contains("192.168.255.255".parse().unwrap()));
        assert!(!c.contains("192.169.0.0".parse().unwrap()));
        let c: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(c.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!c.contains("2001:db9::".parse().unwrap()));
        assert_eq!("fe80::1".parse::<Cidr>().unwrap().prefix_len(), 128);
        assert!("::/129".parse::<Cidr>().is_err());
        assert!("1.2.3.4/".parse::<Cidr>().is_err());
        assert!("1.2.3.4/x".parse::<Cidr>().is_err());
        assert!("1.2.3.4/-1".parse::<Cidr>().is_err());
        assert!("1.2.3.4/300".parse::<Cidr>().is_err());
        assert!("2001:db8::1/32".parse::<Cidr>().is_err());
    }

    #[test]
    fn port_ranges_are_inclusive() {
        let r = rule("local_port = [\"8000-8010\", 22]");
        let mut s = tcp4(Operation::Bind);
        for (port, hit) in [
            (7999, false),
            (8000, true),
            (8005, true),
            (8010, true),
            (8011, false),
            (22, true),
            (23, false),
        ] {
            s.local = v4(127, 0, 0, 1, port);
            assert_eq!(r.matches(&s), hit, "port {port}");
        }
        assert_eq!(PortRange { lo: 1, hi: 2 }.to_string(), "1-2");
        assert_eq!(PortRange::single(80).to_string(), "80");
        assert_eq!(
            rule("local_port = [\"5-5\"]").local_port,
            Some(vec![PortRange::single(5)])
        );
    }

    #[test]
    fn loopback_example_from_the_docs() {
        let p = parse(
            r#"[[rule]]
name = "sshd-may-listen"
action = "allow"
on = ["listen"]
exe = ["/usr/sbin/sshd"]

[[rule]]
name = "loopback-listeners"
action = "allow"
on = ["listen"]
local_ip = ["127.0.0.0/8", "::1"]

[[rule]]
name = "no-public-listeners"
action = "deny"
on = ["listen"]
"#,
        );
        let listen = |family, ip: &str, exe| {
            let mut s = Subject::new(Operation::Listen, Proto::Tcp, family);
            s.local = ep(ip, 8080);
            s.exe = exe;
            p.decide(&s).rule.map(str::to_owned)
        };
        let six = Family::Ipv6;
        let four = Family::Ipv4;
        assert_eq!(
            listen(six, "::ffff:127.0.0.1", None).as_deref(),
            Some("loopback-listeners")
        );
        assert_eq!(
            listen(six, "::1", None).as_deref(),
            Some("loopback-listeners")
        );
        assert_eq!(
            listen(four, "127.0.0.53", None).as_deref(),
            Some("loopback-listeners")
        );
        assert_eq!(
            listen(six, "::", None).as_deref(),
            Some("no-public-listeners")
        );
        assert_eq!(
            listen(four, "0.0.0.0", None).as_deref(),
            Some("no-public-listeners")
        );
        assert_eq!(
            listen(six, "::", Some("/usr/sbin/sshd")).as_deref(),
            Some("sshd-may-listen")
        );
    }

    #[test]
    fn columns_count_characters() {
        assert_eq!(line_col("ab\ncdé f", 9), (2, 6));
        assert_eq!(line_col("x", 0), (1, 1));
        assert_eq!(line_col("x", 99), (1, 2));
    }

    #[test]
    fn actions_convert_to_verdicts() {
        assert_eq!(Verdict::from(Action::Audit), Verdict::Audit);
        assert_eq!(Operation::from_event_kind(EventKind::Close), None);
        assert_eq!(
            Operation::from_event_kind(EventKind::Accept),
            Some(Operation::Accept)
        );
    }

    #[test]
    fn load_names_a_missing_file() {
        let e = Policy::load("/nonexistent/policy.toml").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/policy.toml: cannot read policy file: "),
            "{e}"
        );
    }
}
