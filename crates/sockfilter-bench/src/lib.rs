//! Benchmarks for sockfilter.
//!
//! [`loadgen`] is a loopback-only socket load generator (connect storm,
//! listen storm, bulk transfer, many live connections), bounded in time and
//! in count, used by the `sockfilter-loadgen` binary. [`stats`] holds the
//! small statistics the runner (`sockfilter-bench`) reports. The runner
//! itself is [`bench::Bench`] (state, load runs), `agent` (the agents it
//! measures), `consumer` (the library consumer), [`host`] (/proc and
//! rusage readings), [`report`] (the Markdown report) and one module per
//! section under [`sections`]. The load generator needs no root; the runner
//! does (it attaches sockfilter and bpftrace).

#![deny(missing_docs)]

mod agent;
pub mod args;
pub mod bench;
mod consumer;
pub mod host;
pub mod loadgen;
pub mod report;
pub mod sections;
pub mod stats;

/// Nanoseconds of `CLOCK_REALTIME` now: the clock shared by the load
/// generator's stamps and the event consumer's arrival times.
pub fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
