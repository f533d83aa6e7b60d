//! `sockfilter supervise` (being built).
use std::process::ExitCode;

/// Arguments of `sockfilter supervise`.
#[derive(clap::Args)]
pub struct Args {
    /// The command to run.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("supervise is not built yet")
}
