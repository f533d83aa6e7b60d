//! `sockfilter check POLICY`: validate a policy file without loading anything
//! into the kernel.
use sockfilter_model::policy::Policy;
use std::process::ExitCode;

/// Arguments of `sockfilter check`.
#[derive(clap::Args)]
pub struct Args {
    /// The policy file to validate.
    pub policy: std::path::PathBuf,
}

/// Prints `POLICY: ok (N rules, default ACTION)` and exits 0 when the policy is
/// valid; otherwise prints `FILE:LINE:COLUMN: message` (or why the file could
/// not be read) on stderr and exits 1.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match Policy::load(&args.policy) {
        Ok(policy) => {
            println!(
                "{}: ok ({} rules, default {})",
                args.policy.display(),
                policy.rules.len(),
                policy.default
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("{err}");
            Ok(ExitCode::from(1))
        }
    }
}
