//! `sockfilter check POLICY` (being built).
use std::process::ExitCode;

/// Arguments of `sockfilter check`.
#[derive(clap::Args)]
pub struct Args {
    /// The policy file to validate.
    pub policy: std::path::PathBuf,
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("check is not built yet")
}
