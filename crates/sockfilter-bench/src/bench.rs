//! The runner's state (paths, cgroup, what is available) and how it runs the load generator.

use crate::args::Args;
use crate::host::children_cpu;
use anyhow::{bail, Context};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The runner: its options and what it found out before the first section.
pub struct Bench {
    /// The command line.
    pub args: Args,
    /// The cgroup the load runs in and sockfilter attaches to.
    pub cg: PathBuf,
    /// The sockfilter binary.
    pub sockfilter: PathBuf,
    /// The load generator binary.
    pub loadgen: PathBuf,
    /// Whether this sockfilter build has `enforce`.
    pub enforce: bool,
    /// The bpftrace binary, when installed.
    pub bpftrace: Option<PathBuf>,
    /// A scratch directory (policies, scripts, stamps), removed at the end.
    pub tmp: PathBuf,
}

impl Bench {
    pub(crate) fn loadgen_cmd(&self, args: &[String]) -> Command {
        let mut c = Command::new(&self.loadgen);
        c.arg("--cgroup").arg(&self.cg).args(args);
        c
    }

    /// Runs the load generator in the cgroup; its JSON line, with its CPU
    /// time (user + system, from the children's rusage) added as
    /// `loadgen_cpu` (seconds).
    pub(crate) fn load(&self, args: &[String]) -> anyhow::Result<Value> {
        let cpu0 = children_cpu();
        let out = self
            .loadgen_cmd(args)
            .stderr(Stdio::inherit())
            .output()
            .context("running sockfilter-loadgen")?;
        let loadgen_cpu = children_cpu() - cpu0;
        if !out.status.success() {
            bail!("sockfilter-loadgen {:?} failed: {}", args, out.status);
        }
        let s = String::from_utf8_lossy(&out.stdout);
        let last = s
            .lines()
            .last()
            .context("no output from sockfilter-loadgen")?;
        let mut v: Value = serde_json::from_str(last)?;
        v["loadgen_cpu"] = loadgen_cpu.into();
        Ok(v)
    }

    pub(crate) fn mode_args(&self, mode: &str) -> Vec<String> {
        vec![
            "--mode".into(),
            mode.into(),
            "--threads".into(),
            self.args.threads.to_string(),
            "--seconds".into(),
            self.args.seconds.to_string(),
        ]
    }
}
