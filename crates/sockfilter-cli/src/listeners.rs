//! `sockfilter listeners`: every TCP socket in LISTEN and every bound,
//! unconnected UDP socket right now, in every network namespace that has a
//! process, one row per (socket, process holding it) — what `ss -ltnup`
//! and `ss -lunp` show, as `existing` events of the JSON contract.

use anyhow::Context;
use sockfilter::diag::{tcp_state, DiagSocket};
use sockfilter_model::event::{Event, EventKind, Family, Owner, Proto};
use sockfilter_model::text::{escape, escape_or};
use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::SystemTime;

/// Arguments of `sockfilter listeners`.
#[derive(clap::Args)]
pub struct Args {
    /// Print a JSON array of objects with the fields of the watch contract
    /// (`event` is `listen` for TCP, `bind` for UDP; `existing` is true).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let events = listener_events()?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let all: Vec<serde_json::Value> = events.iter().map(Event::to_json).collect();
        serde_json::to_writer_pretty(&mut out, &all)?;
        writeln!(out)?;
    } else {
        let rows = events.iter().map(row).collect();
        write!(
            out,
            "{}",
            table(
                &["PROTO", "LOCAL", "PID", "UID", "COMM", "EXE", "CGROUP", "NETNS", "SOCKET"],
                rows
            )
        )?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `tcp4`, `udp6`, ...
pub fn proto_label(proto: Proto, family: Family) -> String {
    format!(
        "{}{}",
        proto.as_str(),
        if family == Family::Ipv6 { "6" } else { "4" }
    )
}

/// The owner columns: pid, uid, comm, exe, cgroup ("-" when unknown),
/// escaped for a terminal.
pub fn owner_cells(owner: Option<&Owner>) -> [String; 5] {
    match owner {
        Some(o) => [
            o.pid.to_string(),
            o.uid.to_string(),
            escape(&o.comm).into_owned(),
            escape_or(o.exe.as_deref(), "-").into_owned(),
            escape_or(o.cgroup.as_deref(), "-").into_owned(),
        ],
        None => ["-", "-", "-", "-", "-"].map(String::from),
    }
}

fn row(e: &Event) -> Vec<String> {
    let mut r = vec![proto_label(e.proto, e.family), e.local.to_string()];
    r.extend(owner_cells(e.owner.as_ref()));
    r.push(e.netns.map(|n| n.to_string()).unwrap_or_else(|| "-".into()));
    r.push(format!("sk:{:x}", e.socket));
    r
}

/// Left-aligned columns separated by two spaces, with a header line.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// Whether a socket is what `ss -l` lists: a TCP listener, or a UDP socket
/// with a local port and no peer.
pub fn is_listener(s: &DiagSocket) -> bool {
    if s.protocol == libc::IPPROTO_TCP as u8 {
        s.state == tcp_state::LISTEN
    } else {
        s.protocol == libc::IPPROTO_UDP as u8 && s.local.1 != 0 && !s.is_connected()
    }
}

/// The owner of `pid` as /proc shows it now.
pub fn listener_events() -> anyhow::Result<Vec<Event>> {
    let sockets = sockfilter::diag::sockets_all_namespaces()
        .context("asking the kernel for its sockets (sock_diag)")?;
    let holders = sockfilter::procfs::socket_owners();
    let mut owners: HashMap<u32, Owner> = HashMap::new();
    let now = SystemTime::now();
    let mut events = Vec::new();
    for s in sockets.iter().filter(|s| is_listener(s)) {
        let tcp = s.protocol == libc::IPPROTO_TCP as u8;
        let pids = holders.get(&s.inode).cloned().unwrap_or_default();
        let who: Vec<Option<Owner>> = if pids.is_empty() {
            vec![None]
        } else {
            pids.iter()
                .map(|&p| {
                    Some(
                        owners
                            .entry(p)
                            .or_insert_with(|| sockfilter::procfs::owner(p))
                            .clone(),
                    )
                })
                .collect()
        };
        for owner in who {
            let kind = if tcp {
                EventKind::Listen
            } else {
                EventKind::Bind
            };
            events.push(sockfilter::watch::existing_event(s, kind, owner, None, now));
        }
    }
    events.sort_by_key(|e| {
        (
            e.proto == Proto::Udp,
            e.local.port,
            e.local.ip,
            e.netns,
            e.owner.as_ref().map(|o| o.pid),
        )
    });
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn sock(protocol: i32, state: u8, lport: u16, rport: u16) -> DiagSocket {
        DiagSocket {
            protocol: protocol as u8,
            family: libc::AF_INET as u8,
            state,
            local: (IpAddr::V4(Ipv4Addr::LOCALHOST), lport),
            remote: (IpAddr::V4(Ipv4Addr::UNSPECIFIED), rport),
            inode: 1,
            cookie: 1,
            uid: 0,
            netns: 1,
        }
    }

    #[test]
    fn listeners_are_tcp_listen_and_unconnected_udp() {
        assert!(is_listener(&sock(
            libc::IPPROTO_TCP,
            tcp_state::LISTEN,
            80,
            0
        )));
        assert!(!is_listener(&sock(
            libc::IPPROTO_TCP,
            tcp_state::ESTABLISHED,
            80,
            5
        )));
        assert!(is_listener(&sock(
            libc::IPPROTO_UDP,
            tcp_state::CLOSE,
            53,
            0
        )));
        assert!(!is_listener(&sock(
            libc::IPPROTO_UDP,
            tcp_state::ESTABLISHED,
            53,
            9
        )));
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["A", "BB"],
            vec![vec!["xxx".into(), "y".into()], vec!["z".into(), "w".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz    w\n");
    }
}
