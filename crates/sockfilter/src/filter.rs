//! A socket filter in the style of macOS's `sflt_filter` callbacks and
//! NetworkExtension's `handleNewFlow`, driven by a [`Session`](crate::session::Session).
//!
//! Implement [`SocketFilter`] (every method has a default, so implement only
//! what you need) and hand it to
//! [`Session::run_filter`](crate::session::Session::run_filter). The event
//! callbacks observe; [`SocketFilter::handle_new_flow`] decides, and a
//! [`FlowVerdict::Drop`] destroys the live socket with
//! [`diag::destroy`](crate::diag::destroy).
//!
//! ```no_run
//! use sockfilter::filter::{DropOutcome, FlowVerdict, SocketFilter};
//! use sockfilter::model::flow::{Direction, Flow};
//! use sockfilter::model::Event;
//! use sockfilter::session::Session;
//!
//! /// Refuses every outbound connection to port 23 and logs listeners.
//! struct NoTelnet;
//!
//! impl SocketFilter for NoTelnet {
//!     fn on_listen(&mut self, e: &Event) {
//!         println!("listening: {} by {:?}", e.local, e.owner);
//!     }
//!     fn handle_new_flow(&mut self, flow: &Flow) -> FlowVerdict {
//!         match flow.remote {
//!             Some(r) if flow.direction == Direction::Outbound && r.port == 23 => FlowVerdict::Drop,
//!             _ => FlowVerdict::Allow,
//!         }
//!     }
//!     fn on_drop(&mut self, flow: &Flow, outcome: &DropOutcome) {
//!         println!("dropped {} after {:?}: {:?}", flow.id, outcome.latency, outcome.result);
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     Session::new().run_filter_until(NoTelnet, tokio::signal::ctrl_c()).await?;
//!     Ok(())
//! }
//! ```

use crate::diag::DestroyError;
use sockfilter_model::flow::{Flow, FlowUpdate};
use sockfilter_model::Event;
use std::time::Duration;

/// What to do with a new flow, as NetworkExtension's `NEFilterNewFlowVerdict`
/// (named so as not to clash with the event's [`Verdict`](sockfilter_model::Verdict)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FlowVerdict {
    /// Let the flow be.
    #[default]
    Allow,
    /// Destroy the socket now (sock_diag `SOCK_DESTROY`): a connection's peer
    /// gets a reset and its owner's next call fails; a listener stops
    /// accepting; a UDP socket stops receiving. This is after the fact — the
    /// kernel cannot hold the operation while user space decides (see
    /// [`diag::destroy`](crate::diag::destroy)).
    Drop,
}

/// The result of carrying out a [`FlowVerdict::Drop`].
#[derive(Debug)]
pub struct DropOutcome {
    /// Whether the socket was destroyed. [`DestroyError::NotFound`] means it
    /// had already closed.
    pub result: Result<(), DestroyError>,
    /// From the kernel timestamp of the event that opened the flow to the
    /// completed destroy.
    pub latency: Duration,
}

/// Callbacks of a socket filter. Every method has a default (observe
/// nothing, allow everything); all run on the task that runs the session,
/// one at a time, in event order.
///
/// The event callbacks are called only for the kinds the session asks for
/// ([`Session::events`](crate::session::Session::events)); flows are tracked
/// from every event regardless.
pub trait SocketFilter {
    /// Once, when the programs are attached and before the first event:
    /// from here on nothing is missed.
    fn on_start(&mut self) {}
    /// A `bind()` succeeded (the event carries the final local endpoint).
    fn on_bind(&mut self, _event: &Event) {}
    /// A TCP socket entered LISTEN.
    fn on_listen(&mut self, _event: &Event) {}
    /// An outbound TCP connection was initiated, or a UDP socket connected.
    fn on_connect(&mut self, _event: &Event) {}
    /// A process accepted an inbound TCP connection.
    fn on_accept(&mut self, _event: &Event) {}
    /// A socket closed (with its byte counts for TCP).
    fn on_close(&mut self, _event: &Event) {}
    /// The kernel dropped `count` events (ring buffer full). The session
    /// resynchronises its flow table with the sockets that exist.
    fn on_lost(&mut self, _count: u64) {}
    /// A flow entered the flow table: a listener, an accepted or outbound
    /// connection, a bound or connected UDP socket (also those found at start
    /// when the session includes existing sockets; they have
    /// `flow.existing`). Return [`FlowVerdict::Drop`] to destroy it.
    fn handle_new_flow(&mut self, _flow: &Flow) -> FlowVerdict {
        FlowVerdict::Allow
    }
    /// Every change of the flow table (opened, changed, closed), after
    /// `handle_new_flow` for new flows: NetworkExtension's `handleReport`.
    fn on_flow_update(&mut self, _update: &FlowUpdate) {}
    /// A [`FlowVerdict::Drop`] was carried out (or failed).
    fn on_drop(&mut self, _flow: &Flow, _outcome: &DropOutcome) {}
}
