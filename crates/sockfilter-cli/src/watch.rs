//! `sockfilter watch`: every socket event on the host, as it happens.

use anyhow::Context;
use sockfilter::watch::{Item, WatchOptions, Watcher};
use sockfilter_model::event::{lost_json, Event, EventKind};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `sockfilter watch`.
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object per event (the contract in README.md).
    #[arg(long)]
    pub json: bool,
    /// Only these kinds of event (comma-separated: bind,listen,connect,accept,close).
    #[arg(long = "event", value_delimiter = ',')]
    pub events: Vec<EventKind>,
    /// Only events of these process ids.
    #[arg(long, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// Only events of processes with this command name.
    #[arg(long, value_delimiter = ',')]
    pub comm: Vec<String>,
    /// Only events whose local or remote port is one of these.
    #[arg(long, value_delimiter = ',')]
    pub port: Vec<u16>,
    /// Only processes in this cgroup v2 subtree (a directory of the cgroup2 mount).
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// Do not report the sockets that exist at start.
    #[arg(long)]
    pub no_existing: bool,
}

impl Args {
    fn wants(&self, e: &Event) -> bool {
        let owner = e.owner.as_ref();
        (self.events.is_empty() || self.events.contains(&e.kind))
            && (self.pid.is_empty() || owner.is_some_and(|o| self.pid.contains(&o.pid)))
            && (self.comm.is_empty() || owner.is_some_and(|o| self.comm.contains(&o.comm)))
            && (self.port.is_empty()
                || self.port.contains(&e.local.port)
                || e.remote.is_some_and(|r| self.port.contains(&r.port)))
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(c) = &args.cgroup {
        anyhow::ensure!(
            c.is_dir(),
            "--cgroup {}: not a directory of the cgroup v2 hierarchy",
            c.display()
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(watch(args))
}

async fn watch(args: Args) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut watcher = Watcher::start(WatchOptions {
        cgroup: args.cgroup.clone(),
        existing: !args.no_existing,
    })?;
    let scope = match &args.cgroup {
        Some(c) => format!("processes in cgroup {}", c.display()),
        None => format!(
            "every process (cgroup {})",
            watcher.probe().cgroup_path().display()
        ),
    };
    eprintln!(
        "sockfilter: watching bind, listen, connect, accept and close of {scope}; Ctrl-C to stop"
    );

    let colour = !args.json && std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    let mut counts: BTreeMap<EventKind, u64> = BTreeMap::new();
    let mut dropped = 0u64;
    let signal_name = loop {
        let item = tokio::select! {
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            item = watcher.next() => item,
        };
        let Some(item) = item else {
            break "end of stream";
        };
        let line = match item {
            Item::Lost(n) => {
                dropped += n;
                eprintln!("sockfilter: the kernel dropped {n} events (ring buffer full); {dropped} so far");
                if !args.json {
                    continue;
                }
                lost_json(n).to_string()
            }
            Item::Event(e) => {
                *counts.entry(e.kind).or_default() += 1;
                if !args.wants(&e) {
                    continue;
                }
                if args.json {
                    e.to_json().to_string()
                } else {
                    crate::text::event_line(&e, colour)
                }
            }
        };
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            break "closed output";
        }
    };
    let malformed = watcher.malformed_total();
    drop(watcher); // detaches every program before we say we stopped
    let summary: Vec<String> = EventKind::ALL
        .iter()
        .map(|k| format!("{k} {}", counts.get(k).copied().unwrap_or(0)))
        .collect();
    eprintln!(
        "sockfilter: stopped ({signal_name}); programs detached; events: {}; dropped by the kernel: {dropped}{}",
        summary.join(", "),
        if malformed > 0 { format!("; malformed records: {malformed}") } else { String::new() }
    );
    Ok(ExitCode::SUCCESS)
}
