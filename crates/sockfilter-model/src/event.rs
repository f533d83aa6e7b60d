//! Socket lifecycle events and their JSON contract.
//!
//! One [`Event`] is one step of one socket's life: `bind`, `listen`,
//! `connect`, `accept` or `close`. [`Event::to_json`] writes the shape that
//! `sockfilter watch --json` prints; its field names and meanings are a
//! contract with tools outside this project and must never change (fields may
//! be added).

use crate::json_write::{push_ip, push_json_str, push_rfc3339_micros, push_u64};
use crate::workload::Workload;
use serde_json::{json, Map, Value};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

/// Which step of a socket's life an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// An explicit `bind()` of a TCP or UDP socket succeeded.
    Bind,
    /// A TCP socket entered the LISTEN state.
    Listen,
    /// An outbound TCP connection was initiated, or a UDP socket was connected.
    Connect,
    /// A process accepted an inbound TCP connection.
    Accept,
    /// A listening or connected TCP socket closed, or a bound UDP socket was released.
    Close,
}

impl EventKind {
    /// Every kind, in lifecycle order.
    pub const ALL: [EventKind; 5] = [
        EventKind::Bind,
        EventKind::Listen,
        EventKind::Connect,
        EventKind::Accept,
        EventKind::Close,
    ];

    /// The contract name (`"bind"`, `"listen"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Bind => "bind",
            EventKind::Listen => "listen",
            EventKind::Connect => "connect",
            EventKind::Accept => "accept",
            EventKind::Close => "close",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown event kind {s:?}; expected one of bind, listen, connect, accept, close")
            })
    }
}

/// Transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// The contract name (`"tcp"` or `"udp"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// Address family of the socket (not of the address: a v4-mapped peer of an
/// IPv6 socket is still `Ipv6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// AF_INET.
    Ipv4,
    /// AF_INET6.
    Ipv6,
}

impl Family {
    /// The contract name (`"ipv4"` or `"ipv6"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// What was decided about the operation. `Allow` when nothing enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Verdict {
    /// The operation went ahead.
    #[default]
    Allow,
    /// The operation was refused.
    Deny,
    /// The operation went ahead and a rule asked for it to be reported.
    Audit,
}

impl Verdict {
    /// The contract name (`"allow"`, `"deny"`, `"audit"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Audit => "audit",
        }
    }
}

/// An IP address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The address, exactly as the kernel holds it (v4-mapped IPv6 stays IPv6).
    pub ip: IpAddr,
    /// The port, host byte order.
    pub port: u16,
}

impl Endpoint {
    /// Builds an endpoint.
    pub fn new(ip: IpAddr, port: u16) -> Self {
        Endpoint { ip, port }
    }

    fn to_json(self) -> Value {
        json!({ "ip": self.ip.to_string(), "port": self.port })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{ip}:{}", self.port),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}", self.port),
        }
    }
}

/// The process an event is attributed to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Owner {
    /// Thread-group id (what `ps` calls the PID).
    pub pid: u32,
    /// Real user id.
    pub uid: u32,
    /// The task's command name (at most 15 bytes, as the kernel keeps it).
    pub comm: String,
    /// Absolute path of the executable, symlinks resolved, as `/proc/PID/exe` shows it.
    pub exe: Option<String>,
    /// cgroup v2 path, as in `/proc/PID/cgroup`.
    pub cgroup: Option<String>,
    /// The parent process (thread-group id), as `getppid()` in the owner
    /// would say when the event happened; None when unknown or for a
    /// process without a parent (pid 1). See docs/events.md for re-parenting.
    pub ppid: Option<u32>,
    /// The parent's executable (the exec the parent was running when the
    /// owner last saw it); None when the kernel recorded none.
    pub parent_exe: Option<Arc<str>>,
    /// The arguments the owner was exec'd with (argv, at most the first
    /// 512 bytes of them; the last one cut short if they are longer), as
    /// the kernel saw them at exec. Reported on `listen` events only.
    pub cmdline: Option<Arc<[String]>>,
}

impl Owner {
    /// The systemd unit, container and pod its cgroup path names.
    pub fn workload(&self) -> Workload {
        self.cgroup
            .as_deref()
            .map(Workload::of_cgroup)
            .unwrap_or_default()
    }
}

/// Fields that only some kinds of event carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Details {
    /// `listen`: the backlog passed to `listen()` (None for existing sockets).
    pub backlog: Option<u32>,
    /// `accept`: the listening socket's cookie.
    pub listener: Option<u64>,
    /// `close`: payload bytes sent (None when the kernel does not count them, UDP).
    pub bytes_sent: Option<u64>,
    /// `close`: payload bytes received (None when the kernel does not count them, UDP).
    pub bytes_received: Option<u64>,
    /// `close`: nanoseconds since the socket was created, started listening or connected.
    pub duration_ns: Option<u64>,
    /// A refused `accept` (verdict deny, no socket): how many more peers of
    /// the same listener were refused, and not reported because of the rate
    /// limit, since the previous reported one.
    pub suppressed: Option<u32>,
    /// A deny under enforce: which mechanism carried it out: `"lsm"` (the
    /// system call failed, BPF LSM), `"cgroup"` (the call failed, cgroup
    /// hook), `"sk_lookup"` (the connection was refused), `"destroy"` (the
    /// socket was refused in socket lookup and closed).
    pub enforced_by: Option<&'static str>,
}

/// One step of one socket's life.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Which step.
    pub kind: EventKind,
    /// When it happened (wall clock).
    pub time: SystemTime,
    /// What was decided.
    pub verdict: Verdict,
    /// The name of the policy rule that decided, when a policy is enforced.
    pub rule: Option<String>,
    /// Who did it. Only `existing` events may lack an owner.
    pub owner: Option<Owner>,
    /// TCP or UDP.
    pub proto: Proto,
    /// The socket's address family.
    pub family: Family,
    /// The local endpoint.
    pub local: Endpoint,
    /// The remote endpoint; None for listeners, bound-but-unconnected UDP sockets
    /// and binds.
    pub remote: Option<Endpoint>,
    /// The kernel socket cookie (`SO_COOKIE`, `ss -e`'s `sk:`), stable for the socket's life.
    pub socket: u64,
    /// True only for sockets found by the start-up snapshot.
    pub existing: bool,
    /// Inode number of the socket's network namespace, when known.
    pub netns: Option<u64>,
    /// `connect` and `accept`: the DNS name that resolved to the remote
    /// address in the socket's network namespace (learned from the DNS
    /// answers the host received, within their TTL; the name the owner
    /// itself looked up when several did), lowercase; None when unknown.
    pub remote_host: Option<String>,
    /// Kind-specific fields.
    pub details: Details,
}

fn opt<T: Into<Value>>(v: Option<T>) -> Value {
    v.map(Into::into).unwrap_or(Value::Null)
}

impl Event {
    /// The JSON object of the `--json` contract.
    ///
    /// ```
    /// use sockfilter_model::event::*;
    /// use std::net::{IpAddr, Ipv4Addr};
    /// let ev = Event {
    ///     kind: EventKind::Listen,
    ///     time: std::time::UNIX_EPOCH,
    ///     verdict: Verdict::Allow,
    ///     rule: None,
    ///     owner: Some(Owner { pid: 42, uid: 0, comm: "nc".into(), exe: Some("/usr/bin/nc".into()), cgroup: Some("/".into()),
    ///         ppid: Some(1), parent_exe: Some("/usr/lib/systemd/systemd".into()), cmdline: Some(vec!["nc".into(), "-l".into(), "8080".into()].into()) }),
    ///     proto: Proto::Tcp,
    ///     family: Family::Ipv4,
    ///     local: Endpoint::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
    ///     remote: None,
    ///     socket: 7,
    ///     existing: false,
    ///     netns: None,
    ///     remote_host: None,
    ///     details: Details { backlog: Some(128), ..Default::default() },
    /// };
    /// let v = ev.to_json();
    /// assert_eq!(v["event"], "listen");
    /// assert_eq!(v["local"]["port"], 8080);
    /// assert!(v["remote"].is_null());
    /// assert_eq!(v["backlog"], 128);
    /// assert_eq!(v["ppid"], 1);
    /// assert_eq!(v["cmdline"], serde_json::json!(["nc", "-l", "8080"]));
    /// ```
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        let owner = self.owner.as_ref();
        m.insert("event".into(), self.kind.as_str().into());
        m.insert("time".into(), rfc3339(self.time).into());
        m.insert("verdict".into(), self.verdict.as_str().into());
        m.insert("pid".into(), opt(owner.map(|o| o.pid)));
        m.insert("uid".into(), opt(owner.map(|o| o.uid)));
        m.insert("comm".into(), opt(owner.map(|o| o.comm.clone())));
        m.insert("exe".into(), opt(owner.and_then(|o| o.exe.clone())));
        m.insert("cgroup".into(), opt(owner.and_then(|o| o.cgroup.clone())));
        m.insert("ppid".into(), opt(owner.and_then(|o| o.ppid)));
        m.insert(
            "parent_exe".into(),
            opt(owner.and_then(|o| o.parent_exe.as_deref())),
        );
        let workload = owner.map(Owner::workload).unwrap_or_default();
        m.insert("unit".into(), opt(workload.unit));
        m.insert(
            "container".into(),
            workload.container.map_or(Value::Null, |c| c.to_json()),
        );
        m.insert("pod_uid".into(), opt(workload.pod_uid));
        m.insert("proto".into(), self.proto.as_str().into());
        m.insert("family".into(), self.family.as_str().into());
        m.insert("local".into(), self.local.to_json());
        m.insert(
            "remote".into(),
            self.remote.map(Endpoint::to_json).unwrap_or(Value::Null),
        );
        m.insert("socket".into(), self.socket.into());
        m.insert("existing".into(), self.existing.into());
        // The deciding policy rule's name; null when a default decided or
        // nothing enforces.
        m.insert("rule".into(), opt(self.rule.clone()));
        if let Some(netns) = self.netns {
            m.insert("netns".into(), netns.into());
        }
        let d = &self.details;
        if let Some(by) = d.enforced_by {
            m.insert("enforced_by".into(), by.into());
        }
        if matches!(self.kind, EventKind::Connect | EventKind::Accept) {
            m.insert("remote_host".into(), opt(self.remote_host.clone()));
        }
        match self.kind {
            EventKind::Listen => {
                m.insert("backlog".into(), opt(d.backlog));
                m.insert(
                    "cmdline".into(),
                    opt(owner.and_then(|o| o.cmdline.as_deref().map(<[String]>::to_vec))),
                );
            }
            EventKind::Accept => {
                m.insert("listener".into(), opt(d.listener));
                if let Some(n) = d.suppressed {
                    m.insert("suppressed".into(), n.into());
                }
            }
            EventKind::Close => {
                m.insert("bytes_sent".into(), opt(d.bytes_sent));
                m.insert("bytes_received".into(), opt(d.bytes_received));
                m.insert("duration_ns".into(), opt(d.duration_ns));
            }
            EventKind::Bind | EventKind::Connect => {}
        }
        Value::Object(m)
    }
}

fn push_key(out: &mut String, key: &str) {
    if !out.ends_with('{') {
        out.push(',');
    }
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
}

fn push_opt_str(out: &mut String, key: &str, v: Option<&str>) {
    push_key(out, key);
    match v {
        Some(v) => push_json_str(out, v),
        None => out.push_str("null"),
    }
}

fn push_opt_num(out: &mut String, key: &str, v: Option<u64>) {
    push_key(out, key);
    match v {
        Some(v) => push_u64(out, v),
        None => out.push_str("null"),
    }
}

fn push_endpoint(out: &mut String, key: &str, e: Option<Endpoint>) {
    push_key(out, key);
    match e {
        Some(e) => {
            out.push_str("{\"ip\":\"");
            push_ip(out, &e.ip);
            out.push_str("\",\"port\":");
            push_u64(out, u64::from(e.port));
            out.push('}');
        }
        None => out.push_str("null"),
    }
}

impl Event {
    /// Appends the same JSON object as [`Event::to_json`] (same keys, same
    /// order, same escaping) without building a `serde_json::Value`: this
    /// is what `--json` prints, at a fraction of the cost per event.
    pub fn write_json(&self, out: &mut String) {
        self.write_json_with_host(None, out)
    }

    /// [`Event::write_json`] with a `host` field added (the daemon's
    /// outputs name the machine an event happened on); every other field is
    /// unchanged. `None` writes no `host` key.
    pub fn write_json_with_host(&self, host: Option<&str>, out: &mut String) {
        let owner = self.owner.as_ref();
        let d = &self.details;
        out.push('{');
        // Keys in sorted order, as serde_json's map writes them.
        if self.kind == EventKind::Listen {
            push_opt_num(out, "backlog", d.backlog.map(u64::from));
        }
        if self.kind == EventKind::Close {
            push_opt_num(out, "bytes_received", d.bytes_received);
            push_opt_num(out, "bytes_sent", d.bytes_sent);
        }
        push_opt_str(out, "cgroup", owner.and_then(|o| o.cgroup.as_deref()));
        if self.kind == EventKind::Listen {
            push_key(out, "cmdline");
            match owner.and_then(|o| o.cmdline.as_deref()) {
                Some(args) => {
                    out.push('[');
                    for (i, a) in args.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        push_json_str(out, a);
                    }
                    out.push(']');
                }
                None => out.push_str("null"),
            }
        }
        push_opt_str(out, "comm", owner.map(|o| o.comm.as_str()));
        let workload = owner.map(Owner::workload).unwrap_or_default();
        push_key(out, "container");
        match &workload.container {
            Some(c) => {
                out.push_str("{\"id\":");
                push_json_str(out, &c.id);
                out.push_str(",\"runtime\":");
                push_json_str(out, c.runtime.as_str());
                out.push('}');
            }
            None => out.push_str("null"),
        }
        if self.kind == EventKind::Close {
            push_opt_num(out, "duration_ns", d.duration_ns);
        }
        if let Some(by) = d.enforced_by {
            push_opt_str(out, "enforced_by", Some(by));
        }
        push_opt_str(out, "event", Some(self.kind.as_str()));
        push_opt_str(out, "exe", owner.and_then(|o| o.exe.as_deref()));
        push_key(out, "existing");
        out.push_str(if self.existing { "true" } else { "false" });
        push_opt_str(out, "family", Some(self.family.as_str()));
        if let Some(host) = host {
            push_opt_str(out, "host", Some(host));
        }
        if self.kind == EventKind::Accept {
            push_opt_num(out, "listener", d.listener);
        }
        push_endpoint(out, "local", Some(self.local));
        if let Some(ns) = self.netns {
            push_opt_num(out, "netns", Some(ns));
        }
        push_opt_str(
            out,
            "parent_exe",
            owner.and_then(|o| o.parent_exe.as_deref()),
        );
        push_opt_num(out, "pid", owner.map(|o| u64::from(o.pid)));
        push_opt_str(out, "pod_uid", workload.pod_uid.as_deref());
        push_opt_num(out, "ppid", owner.and_then(|o| o.ppid.map(u64::from)));
        push_opt_str(out, "proto", Some(self.proto.as_str()));
        push_endpoint(out, "remote", self.remote);
        if matches!(self.kind, EventKind::Connect | EventKind::Accept) {
            push_opt_str(out, "remote_host", self.remote_host.as_deref());
        }
        push_opt_str(out, "rule", self.rule.as_deref());
        push_opt_num(out, "socket", Some(self.socket));
        if self.kind == EventKind::Accept {
            if let Some(n) = d.suppressed {
                push_opt_num(out, "suppressed", Some(u64::from(n)));
            }
        }
        push_key(out, "time");
        out.push('"');
        push_rfc3339_micros(out, self.time);
        out.push('"');
        push_opt_num(out, "uid", owner.map(|o| u64::from(o.uid)));
        push_opt_str(out, "unit", workload.unit.as_deref());
        push_opt_str(out, "verdict", Some(self.verdict.as_str()));
        out.push('}');
    }
}

/// The `{"event":"lost","count":N}` record: N events the kernel could not
/// deliver because the ring buffer was full.
pub fn lost_json(count: u64) -> Value {
    json!({ "event": "lost", "count": count })
}

/// RFC 3339 UTC with microseconds, e.g. `2026-11-26T08:22:09.123456Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let mut s = String::with_capacity(27);
    push_rfc3339_micros(&mut s, t);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn sample(kind: EventKind) -> Event {
        Event {
            kind,
            time: SystemTime::UNIX_EPOCH,
            verdict: Verdict::Allow,
            rule: None,
            owner: None,
            proto: Proto::Tcp,
            family: Family::Ipv6,
            local: Endpoint::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 1),
            remote: None,
            socket: 9,
            existing: true,
            netns: None,
            remote_host: None,
            details: Details::default(),
        }
    }

    #[test]
    fn contract_fields_are_always_present() {
        for kind in EventKind::ALL {
            let v = sample(kind).to_json();
            for field in [
                "event",
                "time",
                "verdict",
                "pid",
                "uid",
                "comm",
                "exe",
                "cgroup",
                "proto",
                "family",
                "local",
                "remote",
                "socket",
                "existing",
                "unit",
                "container",
                "pod_uid",
                "ppid",
                "parent_exe",
            ] {
                assert!(v.get(field).is_some(), "{kind}: missing {field}");
            }
        }
        assert!(sample(EventKind::Listen).to_json()["backlog"].is_null());
        assert!(sample(EventKind::Listen).to_json()["cmdline"].is_null());
        assert!(sample(EventKind::Connect)
            .to_json()
            .get("cmdline")
            .is_none());
        assert!(sample(EventKind::Accept)
            .to_json()
            .get("listener")
            .is_some());
        let close = sample(EventKind::Close).to_json();
        for f in ["bytes_sent", "bytes_received", "duration_ns"] {
            assert!(close.get(f).is_some());
        }
        assert!(sample(EventKind::Bind).to_json().get("backlog").is_none());
    }

    #[test]
    fn write_json_is_byte_identical_to_to_json() {
        for kind in EventKind::ALL {
            for existing in [false, true] {
                let mut e = sample(kind);
                e.existing = existing;
                e.rule = existing.then(|| "r\"1\\\n\u{1}é".to_string());
                e.netns = existing.then_some(4026531833);
                e.remote = existing.then(|| Endpoint::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 9));
                e.owner = existing.then(|| Owner {
                    pid: 1,
                    uid: 2,
                    comm: "a\tb".into(),
                    exe: Some("/x y".into()),
                    cgroup: Some(format!(
                        "/kubepods.slice/kubepods-pod9c1e6f3a_2b4d_4e8f_a1b2_c3d4e5f60718.slice/crio-{}.scope",
                        "ab".repeat(32)
                    )),
                    ppid: Some(3),
                    parent_exe: Some("/p\u{1b}q".into()),
                    cmdline: Some(vec!["a b".into(), "\n\"\u{7}".into(), String::new()].into()),
                });
                e.details = Details {
                    backlog: Some(5),
                    listener: Some(6),
                    bytes_sent: Some(7),
                    bytes_received: None,
                    duration_ns: Some(8),
                    suppressed: Some(9),
                    enforced_by: Some("lsm"),
                };
                let mut s = String::new();
                e.write_json(&mut s);
                assert_eq!(s, e.to_json().to_string());
                let mut with_host = String::new();
                e.write_json_with_host(Some("web-01"), &mut with_host);
                let mut expected = e.to_json();
                expected["host"] = "web-01".into();
                assert_eq!(with_host, expected.to_string());
            }
        }
    }

    #[test]
    fn time_is_rfc3339_utc() {
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn ipv6_endpoint_display_is_bracketed() {
        let e = Endpoint::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 80);
        assert_eq!(e.to_string(), "[::1]:80");
    }

    #[test]
    fn event_kind_parses_contract_names() {
        assert_eq!("accept".parse::<EventKind>().unwrap(), EventKind::Accept);
        assert!("lisen".parse::<EventKind>().is_err());
    }
}
