//! A NetworkExtension-style content filter: drops every new connection to a
//! given port — outbound connections to it and inbound connections accepted
//! on it, TCP or connected UDP — and prints what it dropped.
//!
//! ```text
//! sudo cargo run --example drop_flows -- --port 8080 [--cgroup /sys/fs/cgroup/my.slice]
//! drop_flows: watching
//! dropped tcp4 outbound 127.0.0.1:51234 -> 127.0.0.1:8080 by curl (pid 4242, /usr/bin/curl) 212µs after the connect
//! ```
//!
//! Prints `drop_flows: watching` on stderr once the programs are attached.
//! Dropping is after the fact (sock_diag SOCK_DESTROY): the connection is
//! reset within a fraction of a millisecond of its first event, but the
//! kernel cannot hold the connect() itself; `sockfilter supervise` can.

use sockfilter::filter::{DropOutcome, FlowVerdict, SocketFilter};
use sockfilter::model::flow::{Direction, Flow, FlowState};
use sockfilter::model::Family;
use sockfilter::session::Session;
use std::process::ExitCode;

struct DropPort {
    port: u16,
}

impl SocketFilter for DropPort {
    fn on_start(&mut self) {
        eprintln!("drop_flows: watching");
    }

    fn on_lost(&mut self, count: u64) {
        eprintln!("drop_flows: the kernel dropped {count} events; flows may have been missed");
    }

    fn handle_new_flow(&mut self, flow: &Flow) -> FlowVerdict {
        let to_port = match (flow.direction, flow.remote) {
            _ if flow.state == FlowState::Listening => false,
            (Direction::Outbound, Some(remote)) => remote.port == self.port,
            (Direction::Inbound, Some(_)) => flow.local.port == self.port,
            (_, None) => false,
        };
        if to_port {
            FlowVerdict::Drop
        } else {
            FlowVerdict::Allow
        }
    }

    fn on_drop(&mut self, flow: &Flow, outcome: &DropOutcome) {
        let family = if flow.family == Family::Ipv6 {
            "6"
        } else {
            "4"
        };
        let remote = flow.remote.map(|r| r.to_string()).unwrap_or_default();
        let (src, dst) = match flow.direction {
            Direction::Outbound => (flow.local.to_string(), remote),
            Direction::Inbound => (remote, flow.local.to_string()),
        };
        let who = match &flow.owner {
            Some(o) => format!(
                "{} (pid {}, {})",
                o.comm,
                o.pid,
                o.exe.as_deref().unwrap_or("executable unknown")
            ),
            None => "an unknown process".into(),
        };
        let what = format!(
            "{}{family} {} {src} -> {dst} by {who}",
            flow.proto.as_str(),
            flow.direction.as_str()
        );
        match &outcome.result {
            Ok(()) => println!("dropped {what} {:?} after its event", outcome.latency),
            Err(e) => println!("could not drop {what}: {e}"),
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: drop_flows --port N [--cgroup PATH]");
    ExitCode::from(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut session = Session::new().existing(false);
    let mut port = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--port", Some(p)) => match p.parse::<u16>() {
                Ok(p) if p != 0 => port = Some(p),
                _ => return usage(),
            },
            ("--cgroup", Some(path)) => session = session.cgroup(path),
            _ => return usage(),
        }
    }
    let Some(port) = port else {
        return usage();
    };
    match session
        .run_filter_until(DropPort { port }, tokio::signal::ctrl_c())
        .await
    {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drop_flows: {e}");
            ExitCode::FAILURE
        }
    }
}
