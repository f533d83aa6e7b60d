//! The `sockfilter` command.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod assets;
mod check;
mod daemon;
mod doctor;
mod enforce;
mod fleet;
mod flows;
mod history;
mod listeners;
mod supervise;
mod supervise_names;
mod text;
mod unload;
mod watch;

#[derive(Parser)]
#[command(
    name = "sockfilter",
    version,
    about = "Linux socket filter: see and stop bind, listen, connect, accept and close, system-wide"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every socket's bind, listen, connect, accept and close as it happens.
    Watch(watch::Args),
    /// Enforce a policy in the kernel, streaming events like watch; existing sockets are judged too, and enforcement outlives a crash (see unload).
    Enforce(enforce::Args),
    /// Validate a policy file.
    Check(check::Args),
    /// Remove the enforcement a crashed `enforce` left pinned in /sys/fs/bpf/sockfilter.
    ///
    /// `enforce` (and `daemon` with a policy) keeps its programs, links and
    /// maps pinned in bpffs so that the kernel goes on enforcing if it dies.
    /// unload detaches every such link and removes every program, map and
    /// pin a dead one left. A running enforce is left alone (SIGTERM stops it
    /// and removes its enforcement). Exits 0 also when nothing is pinned.
    Unload(unload::Args),
    /// Run a program with its socket calls held until sockfilter decides.
    Supervise(supervise::Args),
    /// List TCP listeners and bound, unconnected UDP sockets with their processes.
    Listeners(listeners::Args),
    /// List the current flows: listeners, connections, UDP sockets.
    Flows(flows::Args),
    /// Probe what this kernel offers for each mechanism sockfilter uses.
    Doctor(doctor::Args),
    /// Run as a service: events to history, metrics, files, syslog and NATS.
    ///
    /// Reads a TOML configuration (default /etc/sockfilter/sockfilter.toml;
    /// every section optional): `host`, `policy` (enforced as by `sockfilter
    /// enforce`), `cgroup` (one cgroup v2 subtree), `[history]` (`path`,
    /// `retention`: a SQLite database for `sockfilter history`), `[metrics]`
    /// (`listen`: Prometheus text format at /metrics) and `[[output]]`
    /// tables of `kind` "file" (`path`, `rotate_mb`, `keep`), "syslog"
    /// (`address`: unix:PATH, udp:HOST:PORT or tcp:HOST:PORT; RFC 5424) or
    /// "nats" (`url`, `subject`, `queue_mb`; JetStream, acknowledged,
    /// queued on disk while the server is unreachable). Every event goes out
    /// as the JSON of `sockfilter watch --json` plus `host`. Sends READY=1 to
    /// $NOTIFY_SOCKET once running; SIGHUP re-reads config and policy (an
    /// invalid file keeps the running one); SIGTERM stops cleanly. Errors
    /// in the file are FILE:LINE:COLUMN: message.
    Daemon(daemon::Args),
    /// Validate a daemon configuration file.
    CheckConfig(daemon::CheckArgs),
    /// Past events from the daemon's history database.
    History(history::Args),
    /// Ask every host that publishes to a NATS server.
    Fleet(fleet::Args),
    /// Write the man pages and shell completions into a directory (packaging).
    #[command(hide = true)]
    Assets(assets::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Watch(args) => watch::run(args),
        Command::Enforce(args) => enforce::run(args),
        Command::Check(args) => check::run(args),
        Command::Unload(args) => unload::run(args),
        Command::Supervise(args) => supervise::run(args),
        Command::Listeners(args) => listeners::run(args),
        Command::Flows(args) => flows::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Daemon(args) => daemon::run(args),
        Command::CheckConfig(args) => daemon::check(args),
        Command::History(args) => history::run(args),
        Command::Fleet(args) => fleet::run(args),
        Command::Assets(args) => assets::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sockfilter: {err:#}");
            ExitCode::FAILURE
        }
    }
}
