//! The human-readable, aligned event line. Every string a process controls
//! (comm, exe, cgroup) is escaped: no terminal escape sequence or newline
//! from a process reaches the terminal.

use sockfilter_model::event::{Event, EventKind, Verdict};
use sockfilter_model::text::{escape, escape_or};

const RESET: &str = "\x1b[0m";

fn kind_colour(k: EventKind) -> &'static str {
    match k {
        EventKind::Listen => "\x1b[1;33m",
        EventKind::Bind => "\x1b[36m",
        EventKind::Connect => "\x1b[34m",
        EventKind::Accept => "\x1b[32m",
        EventKind::Close => "\x1b[2m",
    }
}

/// A command line for a terminal: the arguments, each escaped as every
/// process-controlled string is, separated by spaces; an argument that
/// is empty or holds a space or a quote is put in double quotes (with `\"`
/// for a quote inside), so the arguments can be told apart.
pub fn cmdline(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            let a = escape(a);
            if a.is_empty() || a.contains([' ', '"']) {
                format!("\"{}\"", a.replace('"', "\\\""))
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `08:22:09.123456 listen  tcp4 0.0.0.0:8080   *   pid 42 uid 0 python3 /usr/bin/python3.11 ppid=1 parent=/usr/lib/systemd/systemd backlog=5 cmdline=python3 -m http.server`
pub fn event_line(e: &Event, colour: bool) -> String {
    let time = sockfilter_model::event::rfc3339(e.time);
    let clock = time.get(11..26).unwrap_or(&time);
    let proto = format!(
        "{}{}",
        e.proto.as_str(),
        if e.family.as_str() == "ipv6" {
            "6"
        } else {
            "4"
        }
    );
    let remote = e
        .remote
        .map(|r| r.to_string())
        .unwrap_or_else(|| "*".into());
    let who = match &e.owner {
        Some(o) => format!(
            "pid {:<7} uid {:<5} {:<15} {}",
            o.pid,
            o.uid,
            escape(&o.comm),
            escape_or(o.exe.as_deref(), "?")
        ),
        None => "pid ?       (owner unknown)".into(),
    };
    let mut extra = Vec::new();
    if let Some(h) = &e.remote_host {
        extra.push(format!("host={}", escape(h)));
    }
    if let Some(o) = &e.owner {
        if let Some(ppid) = o.ppid {
            extra.push(format!(
                "ppid={ppid} parent={}",
                escape_or(o.parent_exe.as_deref(), "?")
            ));
        }
        let w = o.workload();
        if let Some(u) = &w.unit {
            extra.push(format!("unit={}", escape(u)));
        }
        if let Some(c) = &w.container {
            extra.push(format!("container={}:{}", c.runtime.as_str(), &c.id[..12]));
        }
        if let Some(p) = &w.pod_uid {
            extra.push(format!("pod={p}"));
        }
    }
    let d = &e.details;
    if let Some(b) = d.backlog {
        extra.push(format!("backlog={b}"));
    }
    if let Some(l) = d.listener {
        extra.push(format!("listener=sk:{l:x}"));
    }
    if e.kind == EventKind::Close {
        let n = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        extra.push(format!(
            "sent={} received={}",
            n(d.bytes_sent),
            n(d.bytes_received)
        ));
        if let Some(ns) = d.duration_ns {
            extra.push(format!("after={:.3}s", ns as f64 / 1e9));
        }
    }
    if e.existing {
        extra.push("[existing]".into());
    }
    if e.verdict != Verdict::Allow {
        extra.push(format!(
            "verdict={}{}",
            e.verdict.as_str(),
            e.rule
                .as_deref()
                .map(|r| format!(" rule={}", escape(r)))
                .unwrap_or_default()
        ));
    }
    // Last: whatever the arguments say, nothing after them can be forged.
    if let Some(args) = e.owner.as_ref().and_then(|o| o.cmdline.as_deref()) {
        if e.kind == EventKind::Listen {
            extra.push(format!("cmdline={}", cmdline(args)));
        }
    }
    let kind = format!("{:<7}", e.kind.as_str());
    let kind = if colour {
        format!("{}{kind}{RESET}", kind_colour(e.kind))
    } else {
        kind
    };
    format!(
        "{clock} {kind} {proto:<4} {:<28} {:<28} {who} {}",
        e.local.to_string(),
        remote,
        extra.join(" ")
    )
    .trim_end()
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_name_cannot_forge_the_line() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"event":"connect","time":"2026-11-26T08:22:09.123456Z","verdict":"allow","pid":42,
            "uid":0,"comm":"curl","exe":"/usr/bin/curl","cgroup":"/","proto":"tcp","family":"ipv4",
            "local":{"ip":"10.0.0.1","port":40000},"remote":{"ip":"192.0.2.7","port":443},"socket":7,
            "existing":false,"rule":null,"remote_host":"evil\u001b[2J\nforged"}"#,
        )
        .unwrap();
        let e = Event::from_json(&v).unwrap();
        assert_eq!(e.remote_host.as_deref(), Some("evil\u{1b}[2J\nforged"));
        let line = event_line(&e, false);
        assert!(line.contains("host=evil\\x1b[2J\\nforged"), "{line}");
        assert!(!line.contains('\u{1b}') && !line.contains('\n'), "{line}");
    }
}
