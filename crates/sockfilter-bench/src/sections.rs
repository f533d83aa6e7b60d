//! The report's sections, one file each, run in the order `--sections` gives.

pub mod latency;
pub mod memory;
pub mod ramp;
pub mod throughput;
