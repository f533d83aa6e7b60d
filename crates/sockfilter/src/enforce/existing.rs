//! Sockets that existed before the policy: at start and at every reload,
//! `sockfilter enforce` judges each listener, bound UDP socket and
//! connection with the policy now in force, as the kernel hooks would have
//! judged the operation that made it what it is, and destroys those the
//! policy denies (as WFP re-authorizes existing flows on a filter change).
//!
//! Each socket is judged as one operation, the one the kernel decides for
//! such a socket today:
//! - a TCP listener as `listen` of its local endpoint, by its owner;
//! - an unconnected UDP socket as `bind` of its local endpoint, by its owner;
//! - an outbound TCP connection or a connected UDP socket as `connect` to
//!   its peer, by its owner;
//! - an accepted TCP connection as `accept` from its peer on its local
//!   endpoint, by the owner of its listener (the process that called
//!   `listen()`), or by its own owner when the listener is gone.
//!
//! A socket that no process holds (a kernel socket, an orphaned connection
//! closing down) is left alone: no hook decides such sockets either.

use crate::destroy::{destroy_all, DestroyError, DestroyTarget};
use sockfilter_model::event::{Event, EventKind, Owner, Proto, Verdict};
use sockfilter_model::policy::{Operation, Policy, Subject};
use std::collections::HashMap;

/// Sets `verdict` and `rule` of every event of a snapshot (`existing`
/// events, as [`crate::watch::existing_events`] makes them) to what
/// `policy` decides for the socket. Events without an owner stay `allow`.
pub fn judge(policy: &Policy, events: &mut [Event]) {
    let listener_owners: HashMap<u64, Owner> = events
        .iter()
        .filter(|e| e.kind == EventKind::Listen)
        .filter_map(|e| Some((e.socket, e.owner.clone()?)))
        .collect();
    for e in events.iter_mut() {
        let Some(op) = Operation::from_event_kind(e.kind) else {
            continue;
        };
        let owner = match (op, e.details.listener) {
            (Operation::Accept, Some(l)) => listener_owners.get(&l).or(e.owner.as_ref()),
            _ => e.owner.as_ref(),
        };
        let Some(owner) = owner else {
            continue;
        };
        let subject = Subject {
            op,
            proto: e.proto,
            family: e.family,
            local: Some(e.local),
            remote: e.remote,
            remote_host: None,
            exe: owner.exe.as_deref(),
            comm: Some(owner.comm.as_str()),
            uid: Some(owner.uid),
            cgroup: owner.cgroup.as_deref(),
        };
        let decision = policy.decide(&subject);
        e.verdict = Verdict::from(decision.action);
        e.rule = decision.rule.map(str::to_owned);
    }
}

/// Destroys every socket of `events` judged `deny`, each in its own network
/// namespace, by cookie; a UDP socket also gets a locked drop-all filter
/// ([`super::deafen`]). Returns the failures, with their socket; a socket
/// that closed by itself meanwhile is not a failure.
pub fn destroy_denied(events: &[Event]) -> Vec<(&Event, DestroyError)> {
    let denied: Vec<&Event> = events
        .iter()
        .filter(|e| e.verdict == Verdict::Deny)
        .collect();
    // A UDP socket first stops receiving (destroying it does not unbind an
    // explicitly bound port, see deafen.rs).
    let mut failed: Vec<(&Event, DestroyError)> = Vec::new();
    for e in denied.iter().filter(|e| e.proto == Proto::Udp) {
        if let Some(owner) = &e.owner {
            if let Err(err) = super::deafen::deafen(owner.pid, e.socket) {
                if err.kind() != std::io::ErrorKind::NotFound {
                    failed.push((e, DestroyError::Io(err)));
                }
            }
        }
    }
    let targets: Vec<DestroyTarget> = denied.iter().map(|e| DestroyTarget::from(*e)).collect();
    failed.extend(
        denied
            .into_iter()
            .zip(destroy_all(&targets))
            .filter_map(|(e, r)| match r {
                Ok(()) | Err(DestroyError::NotFound { .. }) => None,
                Err(err) => Some((e, err)),
            }),
    );
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockfilter_model::event::{Details, Endpoint, Family, Proto};
    use std::net::{IpAddr, Ipv4Addr};

    fn ev(kind: EventKind, port: u16, remote: Option<u16>, uid: u32, socket: u64) -> Event {
        let ep = |p| Endpoint::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p);
        Event {
            kind,
            time: std::time::UNIX_EPOCH,
            verdict: Verdict::Allow,
            rule: None,
            owner: Some(Owner {
                pid: 1,
                uid,
                comm: "srv".into(),
                exe: None,
                cgroup: None,
                ..Default::default()
            }),
            proto: Proto::Tcp,
            family: Family::Ipv4,
            local: ep(port),
            remote: remote.map(ep),
            socket,
            existing: true,
            netns: None,
            remote_host: None,
            details: Details::default(),
        }
    }

    #[test]
    fn each_socket_is_judged_as_the_operation_that_made_it() {
        let policy = Policy::parse(
            "[[rule]]\nname = \"no-listen-8080\"\naction = \"deny\"\non = [\"listen\"]\nlocal_port = [8080]\n\
             [[rule]]\nname = \"no-connect-9000\"\naction = \"deny\"\non = [\"connect\"]\nremote_port = [9000]\n",
            "p.toml".as_ref(),
        )
        .unwrap();
        let mut events = vec![
            ev(EventKind::Listen, 8080, None, 65534, 1),
            ev(EventKind::Listen, 8081, None, 65534, 2),
            ev(EventKind::Connect, 40000, Some(9000), 65534, 3),
            // An accepted connection to port 9000 is not a connect.
            ev(EventKind::Accept, 9000, Some(40001), 65534, 4),
        ];
        events[0].owner = None; // nobody holds it: left alone
        judge(&policy, &mut events);
        let verdicts: Vec<_> = events
            .iter()
            .map(|e| (e.verdict, e.rule.as_deref()))
            .collect();
        assert_eq!(
            verdicts,
            [
                (Verdict::Allow, None),
                (Verdict::Allow, None),
                (Verdict::Deny, Some("no-connect-9000")),
                (Verdict::Allow, None),
            ]
        );
    }

    #[test]
    fn an_accepted_connection_is_judged_by_its_listeners_owner() {
        let policy = Policy::parse(
            "[[rule]]\nname = \"nobody-serves\"\naction = \"deny\"\non = [\"accept\"]\nuid = [65534]\n",
            "p.toml".as_ref(),
        )
        .unwrap();
        let mut events = vec![
            ev(EventKind::Listen, 8080, None, 65534, 1),
            ev(EventKind::Accept, 8080, Some(40000), 0, 2),
        ];
        events[1].details.listener = Some(1);
        judge(&policy, &mut events);
        assert_eq!(events[1].verdict, Verdict::Deny);
    }
}
