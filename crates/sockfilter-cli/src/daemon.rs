//! `sockfilter daemon [--config FILE]` and `sockfilter check-config FILE`.

use sockfilter_daemon::config::{Config, DEFAULT_PATH};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `sockfilter daemon`.
#[derive(clap::Args)]
pub struct Args {
    /// The configuration file (TOML; see `sockfilter check-config`).
    #[arg(long, default_value = DEFAULT_PATH)]
    pub config: PathBuf,
}

/// Arguments of `sockfilter check-config`.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// The configuration file to validate.
    pub config: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Err(e) = Config::load(&args.config) {
        eprintln!("{e}");
        return Ok(ExitCode::from(1));
    }
    crate::watch::runtime()?.block_on(sockfilter_daemon::daemon::run(&args.config))?;
    Ok(ExitCode::SUCCESS)
}

/// Prints `FILE: ok (...)` and exits 0, or `FILE:LINE:COLUMN: message` on
/// stderr (about the config, or the policy it names) and exits 1.
pub fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    match Config::load(&args.config) {
        Ok(c) => {
            // The policy it names must be enforceable too.
            if let Some(policy) = &c.policy {
                if let Err(lines) = sockfilter::enforce::agent::load_enforceable(policy) {
                    for l in lines {
                        eprintln!("{l}");
                    }
                    return Ok(ExitCode::from(1));
                }
            }
            let outputs: Vec<&str> = c.outputs.iter().map(|o| o.kind()).collect();
            println!(
                "{}: ok (history: {}, metrics: {}, outputs: {})",
                args.config.display(),
                c.history
                    .as_ref()
                    .map_or("none".into(), |h| h.path.display().to_string()),
                c.metrics
                    .as_ref()
                    .map_or("none".into(), |m| m.listen.to_string()),
                if outputs.is_empty() {
                    "none".into()
                } else {
                    outputs.join(", ")
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}
