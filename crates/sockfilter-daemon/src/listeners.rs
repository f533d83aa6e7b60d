//! The host's current listeners (TCP listeners and bound, unconnected UDP
//! sockets), kept from the event stream: what `sockfilter_listeners` counts
//! and what the daemon publishes to the fleet bucket.

use crate::metrics::{ListenerLabels, Metrics};
use serde_json::{json, Value};
use sockfilter_model::event::rfc3339;
use sockfilter_model::{Event, EventKind, Proto};
use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

/// Current listeners by socket cookie.
#[derive(Default)]
pub struct Listeners {
    by_socket: HashMap<u64, Event>,
    changed: bool,
}

impl Listeners {
    /// Applies one event: a TCP `listen` or UDP `bind` adds its socket; a
    /// UDP `connect` (the socket stops receiving from anyone) or a `close`
    /// removes it.
    pub fn apply(&mut self, e: &Event) {
        let adds = match (e.kind, e.proto) {
            (EventKind::Listen, Proto::Tcp) => true,
            (EventKind::Bind, Proto::Udp) => e.remote.is_none(),
            _ => false,
        };
        if adds {
            self.by_socket.insert(e.socket, e.clone());
            self.changed = true;
        } else if matches!(e.kind, EventKind::Close | EventKind::Connect)
            && self.by_socket.remove(&e.socket).is_some()
        {
            self.changed = true;
        }
    }

    /// Replaces everything with what exists now (after the kernel dropped
    /// events, a `close` may have been among them).
    pub fn resync(&mut self, existing: Vec<Event>) {
        self.by_socket.clear();
        for e in existing {
            self.apply(&e);
        }
        self.changed = true;
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.by_socket.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_socket.is_empty()
    }

    /// True once after each change.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Sets `sockfilter_listeners{proto,family}` (every combination, zeros
    /// included, so a gauge drops to 0 rather than vanishing).
    pub fn export(&self, metrics: &Metrics) {
        let mut counts: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for proto in ["tcp", "udp"] {
            for family in ["ipv4", "ipv6"] {
                counts.insert((proto, family), 0);
            }
        }
        for e in self.by_socket.values() {
            *counts
                .entry((e.proto.as_str(), e.family.as_str()))
                .or_default() += 1;
        }
        for ((proto, family), n) in counts {
            metrics
                .listeners
                .get_or_create(&ListenerLabels {
                    proto: proto.into(),
                    family: family.into(),
                })
                .set(n);
        }
    }

    /// `{"host":..., "time":..., "listeners":[...]}`: each listener is its
    /// `listen`/`bind` event's contract JSON (without `event`, `time` and
    /// `verdict`, which describe the event, not the socket), sorted by port.
    pub fn to_json(&self, host: &str) -> Value {
        let mut list: Vec<&Event> = self.by_socket.values().collect();
        list.sort_by_key(|e| (e.local.port, e.proto.as_str(), e.socket));
        let listeners: Vec<Value> = list
            .into_iter()
            .map(|e| {
                let mut v = e.to_json();
                if let Some(m) = v.as_object_mut() {
                    for k in ["event", "time", "verdict", "backlog", "existing"] {
                        m.remove(k);
                    }
                }
                v
            })
            .collect();
        json!({ "host": host, "time": rfc3339(SystemTime::now()), "listeners": listeners })
    }
}
