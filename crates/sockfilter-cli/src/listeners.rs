//! `sockfilter listeners`: every TCP socket in LISTEN and every bound,
//! unconnected UDP socket right now, in every network namespace that has a
//! process, one entry per socket as `ss -ltnup` prints one line per socket,
//! as `existing` events of the JSON contract plus `owners`: every process
//! holding the socket (forking servers, nginx workers, socket activation).

use anyhow::Context;
use serde_json::{json, Value};
use sockfilter::diag::{tcp_state, DiagSocket};
use sockfilter::listener_registry::ListenCaller;
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
    /// (`event` is `listen` for TCP, `bind` for UDP; `existing` is true),
    /// plus `owners`: every process holding the socket, and `owner_source`:
    /// `listen` when the owner is the process that called listen() (recorded
    /// by a running or killed enforce's kernel registry), `lowest_holder`
    /// when it is the lowest pid holding the socket.
    #[arg(long)]
    pub json: bool,
}

/// One listening socket: the event naming its owner (the process that
/// called listen() when known, otherwise the lowest pid holding it) and
/// every process holding it, lowest pid first.
pub struct Listener {
    /// The `existing` listen (TCP) or bind (UDP) event.
    pub event: Event,
    /// Every process with a descriptor for the socket.
    pub owners: Vec<Owner>,
    /// Where the event's owner comes from.
    pub owner_source: OwnerSource,
}

/// How `listeners` knows a socket's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerSource {
    /// The process that called listen(), as the kernel registered it while
    /// a `sockfilter enforce` ran (its pinned listener registry).
    Listen,
    /// The lowest pid among the processes holding the socket: nothing
    /// recorded the listen() call (no enforce running, a UDP socket, or a
    /// listener older than enforce).
    LowestHolder,
    /// No process holds the socket and nothing recorded its caller.
    Unknown,
}

impl OwnerSource {
    /// The JSON value of `owner_source`.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerSource::Listen => "listen",
            OwnerSource::LowestHolder => "lowest_holder",
            OwnerSource::Unknown => "unknown",
        }
    }
}

impl Listener {
    /// The event's JSON object plus `owners: [{"pid", "comm", "exe"}]` and
    /// `owner_source`.
    pub fn to_json(&self) -> Value {
        let mut v = self.event.to_json();
        let owners: Vec<Value> = self
            .owners
            .iter()
            .map(|o| json!({ "pid": o.pid, "comm": o.comm, "exe": o.exe }))
            .collect();
        v["owners"] = owners.into();
        v["owner_source"] = self.owner_source.as_str().into();
        v
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let listeners = listeners()?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let all: Vec<Value> = listeners.iter().map(Listener::to_json).collect();
        serde_json::to_writer_pretty(&mut out, &all)?;
        writeln!(out)?;
    } else {
        let rows = listeners.iter().map(row).collect();
        write!(
            out,
            "{}",
            table(
                &[
                    "PROTO",
                    "LOCAL",
                    "PID",
                    "UID",
                    "COMM",
                    "EXE",
                    "CGROUP",
                    "UNIT",
                    "CONTAINER",
                    "POD",
                    "NETNS",
                    "SOCKET",
                    "PID_FROM",
                    "CMDLINE"
                ],
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

/// The table row; the PID cell reads `1234+2` when two more processes
/// hold the socket, PID_FROM says whether PID called listen() (seen by
/// a running or pinned enforce) or is the lowest pid holding the socket,
/// and CMDLINE is PID's arguments from /proc.
fn row(l: &Listener) -> Vec<String> {
    let e = &l.event;
    let mut r = vec![proto_label(e.proto, e.family), e.local.to_string()];
    let mut owner = owner_cells(e.owner.as_ref());
    if l.owners.len() > 1 {
        owner[0] = format!("{}+{}", owner[0], l.owners.len() - 1);
    }
    r.extend(owner);
    r.extend(workload_cells(e.owner.as_ref()));
    r.push(e.netns.map(|n| n.to_string()).unwrap_or_else(|| "-".into()));
    r.push(format!("sk:{:x}", e.socket));
    r.push(
        match l.owner_source {
            OwnerSource::Listen => "listen()",
            OwnerSource::LowestHolder => "lowest-holder",
            OwnerSource::Unknown => "-",
        }
        .into(),
    );
    // Last: escaped, and nothing after it to forge.
    r.push(
        e.owner
            .as_ref()
            .and_then(|o| o.cmdline.as_deref())
            .map_or_else(|| "-".into(), crate::text::cmdline),
    );
    r
}

/// The workload columns: unit, container (`runtime:12-hex-id`, as `docker
/// ps` shortens ids), pod UID ("-" when unknown).
pub fn workload_cells(owner: Option<&Owner>) -> [String; 3] {
    let w = owner.map(Owner::workload).unwrap_or_default();
    [
        escape_or(w.unit.as_deref(), "-").into_owned(),
        w.container.map_or_else(
            || "-".into(),
            |c| format!("{}:{}", c.runtime.as_str(), &c.id[..12]),
        ),
        w.pod_uid.unwrap_or_else(|| "-".into()),
    ]
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

/// Every listening socket now, one entry per socket, sorted by protocol
/// (TCP first), port, address and namespace.
pub fn listeners() -> anyhow::Result<Vec<Listener>> {
    let sockets = sockfilter::diag::sockets_all_namespaces()
        .context("asking the kernel for its sockets (sock_diag)")?;
    let holders = sockfilter::procfs::socket_owners();
    let callers = sockfilter::listener_registry::listen_callers()
        .context("reading enforce's listener registry in bpffs")?;
    let mut known: HashMap<u32, Owner> = HashMap::new();
    let now = SystemTime::now();
    let mut listeners: Vec<Listener> = sockets
        .iter()
        .filter(|s| is_listener(s))
        .map(|s| {
            // socket_owners sorts the pids: the first is the lowest.
            let owners: Vec<Owner> = holders
                .get(&s.inode)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|&p| {
                    known
                        .entry(p)
                        .or_insert_with(|| sockfilter::procfs::owner(p))
                        .clone()
                })
                .collect();
            let kind = if s.protocol == libc::IPPROTO_TCP as u8 {
                EventKind::Listen
            } else {
                EventKind::Bind
            };
            let (owner, owner_source) = match callers.get(&s.cookie) {
                Some(caller) => (Some(caller_owner(caller, &owners)), OwnerSource::Listen),
                None => match owners.first() {
                    Some(o) => (Some(o.clone()), OwnerSource::LowestHolder),
                    None => (None, OwnerSource::Unknown),
                },
            };
            Listener {
                event: sockfilter::watch::existing_event(s, kind, owner, None, now),
                owners,
                owner_source,
            }
        })
        .collect();
    listeners.sort_by_key(|l| {
        let e = &l.event;
        (
            e.proto == Proto::Udp,
            e.local.port,
            e.local.ip,
            e.netns,
            e.socket,
        )
    });
    Ok(listeners)
}

/// The owner for the process that called listen(): what /proc says of it
/// when it still runs (it holds the socket, or it is the process of that
/// pid with the command name the kernel registered), otherwise what the
/// kernel registered (pid, uid, comm; no exe nor cgroup): the caller
/// exited and left the socket to its children.
fn caller_owner(caller: &ListenCaller, holders: &[Owner]) -> Owner {
    if let Some(o) = holders.iter().find(|o| o.pid == caller.pid) {
        return o.clone();
    }
    let now = sockfilter::procfs::owner(caller.pid);
    if now.comm == caller.comm && now.uid == caller.uid {
        return now;
    }
    Owner {
        pid: caller.pid,
        uid: caller.uid,
        comm: caller.comm.clone(),
        ..Owner::default()
    }
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
