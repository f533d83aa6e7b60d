//! Prints a warning whenever a process starts listening on an address other
//! than loopback, naming the process and its executable.
//!
//! ```text
//! sudo cargo run --example listen_alert [-- --cgroup /sys/fs/cgroup/my.slice]
//! listen_alert: watching
//! WARNING: python3 (pid 4242, uid 1000, /usr/bin/python3.11) listens on 0.0.0.0:8000 (tcp4)
//! ```
//!
//! Prints `listen_alert: watching` on stderr once the programs are attached:
//! from then on no listener is missed.

use sockfilter::model::{Event, EventKind, Family};
use sockfilter::session::Session;
use sockfilter::watch::Item;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: listen_alert [--cgroup PATH]");
    ExitCode::from(2)
}

fn alert(e: &Event) -> String {
    let family = if e.family == Family::Ipv6 { "6" } else { "4" };
    let who = match &e.owner {
        Some(o) => format!(
            "{} (pid {}, uid {}, {})",
            o.comm,
            o.pid,
            o.uid,
            o.exe.as_deref().unwrap_or("executable unknown")
        ),
        None => "an unknown process".into(),
    };
    format!(
        "WARNING: {who} listens on {} ({}{family})",
        e.local,
        e.proto.as_str()
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut session = Session::new().events([EventKind::Listen]).existing(false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--cgroup", Some(path)) => session = session.cgroup(path),
            _ => return usage(),
        }
    }
    let mut events = match session.start() {
        Ok(events) => events,
        Err(e) => {
            eprintln!("listen_alert: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("listen_alert: watching");
    loop {
        let item = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            item = events.next() => item,
        };
        match item {
            None => break,
            Some(Item::Lost(n)) => eprintln!("listen_alert: the kernel dropped {n} events"),
            // A v4-mapped loopback address (::ffff:127.0.0.1) is loopback too.
            Some(Item::Event(e)) if !e.local.ip.to_canonical().is_loopback() => {
                println!("{}", alert(&e));
            }
            Some(Item::Event(_)) => {}
        }
    }
    ExitCode::SUCCESS
}
