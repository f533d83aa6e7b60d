//! sockfilter: every socket's bind, listen, connect, accept and close on a
//! Linux host, from the kernel, attributed to the process behind it.
//!
//! The kernel side is a set of C BPF programs (`bpf/` at the top of the
//! repository), compiled once and embedded here; this crate loads and attaches
//! them, reads their ring buffer and turns raw records into
//! [`sockfilter_model::Event`]s.

#![warn(missing_docs)]

pub mod abi;
pub mod ancestry;
mod batch_timer;
mod bpf_syscall;
pub mod cgroup;
pub mod cgroup_changes;
pub mod compat_hook;
pub mod decode;
pub mod destroy;
pub mod diag;
pub mod enforce;
pub mod features;
pub mod filter;
pub mod listener_registry;
pub mod loader;
pub mod netns_tag;
pub mod older_sockets;
pub mod pinned;
pub mod pinned_names;
pub mod procfs;
pub mod session;
pub mod supervise;
pub mod watch;

pub use sockfilter_model as model;
