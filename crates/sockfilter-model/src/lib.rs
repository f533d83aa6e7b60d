//! The kernel-free half of sockfilter: what a socket event is, how it is
//! written as JSON (the contract that outside tools parse), and the policy
//! and flow models built on top of events.
//!
//! Nothing in this crate talks to the kernel, so everything here is unit
//! tested without root.

#![warn(missing_docs)]

pub mod event;
pub mod event_json;
pub mod file_error;
pub mod flow;
pub mod host_names;
mod json_write;
pub mod policy;
pub mod text;
pub mod workload;

pub use event::{Endpoint, Event, EventKind, Family, Owner, Proto, Verdict};
