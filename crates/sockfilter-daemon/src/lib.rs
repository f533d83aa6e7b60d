//! sockfilter as a service: `sockfilter daemon` reads a TOML
//! configuration ([`config`]), watches (and, with a policy, enforces) like
//! `sockfilter watch`, and sends every event, with a `host` field, to a
//! SQLite [`history`], Prometheus [`metrics`] and the [`outputs`] (a file
//! of JSON lines, syslog, NATS JetStream); [`fleet`] reads the listeners
//! that every daemon publishes to NATS.

#![warn(missing_docs)]

pub mod config;
pub mod daemon;
pub mod fleet;
pub mod history;
pub mod host;
pub mod listeners;
pub mod metrics;
pub mod notify;
pub mod outputs;
pub mod private_file;
