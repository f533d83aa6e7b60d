//! Reading a policy file: TOML with the position of every key and value,
//! validated field by field into [`Rule`]s, every problem reported as
//! `FILE:LINE:COLUMN: message`.

use super::toml_tree::{Entry, Kind, Node};
use super::{
    Action, Cidr, Family, HostPattern, Operation, Policy, PolicyError, PortRange, Proto, Rule,
};
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;

pub(super) use crate::file_error::line_col;

/// Whether `s` is a non-empty run of ASCII digits.
pub(super) fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

const RULE_KEYS: &str = "name, action, on, proto, family, local_ip, remote_ip, remote_host, local_port, remote_port, exe, comm, uid, cgroup, unit, container";

pub(super) struct Parser<'a> {
    pub(super) text: &'a str,
    pub(super) source: &'a Path,
    /// Byte offsets of every '\n', for line numbers without rescanning the
    /// text (a policy of 10,000 rules would otherwise take seconds).
    pub(super) newlines: Vec<usize>,
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

    pub(super) fn policy(&self) -> Result<Policy, PolicyError> {
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
        let mut host_span = None;
        let mut rule = Rule {
            name: String::new(),
            action: Action::Allow,
            on: Operation::ALL.to_vec(),
            proto: None,
            family: None,
            local_ip: None,
            remote_ip: None,
            remote_host: None,
            local_port: None,
            remote_port: None,
            exe: None,
            comm: None,
            uid: None,
            cgroup: None,
            unit: None,
            container: None,
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
                "remote_host" => {
                    rule.remote_host = Some(self.list(field, value, "DNS names", |item| {
                        let s = self.string(field, item, "a DNS name or \"*.domain\"")?;
                        HostPattern::parse(s).map_err(|why| {
                            self.error(&item.span, format!("`remote_host`: {s:?} {why}"))
                        })
                    })?);
                    host_span = Some(key_span.clone());
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
                "unit" => rule.unit = Some(self.list(field, value, "systemd unit names", |item| self.unit(item))?),
                "container" => {
                    rule.container = Some(self.list(field, value, "container ids", |item| {
                        self.container(item)
                    })?)
                }
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
        if let Some(span) = host_span {
            if rule.on != [Operation::Connect] {
                return Err(self.error(
                    &span,
                    format!(
                        "rule {name:?}: `remote_host` applies to connect only (names are learned for the addresses a process connects to); add on = [\"connect\"]"
                    ),
                ));
            }
        }
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

    fn unit(&self, node: &Node) -> Result<String, PolicyError> {
        let s = self.string("unit", node, "a systemd unit name, e.g. \"nginx.service\"")?;
        if crate::workload::is_unit(s) {
            return Ok(s.to_owned());
        }
        let why = if s.ends_with(".slice") {
            "is a slice, which holds no processes of its own; use `cgroup = \"/...\"` for a subtree"
        } else {
            "is not a systemd service or scope name"
        };
        Err(self.error(
            &node.span,
            format!("`unit`: {s:?} {why}; write a unit as systemd names it, e.g. \"nginx.service\" or \"session-2.scope\""),
        ))
    }

    fn container(&self, node: &Node) -> Result<String, PolicyError> {
        let s = self.string(
            "container",
            node,
            "a container id or a prefix of at least 12 hex digits",
        )?;
        let hex = s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if hex && (12..=64).contains(&s.len()) {
            return Ok(s.to_owned());
        }
        let why = if !hex && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            "has upper-case digits; container ids are lower-case hex".to_string()
        } else if !hex {
            "is not hexadecimal; a container is named by its id (64 hex digits), not its name"
                .to_string()
        } else if s.len() < 12 {
            format!(
                "has {} hex digits; write at least 12 so that it names one container",
                s.len()
            )
        } else {
            format!("has {} hex digits; a container id has 64", s.len())
        };
        Err(self.error(&node.span, format!("`container`: {s:?} {why}")))
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
