//! `sockfilter unload`: switches off the enforcement that a dead
//! `sockfilter enforce` left pinned in bpffs (see docs/security.md).

use sockfilter::pinned::{scope_name, unload, Unloaded, ROOT};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `sockfilter unload`.
#[derive(clap::Args)]
pub struct Args {
    /// Only the enforcement of `enforce --cgroup PATH` (default: every scope).
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "sockfilter unload needs root (it removes BPF programs and pins in {ROOT})"
    );
    let only = match &args.cgroup {
        Some(dir) => Some(
            scope_name(Some(dir))
                .map_err(|e| anyhow::anyhow!("--cgroup {}: {e}", dir.display()))?,
        ),
        None => None,
    };
    let scopes = unload(only.as_deref()).map_err(|e| anyhow::anyhow!("{ROOT}: {e}"))?;
    if scopes.is_empty() {
        eprintln!("sockfilter: nothing is pinned in {ROOT}; no enforcement to remove");
    }
    for scope in scopes {
        match scope {
            Unloaded::Removed { dir, removed } => eprintln!(
                "sockfilter: removed the enforcement pinned in {}: {} links detached, {} programs and {} maps unpinned",
                dir.display(),
                removed.links,
                removed.programs,
                removed.maps
            ),
            Unloaded::Running { dir } => eprintln!(
                "sockfilter: left {}: a running sockfilter enforce holds it (SIGTERM stops it and removes its enforcement)",
                dir.display()
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
