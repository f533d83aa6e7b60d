//! `sockfilter-loadgen`: loopback socket load, bounded in time and count;
//! prints one JSON line per run (`mode`, `ops`, `seconds`, `rate`, `unit`).

use anyhow::Context;
use clap::Parser;
use sockfilter_bench::loadgen::{self, Config, Mode};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Loopback socket load generator (127.0.0.1 only).
#[derive(Parser)]
#[command(name = "sockfilter-loadgen")]
struct Args {
    /// connect (connect storm), listen (listen storm), bulk (one connection,
    /// large writes) or hold (open --connections and keep them).
    #[arg(long, default_value = "connect")]
    mode: Mode,
    /// Client threads for the connect and listen storms.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Upper bound on the run's time, seconds (hold: how long to hold).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Upper bound on operations (bytes for bulk).
    #[arg(long)]
    max_ops: Option<u64>,
    /// Target rate, operations per second over all threads (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// hold: connections to open.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Write "COOKIE REALTIME_NS" per listen()/connect() to this file.
    #[arg(long)]
    stamps: Option<PathBuf>,
    /// Join this cgroup v2 directory before creating any socket.
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// Runs, one JSON line each.
    #[arg(long, default_value_t = 1)]
    runs: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(cg) = &args.cgroup {
        let procs = cg.join("cgroup.procs");
        std::fs::write(&procs, std::process::id().to_string())
            .with_context(|| format!("joining cgroup: writing {}", procs.display()))?;
    }
    let cfg = Config {
        mode: args.mode,
        threads: args.threads,
        duration: Duration::from_secs_f64(args.seconds),
        max_ops: args.max_ops.unwrap_or(u64::MAX),
        rate: args.rate,
        stamps: args.stamps.is_some(),
        connections: args.connections,
    };
    let mut out = std::io::stdout().lock();
    for _ in 0..args.runs {
        let r = if cfg.mode == Mode::Hold {
            loadgen::hold(&cfg, |n| {
                eprintln!("sockfilter-loadgen: holding {n} connections");
            })
        } else {
            loadgen::run(&cfg)
        }
        .context("running the load")?;
        if let Some(path) = &args.stamps {
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            );
            for s in &r.stamps {
                writeln!(f, "{} {}", s.cookie, s.ns)?;
            }
            f.flush()?;
        }
        writeln!(out, "{}", r.to_json())?;
        out.flush()?;
    }
    Ok(())
}
