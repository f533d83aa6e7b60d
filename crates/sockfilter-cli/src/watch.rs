//! `sockfilter watch`: every socket event on the host, as it happens. The
//! event loop here is shared with `sockfilter enforce`, which adds its work
//! through [`Extra`].

use anyhow::Context;
use sockfilter::watch::{Item, WatchOptions, Watcher};
use sockfilter_model::event::{lost_json, Event, EventKind};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// What to print, shared by watch and enforce.
#[derive(clap::Args)]
pub struct Output {
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
    /// Do not report the sockets that exist at start (enforce still reports those its policy denies and closes).
    #[arg(long)]
    pub no_existing: bool,
}

/// Arguments of `sockfilter watch`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub output: Output,
}

impl Output {
    fn wants(&self, e: &Event) -> bool {
        let owner = e.owner.as_ref();
        (self.events.is_empty() || self.events.contains(&e.kind))
            && (self.pid.is_empty() || owner.is_some_and(|o| self.pid.contains(&o.pid)))
            && (self.comm.is_empty() || owner.is_some_and(|o| self.comm.contains(&o.comm)))
            && (self.port.is_empty()
                || self.port.contains(&e.local.port)
                || e.remote.is_some_and(|r| self.port.contains(&r.port)))
    }

    /// Checks the arguments and starts the watcher (with the enforcement
    /// hooks when `enforce`).
    pub fn start(&self, enforce: bool) -> anyhow::Result<Watcher> {
        if let Some(c) = &self.cgroup {
            anyhow::ensure!(
                c.is_dir(),
                "--cgroup {}: not a directory of the cgroup v2 hierarchy",
                c.display()
            );
        }
        // One line naming what this kernel cannot do for this command
        // (`sockfilter doctor` has the whole picture).
        let command = if enforce {
            sockfilter::features::Command::Enforce
        } else {
            sockfilter::features::Command::Watch
        };
        if let Some(line) = sockfilter::features::degraded_line(command) {
            eprintln!("sockfilter: {line}");
        }
        let opts = WatchOptions {
            cgroup: self.cgroup.clone(),
            // enforce reports existing sockets once its policy has judged
            // them (PolicyAgent::install).
            existing: !self.no_existing && !enforce,
        };
        Ok(if enforce {
            Watcher::start_persistent(opts)?
        } else {
            Watcher::start_with(opts, false)?
        })
    }

    /// "every process (cgroup /sys/fs/cgroup)" or "processes in cgroup X".
    pub fn scope(&self, w: &Watcher) -> String {
        match &self.cgroup {
            Some(c) => format!("processes in cgroup {}", c.display()),
            None => format!(
                "every process (cgroup {})",
                w.probe().cgroup_path().display()
            ),
        }
    }
}

/// What enforce adds to the loop.
pub trait Extra {
    /// Called for every event, before it is printed.
    fn on_event(&mut self, _w: &mut Watcher, _e: &Event) {}
    /// Called about every [`TICK`].
    fn on_tick(&mut self, _w: &mut Watcher) {}
    /// Called on SIGHUP.
    fn on_hangup(&mut self, _w: &mut Watcher) {}
    /// Extra lines for the exit summary, taken before detaching.
    fn summary(&mut self, _w: &Watcher) -> Vec<String> {
        Vec::new()
    }
}

struct NoExtra;
impl Extra for NoExtra {}

/// How often [`Extra::on_tick`] runs.
pub const TICK: Duration = Duration::from_millis(200);

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let watcher = args.output.start(false)?;
        let scope = args.output.scope(&watcher);
        event_loop(watcher, &args.output, &mut NoExtra, || {
            eprintln!("sockfilter: watching bind, listen, connect, accept and close of {scope}; Ctrl-C to stop")
        })
        .await
    })
}

/// A single-threaded tokio runtime: one consumer, no contention.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Prints events until SIGINT or SIGTERM, then detaches and prints a
/// summary on stderr. `ready` runs once the signal handlers are installed,
/// so that whoever waits for its message may signal us at once.
pub async fn event_loop(
    mut watcher: Watcher,
    out_args: &Output,
    extra: &mut dyn Extra,
    ready: impl FnOnce(),
) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    ready();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let colour = !out_args.json && std::io::stdout().is_terminal();
    // Buffered, and flushed whenever no decoded event is waiting: one write
    // per batch under load, no delay when events trickle in.
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let mut line = String::with_capacity(1024);
    let mut counts: BTreeMap<EventKind, u64> = BTreeMap::new();
    let mut dropped = 0u64;
    // After a stop signal, what the kernel produced before it is still
    // written out (`remaining`), then the loop ends.
    let mut remaining: Option<std::vec::IntoIter<Item>> = None;
    let mut stop_reason = "";
    loop {
        let item = if let Some(rest) = remaining.as_mut() {
            match rest.next() {
                Some(item) => item,
                None => break,
            }
        } else if let Some(item) = watcher.next_ready() {
            // The rest of a decoded batch: no need to ask the event loop
            // (signals and ticks are looked at once per batch).
            item
        } else {
            let item = tokio::select! {
                _ = sigint.recv() => Err("SIGINT"),
                _ = sigterm.recv() => Err("SIGTERM"),
                _ = sighup.recv() => { extra.on_hangup(&mut watcher); continue }
                _ = tick.tick() => { extra.on_tick(&mut watcher); continue }
                item = watcher.next() => item.ok_or("end of stream"),
            };
            match item {
                Ok(item) => item,
                Err(reason) => {
                    stop_reason = reason;
                    remaining = Some(watcher.take_remaining().into_iter());
                    continue;
                }
            }
        };
        line.clear();
        match item {
            Item::Lost(n) => {
                dropped += n;
                eprintln!(
                    "sockfilter: the kernel dropped {n} events (ring buffer full); {dropped} so far"
                );
                if out_args.json {
                    line.push_str(&lost_json(n).to_string());
                }
            }
            Item::Event(e) => {
                *counts.entry(e.kind).or_default() += 1;
                extra.on_event(&mut watcher, &e);
                if out_args.wants(&e) {
                    if out_args.json {
                        e.write_json(&mut line);
                    } else {
                        line.push_str(&crate::text::event_line(&e, colour));
                    }
                }
            }
        }
        if !line.is_empty() {
            line.push('\n');
            if out.write_all(line.as_bytes()).is_err() {
                stop_reason = "closed output";
                break;
            }
        }
        if remaining.is_none() && watcher.pending() == 0 && out.flush().is_err() {
            stop_reason = "closed output";
            break;
        }
    }
    let _ = out.flush();
    let malformed = watcher.malformed_total();
    let not_kept = watcher.older_not_kept();
    let (execs_lost, execs_forgotten) = watcher.execs_not_kept();
    let names_evicted = watcher.host_names().evicted();
    let dns_lost = watcher.dns_lost_total();
    let (uring_unseen, uring_full) = watcher.uring_not_reported();
    let tables_full = watcher.kernel_tables_full();
    let extra_lines = extra.summary(&watcher);
    // A clean stop ends enforcement: nothing pinned stays behind.
    watcher.release_pins();
    drop(watcher); // detaches every program before we say we stopped
    let summary: Vec<String> = EventKind::ALL
        .iter()
        .map(|k| format!("{k} {}", counts.get(k).copied().unwrap_or(0)))
        .collect();
    eprintln!(
        "sockfilter: stopped ({stop_reason}); programs detached; events: {}; dropped by the kernel: {dropped}{}",
        summary.join(", "),
        if malformed > 0 {
            format!("; malformed records: {malformed}")
        } else {
            String::new()
        }
    );
    if not_kept > 0 {
        eprintln!(
            "sockfilter: {not_kept} sockets older than the watch were beyond what is kept for their close ({} owners, {} UDP endpoints): their closes may lack an owner or, for UDP, not be reported",
            sockfilter::older_sockets::MAX_KEPT,
            sockfilter::older_sockets::MAX_UDP_WRITTEN
        );
    }
    if execs_lost + execs_forgotten > 0 {
        eprintln!(
            "sockfilter: exec records: {execs_lost} lost (their ring buffer was full), {execs_forgotten} of the oldest forgotten (the table keeps {}): an event naming one of those execs had its parent_exe and cmdline read from the kernel's process table or /proc if the process still ran it, null otherwise",
            sockfilter::ancestry::MAX_EXECS
        );
    }
    if names_evicted + dns_lost > 0 {
        eprintln!(
            "sockfilter: DNS names: {dns_lost} answers lost (the ring buffer was full), {names_evicted} (address, name) pairs dropped before their TTL ran out (the table keeps {}): connects to those addresses had remote_host null",
            sockfilter::watch::HOST_NAMES_CAPACITY
        );
    }
    if uring_unseen + uring_full > 0 {
        eprintln!(
            "sockfilter: io_uring: {uring_unseen} accepts or UDP connects submitted with IOSQE_CQE_SKIP_SUCCESS (no completion when they succeed) and {uring_full} accepts beyond the table of accepts in flight were not reported as accepts or connects"
        );
    }
    if tables_full.iter().any(|(_, n)| *n > 0) {
        let [(_, exe), (_, accepted), (_, udp)] = tables_full;
        eprintln!(
            "sockfilter: kernel tables full: {exe} processes' executables not recorded (their events have exe null and match no exe rule), {accepted} accepted sockets' owners and {udp} UDP sockets' endpoints not kept for their close"
        );
    }
    for l in extra_lines {
        eprintln!("sockfilter: {l}");
    }
    Ok(ExitCode::SUCCESS)
}
