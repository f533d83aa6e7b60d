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

mod host_pattern;
mod network;
mod operation;
mod parser;
mod rule;
mod toml_tree;

pub use host_pattern::HostPattern;
pub use network::{Cidr, PortRange};
pub use operation::{Action, Operation};
pub use rule::{cgroup_contains, Rule, Subject};

use crate::event::{Family, Proto};
use parser::Parser;
use std::path::{Path, PathBuf};

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
            what: "policy",
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

/// Why a policy could not be loaded: `FILE:LINE:COLUMN: message`, or why
/// the file could not be read.
pub type PolicyError = crate::file_error::FileError;

#[cfg(test)]
mod tests;
