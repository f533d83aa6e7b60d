//! What a rule does ([`Action`]) and to which socket operations ([`Operation`]).

use crate::event::{EventKind, Verdict};
use std::fmt;

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
