//! What a held call asks, and the answer of the decision callback.

use sockfilter_model::event::{Endpoint, Family, Owner, Proto, Verdict as Action};

/// The socket operation a held call asks for: the same operations a policy
/// decides about. `Connect` also stands for `sendto()`/`sendmsg()` to a
/// destination (a UDP "connect"); `Accept` is decided on the accepted
/// connection's peer.
pub use sockfilter_model::policy::Operation;

/// The system call that was held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Syscall {
    /// `bind(2)`.
    Bind,
    /// `listen(2)`.
    Listen,
    /// `connect(2)`.
    Connect,
    /// `accept(2)`.
    Accept,
    /// `accept4(2)`.
    Accept4,
    /// `sendto(2)` with a destination address.
    Sendto,
    /// `sendmsg(2)` with a destination address.
    Sendmsg,
    /// `sendmmsg(2)`, one message with a destination address.
    Sendmmsg,
}

/// One held call to decide: who makes it and what it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Thread-group id of the caller (what `ps` calls the PID).
    pub pid: u32,
    /// Thread id of the calling thread.
    pub tid: u32,
    /// Real user id of the caller.
    pub uid: u32,
    /// The calling thread's command name.
    pub comm: String,
    /// The caller's executable, as `/proc/PID/exe` shows it.
    pub exe: Option<String>,
    /// The caller's cgroup v2 path.
    pub cgroup: Option<String>,
    /// The caller's parent process (None for pid 1 or when unknown).
    pub ppid: Option<u32>,
    /// The parent's executable, as `/proc/PPID/exe` shows it.
    pub parent_exe: Option<std::sync::Arc<str>>,
    /// `listen`: the caller's arguments, as `/proc/PID/cmdline` shows them
    /// (at most the first 512 bytes); None for other operations.
    pub cmdline: Option<std::sync::Arc<[String]>>,
    /// What is asked.
    pub op: Operation,
    /// The system call that asks it.
    pub syscall: Syscall,
    /// TCP (stream sockets) or UDP (datagram and raw sockets).
    pub proto: Proto,
    /// The socket's address family.
    pub family: Family,
    /// The local endpoint: the address asked for by `bind`, the socket's
    /// current address otherwise (None when the kernel reports none).
    pub local: Option<Endpoint>,
    /// The remote endpoint: the destination of `connect`/`sendto`, the peer of
    /// an accepted connection; None for `bind` and `listen`.
    pub remote: Option<Endpoint>,
    /// The socket cookie (`SO_COOKIE`) of the socket concerned (for `accept`,
    /// of the accepted connection).
    pub socket: u64,
    /// `listen`: the backlog asked for.
    pub backlog: Option<u32>,
    /// `accept`: the listening socket's cookie.
    pub listener: Option<u64>,
}

impl Request {
    /// The owner record of an event about this request.
    pub fn owner(&self) -> Owner {
        Owner {
            pid: self.pid,
            uid: self.uid,
            comm: self.comm.clone(),
            exe: self.exe.clone(),
            cgroup: self.cgroup.clone(),
            ppid: self.ppid,
            parent_exe: self.parent_exe.clone(),
            cmdline: self.cmdline.clone(),
        }
    }
}

/// The answer of the decision callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Allow, deny, or allow and report as audited.
    pub action: Action,
    /// The name of the rule that decided (None for a default).
    pub rule: Option<String>,
}

impl Verdict {
    /// Let the call go ahead.
    pub fn allow() -> Self {
        Verdict {
            action: Action::Allow,
            rule: None,
        }
    }

    /// Refuse the call: it fails with `EPERM` (`accept`: `ECONNABORTED`).
    pub fn deny() -> Self {
        Verdict {
            action: Action::Deny,
            rule: None,
        }
    }

    /// Let the call go ahead, reported with verdict `audit`.
    pub fn audit() -> Self {
        Verdict {
            action: Action::Audit,
            rule: None,
        }
    }

    /// Names the rule that decided.
    pub fn with_rule(mut self, rule: impl Into<String>) -> Self {
        self.rule = Some(rule.into());
        self
    }

    /// True unless the verdict is deny.
    pub fn allows(&self) -> bool {
        self.action != Action::Deny
    }
}
