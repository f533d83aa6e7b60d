//! `sockfilter check POLICY`: validate a policy file without loading anything
//! into the kernel.
use sockfilter_model::policy::Policy;
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `sockfilter check`.
#[derive(clap::Args)]
pub struct Args {
    /// The policy file to validate.
    pub policy: std::path::PathBuf,
    /// Check for `sockfilter supervise` only: allow rules that the kernel
    /// hooks of `sockfilter enforce` cannot enforce (e.g. exe on accept).
    #[arg(long)]
    pub supervise: bool,
}

/// Loads a policy and, unless `supervise_only`, checks that every rule can
/// be enforced by the kernel as written. Errors are `FILE:LINE:COLUMN:
/// message` lines.
pub fn load(path: &Path, supervise_only: bool) -> Result<Policy, Vec<String>> {
    if supervise_only {
        Policy::load(path).map_err(|e| vec![e.to_string()])
    } else {
        sockfilter::enforce::agent::load_enforceable(path)
    }
}

/// Prints `POLICY: ok (N rules, default ACTION)` and exits 0 when the policy is
/// valid; otherwise prints `FILE:LINE:COLUMN: message` (or why the file could
/// not be read) on stderr and exits 1.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match load(&args.policy, args.supervise) {
        Ok(policy) => {
            println!(
                "{}: ok ({} rules, default {})",
                args.policy.display(),
                policy.rules.len(),
                policy.default
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(lines) => {
            for l in lines {
                eprintln!("{l}");
            }
            Ok(ExitCode::from(1))
        }
    }
}
