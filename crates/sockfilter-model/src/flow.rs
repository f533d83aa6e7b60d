//! Flows: one entry per live socket that carries (or waits for) traffic,
//! built from the event stream, in the spirit of NetworkExtension's
//! `NEFilterSocketFlow`.
//!
//! A [`FlowTable`] is fed every [`Event`] with [`FlowTable::apply`]; each
//! call returns what changed (zero or more [`FlowUpdate`]s) so callers can react to new
//! and closed flows. Closed flows are returned once and released at once, so
//! the table holds only live sockets: a watcher running for days uses memory
//! in proportion to the sockets open now, not to the sockets ever seen.
//!
//! # Which sockets are flows
//!
//! | event | flow | direction | state | `remote` |
//! |---|---|---|---|---|
//! | `listen` (TCP) | the listener | [`Direction::Inbound`] | [`FlowState::Listening`] | None |
//! | `accept` (TCP) | the accepted connection | [`Direction::Inbound`] | [`FlowState::Established`] | Some |
//! | `connect` (TCP, live) | the outbound connection | [`Direction::Outbound`] | [`FlowState::Connecting`], then `Established` | Some |
//! | `connect` (TCP, `existing`) | the outbound connection | [`Direction::Outbound`] | [`FlowState::Established`] | Some |
//! | `bind` (UDP) | the bound, unconnected socket | [`Direction::Inbound`] | [`FlowState::Listening`] | None |
//! | `connect` (UDP) | the connected socket | [`Direction::Outbound`] | [`FlowState::Established`] | Some |
//! | `close` | the flow ends: [`FlowState::Closed`], bytes, `ended`; then released | | | unchanged |
//!
//! A TCP `bind` is not a flow: the socket becomes one when it listens or
//! connects (and a bound TCP socket that does neither never carries
//! traffic). A UDP socket that sends with `sendto()` without `bind()` or
//! `connect()` is bound implicitly and produces no event, so it is not a
//! flow either.
//!
//! # When `remote` is None
//!
//! `remote` is None **exactly** for TCP listeners and for UDP sockets that
//! are bound but not connected — the sockets that receive from anyone. Every
//! other flow (a TCP connection made by `connect()` or returned by
//! `accept()`, a connected UDP socket) has `Some(remote)` from the moment it
//! enters the table, and the remote endpoint never changes afterwards
//! (a `close` keeps the flow's endpoints). When a bound UDP socket
//! connects, the same flow turns outbound and gains its remote.
//!
//! # When a TCP connection becomes `Established`
//!
//! The kernel reports an outbound TCP `connect` when the SYN is about to
//! leave, so a live outbound flow starts as [`FlowState::Connecting`]. It is
//! promoted to [`FlowState::Established`] when the table sees the matching
//! `accept` (the other end of a connection between two watched processes:
//! same namespace, endpoints swapped), or when the caller says so with
//! [`FlowTable::mark_established`]. A connection whose handshake fails
//! goes from `Connecting` to `Closed`.

use crate::event::{rfc3339, Endpoint, Event, EventKind, Family, Owner, Proto, Verdict};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// Which way a flow was opened, as NetworkExtension's `NETrafficDirection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Opened from outside: a listener, an accepted connection, a bound
    /// unconnected UDP socket.
    Inbound,
    /// Opened from here: a `connect()`ed TCP or UDP socket.
    Outbound,
}

impl Direction {
    /// `"inbound"` or `"outbound"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Where in its life a flow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowState {
    /// A TCP listener, or a bound unconnected UDP socket.
    Listening,
    /// An outbound TCP connection whose handshake is not known to be complete.
    Connecting,
    /// A connected TCP or UDP socket.
    Established,
    /// The socket closed; the flow is reported once in this state and released.
    Closed,
}

impl FlowState {
    /// `"listening"`, `"connecting"`, `"established"` or `"closed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowState::Listening => "listening",
            FlowState::Connecting => "connecting",
            FlowState::Established => "established",
            FlowState::Closed => "closed",
        }
    }
}

/// One live (or just closed) socket.
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    /// The socket cookie (`SO_COOKIE`): the event's `socket`, unique for the
    /// life of the system.
    pub id: u64,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Where in its life the flow is.
    pub state: FlowState,
    /// TCP or UDP.
    pub proto: Proto,
    /// The socket's address family.
    pub family: Family,
    /// The local endpoint.
    pub local: Endpoint,
    /// The peer. None exactly for TCP listeners and bound, unconnected UDP
    /// sockets (see the [module documentation](self)).
    pub remote: Option<Endpoint>,
    /// The process the socket is attributed to (the latest event's owner).
    pub owner: Option<Owner>,
    /// Inode of the socket's network namespace, when known.
    pub netns: Option<u64>,
    /// The DNS name behind `remote` (the opening event's `remote_host`);
    /// None when unknown.
    pub remote_host: Option<String>,
    /// Payload bytes sent, known once the flow closed (TCP); None before and
    /// for UDP.
    pub bytes_sent: Option<u64>,
    /// Payload bytes received, known once the flow closed (TCP); None before
    /// and for UDP.
    pub bytes_received: Option<u64>,
    /// When the flow started: the time of its first event (for sockets found
    /// by the start-up snapshot, the time of the snapshot).
    pub started: SystemTime,
    /// When the flow closed.
    pub ended: Option<SystemTime>,
    /// For accepted connections: the listening socket's cookie.
    pub listener: Option<u64>,
    /// True when the flow was found by the start-up snapshot rather than
    /// seen opening.
    pub existing: bool,
}

impl Flow {
    fn from_event(e: &Event, direction: Direction, state: FlowState) -> Flow {
        Flow {
            id: e.socket,
            direction,
            state,
            proto: e.proto,
            family: e.family,
            local: e.local,
            remote: e.remote,
            owner: e.owner.clone(),
            netns: e.netns,
            remote_host: e.remote_host.clone(),
            bytes_sent: None,
            bytes_received: None,
            started: e.time,
            ended: None,
            listener: e.details.listener,
            existing: e.existing,
        }
    }

    /// How long the flow lasted (closed flows) or has lasted until `now`.
    pub fn age(&self, now: SystemTime) -> Duration {
        self.ended
            .unwrap_or(now)
            .duration_since(self.started)
            .unwrap_or_default()
    }

    /// The flow as a JSON object: `id`, `direction`, `state`, `proto`,
    /// `family`, `local`, `remote`, `remote_host`, the owner fields of the event contract
    /// (`pid`, `uid`, `comm`, `exe`, `cgroup`, null when unknown),
    /// `bytes_sent`, `bytes_received`, `started`, `ended`, `listener`,
    /// `existing` and `netns`.
    ///
    /// ```
    /// use sockfilter_model::event::*;
    /// use sockfilter_model::flow::FlowTable;
    /// use std::net::{IpAddr, Ipv4Addr};
    /// let listen = Event {
    ///     kind: EventKind::Listen,
    ///     time: std::time::UNIX_EPOCH,
    ///     verdict: Verdict::Allow,
    ///     rule: None,
    ///     owner: None,
    ///     proto: Proto::Tcp,
    ///     family: Family::Ipv4,
    ///     local: Endpoint::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080),
    ///     remote: None,
    ///     socket: 7,
    ///     existing: false,
    ///     netns: None,
    ///     remote_host: None,
    ///     details: Details::default(),
    /// };
    /// let mut table = FlowTable::new();
    /// let v = table.apply(&listen).pop().unwrap().flow.to_json();
    /// assert_eq!(v["direction"], "inbound");
    /// assert_eq!(v["state"], "listening");
    /// assert!(v["remote"].is_null());
    /// ```
    pub fn to_json(&self) -> Value {
        let ep = |e: Endpoint| json!({ "ip": e.ip.to_string(), "port": e.port });
        let owner = self.owner.as_ref();
        let mut m = Map::new();
        m.insert("id".into(), self.id.into());
        m.insert("direction".into(), self.direction.as_str().into());
        m.insert("state".into(), self.state.as_str().into());
        m.insert("proto".into(), self.proto.as_str().into());
        m.insert("family".into(), self.family.as_str().into());
        m.insert("local".into(), ep(self.local));
        m.insert("remote".into(), self.remote.map(ep).unwrap_or(Value::Null));
        m.insert("remote_host".into(), json!(self.remote_host));
        m.insert("pid".into(), json!(owner.map(|o| o.pid)));
        m.insert("uid".into(), json!(owner.map(|o| o.uid)));
        m.insert("comm".into(), json!(owner.map(|o| o.comm.clone())));
        m.insert("exe".into(), json!(owner.and_then(|o| o.exe.clone())));
        m.insert("cgroup".into(), json!(owner.and_then(|o| o.cgroup.clone())));
        let workload = owner.map(Owner::workload).unwrap_or_default();
        m.insert("unit".into(), json!(workload.unit));
        m.insert(
            "container".into(),
            workload.container.map_or(Value::Null, |c| c.to_json()),
        );
        m.insert("pod_uid".into(), json!(workload.pod_uid));
        m.insert("bytes_sent".into(), json!(self.bytes_sent));
        m.insert("bytes_received".into(), json!(self.bytes_received));
        m.insert("started".into(), rfc3339(self.started).into());
        m.insert("ended".into(), json!(self.ended.map(rfc3339)));
        m.insert("listener".into(), json!(self.listener));
        m.insert("existing".into(), self.existing.into());
        m.insert("netns".into(), json!(self.netns));
        Value::Object(m)
    }
}

/// What an event did to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    /// A flow entered the table (what NetworkExtension calls a new flow).
    Opened,
    /// A known flow changed: an outbound TCP connection became established,
    /// or a bound UDP socket connected (it turns outbound and gains a remote).
    Changed,
    /// The flow closed; this is its last report and it has been released.
    Closed,
}

/// One change made by [`FlowTable::apply`]: what changed and the flow as it is now.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowUpdate {
    /// What happened.
    pub change: Change,
    /// The flow after the change (for [`Change::Closed`], its final state;
    /// the table no longer holds it).
    pub flow: Flow,
}

/// A connection's identity seen from its initiator: namespace, local, remote.
type ConnKey = (Option<u64>, Endpoint, Endpoint);

/// `::ffff:a.b.c.d` and `a.b.c.d` are the same peer.
fn canon(e: Endpoint) -> Endpoint {
    Endpoint::new(e.ip.to_canonical(), e.port)
}

fn with_ip(e: Endpoint, ip: IpAddr) -> Endpoint {
    Endpoint::new(ip, e.port)
}

/// The live flows, keyed by socket cookie. See the [module documentation](self)
/// for which events make which flows.
#[derive(Debug, Default)]
pub struct FlowTable {
    flows: HashMap<u64, Flow>,
    /// Outbound TCP flows still `Connecting`, by (netns, local, remote), so
    /// the matching `accept` can promote them.
    connecting: HashMap<ConnKey, u64>,
}

impl FlowTable {
    /// An empty table.
    pub fn new() -> FlowTable {
        FlowTable::default()
    }

    /// Number of live flows.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// True when no flow is live.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// The live flow with this socket cookie.
    pub fn get(&self, id: u64) -> Option<&Flow> {
        self.flows.get(&id)
    }

    /// Every live flow, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Flow> {
        self.flows.values()
    }

    /// Every live flow, sorted by (direction, state, local port, id): a
    /// stable order for printing.
    pub fn sorted(&self) -> Vec<&Flow> {
        let mut v: Vec<&Flow> = self.flows.values().collect();
        v.sort_by_key(|f| {
            (
                f.state != FlowState::Listening,
                f.direction == Direction::Outbound,
                f.local.port,
                f.id,
            )
        });
        v
    }

    /// Removes a flow without a `close` event (for callers that learn
    /// otherwise that the socket is gone). Returns it.
    pub fn remove(&mut self, id: u64) -> Option<Flow> {
        let flow = self.flows.remove(&id)?;
        self.forget_connecting(&flow);
        Some(flow)
    }

    /// Keeps only the flows for which `keep` is true: after the kernel
    /// dropped events (a `lost` item) a `close` may never come, and a caller
    /// can resynchronise with a snapshot of the sockets that exist.
    pub fn retain(&mut self, mut keep: impl FnMut(&Flow) -> bool) {
        let gone: Vec<u64> = self
            .flows
            .values()
            .filter(|f| !keep(f))
            .map(|f| f.id)
            .collect();
        for id in gone {
            self.remove(id);
        }
    }

    /// Marks an outbound flow `Established` (for callers that learn of the
    /// completed handshake another way). Returns the update, or None when
    /// the flow is unknown or was not `Connecting`.
    pub fn mark_established(&mut self, id: u64) -> Option<FlowUpdate> {
        let flow = self.flows.get_mut(&id)?;
        if flow.state != FlowState::Connecting {
            return None;
        }
        flow.state = FlowState::Established;
        let flow = flow.clone();
        self.forget_connecting(&flow);
        Some(FlowUpdate {
            change: Change::Changed,
            flow,
        })
    }

    fn forget_connecting(&mut self, flow: &Flow) {
        if let Some(remote) = flow.remote {
            let key = (flow.netns, canon(flow.local), canon(remote));
            if self.connecting.get(&key) == Some(&flow.id) {
                self.connecting.remove(&key);
            }
        }
    }

    fn open(&mut self, flow: Flow) -> Vec<FlowUpdate> {
        if flow.state == FlowState::Connecting {
            if let Some(remote) = flow.remote {
                self.connecting
                    .insert((flow.netns, canon(flow.local), canon(remote)), flow.id);
            }
        }
        self.flows.insert(flow.id, flow.clone());
        vec![FlowUpdate {
            change: Change::Opened,
            flow,
        }]
    }

    /// Feeds one event. Returns what it changed, in order: nothing when the
    /// event does not change the table (a TCP `bind`, a repeated event, the
    /// `close` of a socket the table never saw); one update for the event's
    /// own socket; and for an `accept` whose other end is an outbound flow
    /// still `Connecting`, first that flow's `Changed` (now `Established`),
    /// then the accepted flow's `Opened`.
    ///
    /// ```
    /// use sockfilter_model::event::*;
    /// use sockfilter_model::flow::{Change, FlowState, FlowTable};
    /// use std::net::{IpAddr, Ipv4Addr};
    /// let ep = |port| Endpoint::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    /// let ev = |kind, socket, remote| Event {
    ///     kind,
    ///     time: std::time::UNIX_EPOCH,
    ///     verdict: Verdict::Allow,
    ///     rule: None,
    ///     owner: None,
    ///     proto: Proto::Tcp,
    ///     family: Family::Ipv4,
    ///     local: ep(80),
    ///     remote,
    ///     socket,
    ///     existing: false,
    ///     netns: None,
    ///     remote_host: None,
    ///     details: Details { bytes_sent: Some(5), bytes_received: Some(9), ..Default::default() },
    /// };
    /// let mut t = FlowTable::new();
    /// let opened = t.apply(&ev(EventKind::Accept, 2, Some(ep(40000)))).pop().unwrap();
    /// assert_eq!((opened.change, opened.flow.state), (Change::Opened, FlowState::Established));
    /// let closed = t.apply(&ev(EventKind::Close, 2, Some(ep(40000)))).pop().unwrap();
    /// assert_eq!(closed.change, Change::Closed);
    /// assert_eq!(closed.flow.bytes_sent, Some(5));
    /// assert!(t.is_empty(), "closed flows are released once reported");
    /// ```
    pub fn apply(&mut self, e: &Event) -> Vec<FlowUpdate> {
        if e.verdict == Verdict::Deny {
            // A denied operation did not happen: no flow opens or changes
            // (a denied listener's destruction is its close).
            if e.kind != EventKind::Close {
                return Vec::new();
            }
        }
        match (e.kind, e.proto) {
            (EventKind::Bind, Proto::Tcp) => Vec::new(),
            (EventKind::Bind, Proto::Udp) => {
                if self.flows.contains_key(&e.socket) {
                    return Vec::new();
                }
                let mut f = Flow::from_event(e, Direction::Inbound, FlowState::Listening);
                f.remote = None;
                self.open(f)
            }
            (EventKind::Listen, _) => {
                if self
                    .flows
                    .get(&e.socket)
                    .is_some_and(|f| f.state == FlowState::Listening)
                {
                    return Vec::new();
                }
                let mut f = Flow::from_event(e, Direction::Inbound, FlowState::Listening);
                f.remote = None;
                self.open(f)
            }
            (EventKind::Accept, _) => {
                if self.flows.contains_key(&e.socket) {
                    return Vec::new();
                }
                let f = Flow::from_event(e, Direction::Inbound, FlowState::Established);
                // The other end of a connection between two watched
                // processes: its connect() has completed.
                let mut updates = Vec::new();
                if let Some(remote) = e.remote {
                    let key = (e.netns, canon(remote), canon(e.local));
                    if let Some(peer) = self.connecting.remove(&key) {
                        if let Some(p) = self.flows.get_mut(&peer) {
                            p.state = FlowState::Established;
                            updates.push(FlowUpdate {
                                change: Change::Changed,
                                flow: p.clone(),
                            });
                        }
                    }
                }
                updates.extend(self.open(f));
                updates
            }
            (EventKind::Connect, proto) => {
                let state = if proto == Proto::Tcp && !e.existing {
                    FlowState::Connecting
                } else {
                    FlowState::Established
                };
                match self.flows.get_mut(&e.socket) {
                    Some(f) if f.remote.is_none() && e.remote.is_some() => {
                        // A bound UDP socket connected.
                        f.direction = Direction::Outbound;
                        f.state = state;
                        f.remote = e.remote;
                        f.remote_host = e.remote_host.clone();
                        f.local = e.local;
                        if e.owner.is_some() {
                            f.owner = e.owner.clone();
                        }
                        vec![FlowUpdate {
                            change: Change::Changed,
                            flow: f.clone(),
                        }]
                    }
                    Some(_) => Vec::new(),
                    None => self.open(Flow::from_event(e, Direction::Outbound, state)),
                }
            }
            (EventKind::Close, _) => {
                let Some(mut f) = self.remove(e.socket) else {
                    return Vec::new();
                };
                f.state = FlowState::Closed;
                f.ended = Some(e.time);
                f.bytes_sent = e.details.bytes_sent;
                f.bytes_received = e.details.bytes_received;
                if e.owner.is_some() {
                    f.owner = e.owner.clone();
                }
                // An unspecified local address may have been resolved since.
                if f.local.ip.is_unspecified() && !e.local.ip.is_unspecified() {
                    f.local = with_ip(f.local, e.local.ip);
                }
                vec![FlowUpdate {
                    change: Change::Closed,
                    flow: f,
                }]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Details, Verdict};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(port: u16) -> Endpoint {
        Endpoint::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    }

    fn ev(
        kind: EventKind,
        proto: Proto,
        socket: u64,
        local: Endpoint,
        remote: Option<Endpoint>,
    ) -> Event {
        Event {
            kind,
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(socket),
            verdict: Verdict::Allow,
            rule: None,
            owner: Some(Owner {
                pid: 10,
                uid: 0,
                comm: "t".into(),
                exe: None,
                cgroup: None,
                ..Default::default()
            }),
            proto,
            family: Family::Ipv4,
            local,
            remote,
            socket,
            existing: false,
            netns: Some(1),
            remote_host: None,
            details: Details::default(),
        }
    }

    fn close(
        socket: u64,
        local: Endpoint,
        remote: Option<Endpoint>,
        sent: u64,
        recv: u64,
    ) -> Event {
        let mut e = ev(EventKind::Close, Proto::Tcp, socket, local, remote);
        e.time = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        e.details.bytes_sent = Some(sent);
        e.details.bytes_received = Some(recv);
        e
    }

    #[test]
    fn a_flow_keeps_the_name_of_its_remote() {
        let mut t = FlowTable::new();
        let mut c = ev(EventKind::Connect, Proto::Tcp, 5, v4(40000), Some(v4(443)));
        c.remote_host = Some("api.example.com".into());
        let f = t.apply(&c).pop().unwrap().flow;
        assert_eq!(f.to_json()["remote_host"], "api.example.com");
        let closed = t
            .apply(&close(5, v4(40000), Some(v4(443)), 1, 2))
            .pop()
            .unwrap();
        assert_eq!(closed.flow.remote_host.as_deref(), Some("api.example.com"));
        let l = t
            .apply(&ev(EventKind::Listen, Proto::Tcp, 6, v4(80), None))
            .pop()
            .unwrap();
        assert!(
            l.flow.to_json()["remote_host"].is_null(),
            "null when unknown"
        );
    }

    #[test]
    fn tcp_connection_between_two_watched_processes() {
        let mut t = FlowTable::new();
        assert!(t
            .apply(&ev(EventKind::Bind, Proto::Tcp, 1, v4(80), None))
            .is_empty());
        let l = t
            .apply(&ev(EventKind::Listen, Proto::Tcp, 1, v4(80), None))
            .pop()
            .unwrap();
        assert_eq!(l.change, Change::Opened);
        assert_eq!(
            (l.flow.direction, l.flow.state, l.flow.remote),
            (Direction::Inbound, FlowState::Listening, None)
        );
        let c = t
            .apply(&ev(
                EventKind::Connect,
                Proto::Tcp,
                2,
                v4(40000),
                Some(v4(80)),
            ))
            .pop()
            .unwrap();
        assert_eq!(
            (c.change, c.flow.direction, c.flow.state),
            (Change::Opened, Direction::Outbound, FlowState::Connecting)
        );
        let mut acc = ev(EventKind::Accept, Proto::Tcp, 3, v4(80), Some(v4(40000)));
        acc.details.listener = Some(1);
        let mut ups = t.apply(&acc);
        assert_eq!(ups.len(), 2, "the connect's promotion, then the accept");
        assert_eq!(
            (ups[0].change, ups[0].flow.id, ups[0].flow.state),
            (Change::Changed, 2, FlowState::Established)
        );
        let a = ups.pop().unwrap();
        assert_eq!((a.change, a.flow.id), (Change::Opened, 3));
        assert_eq!(a.flow.listener, Some(1));
        assert_eq!(a.flow.state, FlowState::Established);
        assert_eq!(
            t.get(2).unwrap().state,
            FlowState::Established,
            "the accept proves the handshake completed"
        );
        assert_eq!(t.len(), 3);
        let cc = t
            .apply(&close(2, v4(40000), Some(v4(80)), 100, 7))
            .pop()
            .unwrap();
        assert_eq!(cc.change, Change::Closed);
        assert_eq!(
            (cc.flow.bytes_sent, cc.flow.bytes_received),
            (Some(100), Some(7))
        );
        assert_eq!(
            cc.flow.ended,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1000))
        );
        assert_eq!(cc.flow.age(SystemTime::now()), Duration::from_secs(998));
        t.apply(&close(3, v4(80), Some(v4(40000)), 7, 100))
            .pop()
            .unwrap();
        t.apply(&close(1, v4(80), None, 0, 0)).pop().unwrap();
        assert!(t.is_empty());
        assert!(t.connecting.is_empty());
        assert!(
            t.apply(&close(1, v4(80), None, 0, 0)).is_empty(),
            "reported once"
        );
    }

    #[test]
    fn dual_stack_accept_promotes_a_v4_connect() {
        let mut t = FlowTable::new();
        t.apply(&ev(
            EventKind::Connect,
            Proto::Tcp,
            2,
            v4(40000),
            Some(v4(80)),
        ));
        let mapped = |p| Endpoint::new(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()), p);
        let mut acc = ev(
            EventKind::Accept,
            Proto::Tcp,
            3,
            mapped(80),
            Some(mapped(40000)),
        );
        acc.family = Family::Ipv6;
        t.apply(&acc);
        assert_eq!(t.get(2).unwrap().state, FlowState::Established);
    }

    #[test]
    fn connect_in_another_namespace_is_not_promoted() {
        let mut t = FlowTable::new();
        t.apply(&ev(
            EventKind::Connect,
            Proto::Tcp,
            2,
            v4(40000),
            Some(v4(80)),
        ));
        let mut acc = ev(EventKind::Accept, Proto::Tcp, 3, v4(80), Some(v4(40000)));
        acc.netns = Some(2);
        t.apply(&acc);
        assert_eq!(t.get(2).unwrap().state, FlowState::Connecting);
        assert!(t.mark_established(2).is_some());
        assert!(t.mark_established(2).is_none());
    }

    #[test]
    fn udp_bound_then_connected() {
        let mut t = FlowTable::new();
        let b = t
            .apply(&ev(EventKind::Bind, Proto::Udp, 5, v4(53), None))
            .pop()
            .unwrap();
        assert_eq!(
            (b.flow.direction, b.flow.state, b.flow.remote),
            (Direction::Inbound, FlowState::Listening, None)
        );
        let c = t
            .apply(&ev(
                EventKind::Connect,
                Proto::Udp,
                5,
                v4(53),
                Some(v4(9999)),
            ))
            .pop()
            .unwrap();
        assert_eq!(c.change, Change::Changed);
        assert_eq!(
            (c.flow.direction, c.flow.state, c.flow.remote),
            (Direction::Outbound, FlowState::Established, Some(v4(9999)))
        );
        let mut cl = ev(EventKind::Close, Proto::Udp, 5, v4(53), Some(v4(9999)));
        cl.details = Details::default();
        let cl = t.apply(&cl).pop().unwrap();
        assert_eq!((cl.flow.bytes_sent, cl.flow.bytes_received), (None, None));
        assert!(t.is_empty());
    }

    #[test]
    fn udp_connect_without_bind_is_a_new_outbound_flow() {
        let mut t = FlowTable::new();
        let c = t
            .apply(&ev(
                EventKind::Connect,
                Proto::Udp,
                6,
                v4(5000),
                Some(v4(53)),
            ))
            .pop()
            .unwrap();
        assert_eq!(
            (c.change, c.flow.direction, c.flow.state),
            (Change::Opened, Direction::Outbound, FlowState::Established)
        );
    }

    #[test]
    fn existing_connect_is_established_and_repeats_are_ignored() {
        let mut t = FlowTable::new();
        let mut e = ev(EventKind::Connect, Proto::Tcp, 2, v4(40000), Some(v4(80)));
        e.existing = true;
        let c = t.apply(&e).pop().unwrap();
        assert!(c.flow.existing);
        assert_eq!(c.flow.state, FlowState::Established);
        assert!(t.apply(&e).is_empty());
        let l = ev(EventKind::Listen, Proto::Tcp, 1, v4(80), None);
        t.apply(&l).pop().unwrap();
        assert!(t.apply(&l).is_empty());
    }

    #[test]
    fn remote_is_none_exactly_for_listeners_and_unconnected_udp() {
        let mut t = FlowTable::new();
        let six = Endpoint::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 1);
        let events = [
            ev(EventKind::Listen, Proto::Tcp, 1, v4(80), None),
            ev(EventKind::Bind, Proto::Udp, 2, v4(53), None),
            ev(EventKind::Connect, Proto::Tcp, 3, v4(4000), Some(v4(80))),
            ev(EventKind::Accept, Proto::Tcp, 4, v4(80), Some(v4(4000))),
            ev(EventKind::Connect, Proto::Udp, 5, v4(4001), Some(six)),
        ];
        for e in &events {
            t.apply(e);
        }
        for f in t.iter() {
            assert_eq!(
                f.remote.is_none(),
                f.state == FlowState::Listening,
                "flow {f:?}"
            );
        }
    }

    #[test]
    fn memory_is_bounded_by_live_flows() {
        let mut t = FlowTable::new();
        t.apply(&ev(EventKind::Listen, Proto::Tcp, 1, v4(80), None));
        for i in 0..100_000u64 {
            let port = (1024 + i % 60000) as u16;
            let (c, a) = (10 + 2 * i, 11 + 2 * i);
            t.apply(&ev(
                EventKind::Connect,
                Proto::Tcp,
                c,
                v4(port),
                Some(v4(80)),
            ));
            t.apply(&ev(
                EventKind::Accept,
                Proto::Tcp,
                a,
                v4(80),
                Some(v4(port)),
            ));
            t.apply(&close(c, v4(port), Some(v4(80)), 1, 1));
            t.apply(&close(a, v4(80), Some(v4(port)), 1, 1));
        }
        assert_eq!(t.len(), 1);
        assert!(t.connecting.is_empty());
    }

    #[test]
    fn retain_and_remove_release_flows() {
        let mut t = FlowTable::new();
        t.apply(&ev(
            EventKind::Connect,
            Proto::Tcp,
            2,
            v4(40000),
            Some(v4(80)),
        ));
        t.apply(&ev(EventKind::Listen, Proto::Tcp, 1, v4(80), None));
        t.retain(|f| f.id == 1);
        assert_eq!(t.len(), 1);
        assert!(t.connecting.is_empty());
        assert!(t.remove(1).is_some());
        assert!(t.is_empty());
    }

    #[test]
    fn json_has_the_contract_owner_fields() {
        let mut t = FlowTable::new();
        let mut acc = ev(EventKind::Accept, Proto::Tcp, 3, v4(80), Some(v4(4000)));
        acc.details.listener = Some(1);
        let v = t.apply(&acc).pop().unwrap().flow.to_json();
        for f in [
            "id",
            "direction",
            "state",
            "proto",
            "family",
            "local",
            "remote",
            "pid",
            "uid",
            "comm",
            "exe",
            "cgroup",
            "bytes_sent",
            "bytes_received",
            "started",
            "listener",
        ] {
            assert!(v.get(f).is_some(), "missing {f}");
        }
        assert_eq!(v["listener"], 1);
        assert_eq!(v["pid"], 10);
        assert_eq!(v["remote"]["port"], 4000);
        assert_eq!(v["started"], "1970-01-01T00:00:03.000000Z");
    }
}
