//! `sockfilter fleet listeners --nats URL`: the listeners of every host
//! whose daemon publishes to that NATS server, one row per host and socket.

use serde_json::Value;
use std::process::ExitCode;

/// Arguments of `sockfilter fleet`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: FleetCommand,
}

/// What to ask the fleet.
#[derive(clap::Subcommand)]
pub enum FleetCommand {
    /// Every host's current TCP listeners and bound UDP sockets.
    Listeners(ListenersArgs),
}

/// Arguments of `sockfilter fleet listeners`.
#[derive(clap::Args)]
pub struct ListenersArgs {
    /// The NATS server the daemons publish to.
    #[arg(long, value_name = "URL")]
    pub nats: String,
    /// Only sockets on local port N.
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Only sockets of processes running this executable.
    #[arg(long, value_name = "PATH")]
    pub exe: Option<String>,
    /// One JSON object per row: the listener's fields plus `host`,
    /// `updated` (when that host last published its listeners) and
    /// `stopped` (when its daemon stopped cleanly, else null).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let FleetCommand::Listeners(args) = args.command;
    let hosts =
        crate::watch::runtime()?.block_on(sockfilter_daemon::fleet::listeners(&args.nats))?;
    let now = std::time::SystemTime::now();
    let mut rows = 0;
    // The bucket is written over the network: a value that is not the
    // daemon's is skipped and reported, never a panic.
    let mut not_listeners = 0;
    for h in &hosts {
        for l in &h.listeners {
            if !l.is_object() {
                not_listeners += 1;
                continue;
            }
            let port = l["local"]["port"].as_u64();
            if args.port.is_some_and(|p| port != Some(u64::from(p))) {
                continue;
            }
            if args
                .exe
                .as_deref()
                .is_some_and(|x| l["exe"].as_str() != Some(x))
            {
                continue;
            }
            rows += 1;
            if args.json {
                let mut v = l.clone();
                v["host"] = h.host.clone().into();
                // When that host last wrote its listeners (RFC 3339): an
                // old time means the daemon there stopped publishing.
                v["updated"] = h.time.clone().into();
                // When its daemon stopped cleanly: these are the last
                // listeners it saw.
                v["stopped"] = h.stopped.clone().into();
                println!("{v}");
            } else {
                println!("{}", text_row(&h.host, &h.updated(now), l));
            }
        }
    }
    if not_listeners > 0 {
        eprintln!(
            "sockfilter: {not_listeners} entries of the bucket are not a listener and were skipped"
        );
    }
    if !args.json {
        eprintln!("sockfilter: {rows} sockets on {} hosts", hosts.len());
        for h in hosts.iter().filter(|h| h.is_stale(now)) {
            eprintln!("{}", stale_note(h, now));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Why a host's rows may not be current: its daemon stopped, or has not
/// published for a while.
fn stale_note(h: &sockfilter_daemon::fleet::HostListeners, now: std::time::SystemTime) -> String {
    let host = sockfilter_model::text::escape(&h.host);
    let when = sockfilter_model::text::escape(h.time.as_deref().unwrap_or("?"));
    if h.stopped.is_some() {
        format!("sockfilter: {host}: its daemon stopped at {when}: its rows are the listeners it last saw")
    } else {
        format!(
            "sockfilter: {host}: not updated since {when} ({}; a running daemon updates every {}s): its daemon is not running or cannot reach NATS",
            h.updated(now),
            sockfilter_daemon::fleet::REFRESH.as_secs()
        )
    }
}

/// `web-01  12s ago  tcp4 0.0.0.0:22  pid 612 uid 0 sshd /usr/sbin/sshd`
/// (the second column: when the host last published, or `stopped 5m ago`).
/// Every string comes from the bucket, which any writer to it controls:
/// each one is escaped.
fn text_row(host: &str, updated: &str, l: &Value) -> String {
    let s = |k: &str| l[k].as_str().unwrap_or("?");
    let family = if s("family") == "ipv6" { "6" } else { "4" };
    let ip = s_ip(&l["local"]);
    format!(
        "{:<16} {:<16} {}{family} {:<28} pid {:<7} uid {:<5} {:<15} {}",
        sockfilter_model::text::escape(host),
        updated,
        sockfilter_model::text::escape(s("proto")),
        sockfilter_model::text::escape(&ip),
        l["pid"].as_u64().map_or("?".into(), |p| p.to_string()),
        l["uid"].as_u64().map_or("?".into(), |p| p.to_string()),
        sockfilter_model::text::escape(s("comm")),
        sockfilter_model::text::escape(s("exe")),
    )
}

fn s_ip(local: &Value) -> String {
    let ip = local["ip"].as_str().unwrap_or("?");
    let port = local["port"].as_u64().unwrap_or(0);
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}
