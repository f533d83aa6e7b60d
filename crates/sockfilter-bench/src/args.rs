//! The runner's command line.

use clap::Parser;
use std::path::PathBuf;

/// Measures sockfilter against a baseline and bpftrace (root only).
#[derive(Parser)]
#[command(name = "sockfilter-bench")]
pub struct Args {
    /// Baseline/agent pairs per throughput measurement (at least 5 for the document).
    #[arg(long, default_value_t = 5)]
    pub pairs: usize,
    /// Seconds per load run in the throughput section.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Client threads of the connect and listen storms.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Sections to run (comma-separated): throughput,latency,ramp,memory.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "throughput,latency,ramp,memory"
    )]
    pub sections: Vec<String>,
    /// Load modes of the throughput section.
    #[arg(long, value_delimiter = ',', default_value = "connect,listen,bulk")]
    pub modes: Vec<String>,
    /// Agents of the throughput section.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "watch,watch-pipe,library,enforce-10,enforce-1000,enforce-10000,bpftrace,bpftrace-pipe"
    )]
    pub agents: Vec<String>,
    /// Short connections for the memory section's history test.
    #[arg(long, default_value_t = 1_000_000)]
    pub million: u64,
    /// Live connections for the memory section.
    #[arg(long, default_value_t = 10_000)]
    pub live: usize,
    /// The sockfilter binary (default: next to this one).
    #[arg(long)]
    pub sockfilter: Option<PathBuf>,
    /// The load generator (default: next to this one).
    #[arg(long)]
    pub loadgen: Option<PathBuf>,
    /// Another sockfilter binary (e.g. a build of an earlier commit),
    /// measured as agent `watch-before`: the same command as `watch`, so
    /// that a change's before and after are measured in one run.
    #[arg(long)]
    pub before: Option<PathBuf>,
    /// Write the Markdown report here too.
    #[arg(long)]
    pub out: Option<PathBuf>,
}
