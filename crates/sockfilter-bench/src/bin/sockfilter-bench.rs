//! `sockfilter-bench`: what sockfilter costs a busy host, measured side by
//! side with the alternatives, in one run. Needs root. Everything runs in a
//! cgroup it creates (and removes), and sockfilter attaches to that cgroup
//! only (`--cgroup`), so it coexists with other sockfilters on the host.
//!
//! Sections: `throughput` (baseline vs watch / enforce / bpftrace,
//! alternating pairs), `latency` (library consumer, stamped operations),
//! `ramp` (highest event rate without loss), `memory` (RSS of watch with
//! many live connections and after many short ones).

use anyhow::{bail, Context};
use clap::Parser;
use sockfilter_bench::args::Args;
use sockfilter_bench::bench::Bench;
use sockfilter_bench::host::{chrono_now, cpu_model, loadavg, nix_is_root, which};
use sockfilter_bench::report::{note, Report};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !nix_is_root() {
        bail!("sockfilter-bench needs root (it attaches BPF programs and creates a cgroup)");
    }
    let me = std::env::current_exe()?;
    let dir = me.parent().context("binary directory")?.to_path_buf();
    let sockfilter = args
        .sockfilter
        .clone()
        .unwrap_or_else(|| dir.join("sockfilter"));
    let loadgen = args
        .loadgen
        .clone()
        .unwrap_or_else(|| dir.join("sockfilter-loadgen"));
    for b in [&sockfilter, &loadgen] {
        if !b.is_file() {
            bail!(
                "{} not found; build it first: cargo build --release -p sockfilter-cli -p sockfilter-bench",
                b.display()
            );
        }
    }
    let root = sockfilter::cgroup::cgroup2_mount().context("no cgroup v2 mount")?;
    let cg = root.join(format!("sockfilter-bench-{}", std::process::id()));
    std::fs::create_dir_all(&cg).with_context(|| format!("creating {}", cg.display()))?;
    let tmp = std::env::temp_dir().join(format!("sockfilter-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let enforce = Command::new(&sockfilter)
        .args(["enforce", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let bpftrace = which("bpftrace");
    let out = args.out.clone();
    let mut b = Bench {
        args,
        cg: cg.clone(),
        sockfilter,
        loadgen,
        enforce,
        bpftrace,
        tmp: tmp.clone(),
    };
    let mut r = Report {
        md: String::new(),
        out,
    };
    let result = run(&mut b, &mut r);
    // Leave nothing behind: the cgroup (empty once our children are gone).
    for _ in 0..50 {
        if std::fs::remove_dir(&cg).is_ok() || !cg.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// The machine header, then the sections in the order given.
fn run(b: &mut Bench, r: &mut Report) -> anyhow::Result<()> {
    let uname = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let ncpu = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    r.line(format!(
        "Machine: {ncpu} CPUs, {}, Linux {uname}; load average at start {}; {}",
        cpu_model(),
        loadavg(),
        chrono_now()
    ));
    r.line(format!(
        "Cgroup: {} (sockfilter attached there with --cgroup; the load runs in it)",
        b.cg.display()
    ));
    r.line("");
    let sections = b.args.sections.clone();
    for s in &sections {
        let started = Instant::now();
        match s.as_str() {
            "throughput" => b.throughput(r)?,
            "latency" => b.latency(r)?,
            "ramp" => b.ramp(r)?,
            "memory" => b.memory(r)?,
            other => bail!("unknown section {other:?}"),
        }
        note(format!(
            "section {s} took {:.0} s",
            started.elapsed().as_secs_f64()
        ));
    }
    r.line(format!("Load average at end: {}", loadavg()));
    Ok(())
}
