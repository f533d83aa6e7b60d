//! `sockfilter history`: past events from the daemon's history database,
//! in exactly watch's text or JSON form.

use sockfilter_daemon::config::{self, Config};
use sockfilter_daemon::history::{parse_time, query, Query, DEFAULT_PATH};
use sockfilter_model::{Event, EventKind};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

/// Arguments of `sockfilter history`.
#[derive(clap::Args)]
pub struct Args {
    /// The history database; default: the `[history] path` of
    /// /etc/sockfilter/sockfilter.toml, else /var/lib/sockfilter/history.db.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Events at or after T: RFC 3339 (2026-11-30T08:00:00Z) or a duration back from now (90m, 2h, 7d).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub since: Option<SystemTime>,
    /// Events before T (same forms as --since).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub until: Option<SystemTime>,
    /// Only these kinds of event (comma-separated: bind,listen,connect,accept,close).
    #[arg(long = "event", value_delimiter = ',', value_name = "KINDS")]
    pub events: Vec<EventKind>,
    /// Only events whose local or remote port is N.
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Only events of process N.
    #[arg(long, value_name = "N")]
    pub pid: Option<u32>,
    /// Only events of processes running this executable (absolute path).
    #[arg(long, value_name = "PATH")]
    pub exe: Option<String>,
    /// Only events of processes with this command name.
    #[arg(long, value_name = "C")]
    pub comm: Option<String>,
    /// Print one JSON object per event (the contract in README.md, with `host`).
    #[arg(long)]
    pub json: bool,
}

/// The database the installed daemon writes.
fn default_db() -> PathBuf {
    Config::load(std::path::Path::new(config::DEFAULT_PATH))
        .ok()
        .and_then(|c| c.history)
        .map_or_else(|| PathBuf::from(DEFAULT_PATH), |h| h.path)
}

/// The text form of a lost record: watch's stderr line, with the time (and
/// host) the daemon recorded; a gap in what follows.
fn lost_line(v: &serde_json::Value) -> String {
    let text = |k: &str| sockfilter_model::text::escape(v[k].as_str().unwrap_or("?")).into_owned();
    format!(
        "sockfilter: {} {}: the kernel dropped {} events (ring buffer full): events of that moment are missing from the history",
        text("time"),
        text("host"),
        v["count"].as_u64().unwrap_or(0),
    )
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let db = args.db.unwrap_or_else(default_db);
    anyhow::ensure!(
        db.exists(),
        "{}: no history database (is [history] configured, and has the daemon run?)",
        db.display()
    );
    let q = Query {
        since: args.since,
        until: args.until,
        kinds: args.events,
        port: args.port,
        pid: args.pid,
        exe: args.exe,
        comm: args.comm,
    };
    let colour = !args.json && std::io::stdout().is_terminal();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut failed: Option<std::io::Error> = None;
    let mut bad_rows = 0u64;
    query(&db, &q, |json| {
        if failed.is_some() {
            return;
        }
        let line = if args.json {
            json.to_string()
        } else {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
                bad_rows += 1;
                return;
            };
            if v["event"] == "lost" {
                // As watch reports it (on stderr), with when it happened.
                let _ = out.flush();
                eprintln!("{}", lost_line(&v));
                return;
            }
            match Event::from_json(&v) {
                Ok(e) => crate::text::event_line(&e, colour),
                Err(_) => {
                    bad_rows += 1;
                    return;
                }
            }
        };
        if let Err(e) = writeln!(out, "{line}") {
            failed = Some(e);
        }
    })?;
    let _ = out.flush();
    if bad_rows > 0 {
        eprintln!("sockfilter: {bad_rows} rows of the database are not events and were skipped");
    }
    Ok(ExitCode::SUCCESS)
}
