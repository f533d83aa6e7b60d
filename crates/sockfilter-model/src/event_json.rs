//! Reading an event back from the JSON of the `--json` contract: the
//! inverse of [`Event::to_json`], for tools that store events as JSON (the
//! daemon's history) and print them again in watch's text form.

use crate::event::{Details, Endpoint, Event, EventKind, Family, Owner, Proto, Verdict};
use serde_json::Value;

/// Why a JSON object is not an event of the contract.
#[derive(Debug, thiserror::Error)]
#[error("not a sockfilter event: {0}")]
pub struct EventJsonError(String);

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, EventJsonError> {
    v.get(key)
        .ok_or_else(|| EventJsonError(format!("missing field {key:?}")))
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str, EventJsonError> {
    field(v, key)?
        .as_str()
        .ok_or_else(|| EventJsonError(format!("{key:?} is not a string")))
}

fn opt_u64(v: &Value, key: &str) -> Result<Option<u64>, EventJsonError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(n) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| EventJsonError(format!("{key:?} is not a number"))),
    }
}

fn opt_str(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn endpoint(v: &Value, key: &str) -> Result<Option<Endpoint>, EventJsonError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(e) => {
            let ip = str_field(e, "ip")?
                .parse()
                .map_err(|_| EventJsonError(format!("{key}.ip is not an IP address")))?;
            let port = opt_u64(e, "port")?
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| EventJsonError(format!("{key}.port is not a port")))?;
            Ok(Some(Endpoint::new(ip, port)))
        }
    }
}

impl Event {
    /// Rebuilds an event from the object [`Event::to_json`] wrote (extra
    /// fields such as `host` are ignored).
    ///
    /// ```
    /// use sockfilter_model::event::*;
    /// let v: serde_json::Value = serde_json::from_str(r#"{"event":"listen","time":"2026-11-26T08:22:09.123456Z",
    ///   "verdict":"allow","pid":42,"uid":0,"comm":"nc","exe":"/usr/bin/nc","cgroup":"/","proto":"tcp",
    ///   "family":"ipv4","local":{"ip":"0.0.0.0","port":22},"remote":null,"socket":7,"existing":false,
    ///   "rule":null,"backlog":5,"unit":null,"container":null,"pod_uid":null,"host":"web-01",
    ///   "ppid":1,"parent_exe":"/usr/lib/systemd/systemd","cmdline":["nc","-l","22"]}"#).unwrap();
    /// let e = Event::from_json(&v).unwrap();
    /// assert_eq!(e.local.port, 22);
    /// let mut again = e.to_json();
    /// again["host"] = "web-01".into();
    /// assert_eq!(again, v);
    /// ```
    pub fn from_json(v: &Value) -> Result<Event, EventJsonError> {
        let kind: EventKind = str_field(v, "event")?.parse().map_err(EventJsonError)?;
        let time = humantime::parse_rfc3339(str_field(v, "time")?)
            .map_err(|e| EventJsonError(format!("time: {e}")))?;
        let verdict = match str_field(v, "verdict")? {
            "allow" => Verdict::Allow,
            "deny" => Verdict::Deny,
            "audit" => Verdict::Audit,
            other => return Err(EventJsonError(format!("unknown verdict {other:?}"))),
        };
        let owner = match opt_u64(v, "pid")? {
            None => None,
            Some(pid) => Some(Owner {
                pid: pid as u32,
                uid: opt_u64(v, "uid")?.unwrap_or(0) as u32,
                comm: opt_str(v, "comm").unwrap_or_default(),
                exe: opt_str(v, "exe"),
                cgroup: opt_str(v, "cgroup"),
                ppid: opt_u64(v, "ppid")?.map(|p| p as u32),
                parent_exe: opt_str(v, "parent_exe").map(Into::into),
                cmdline: v.get("cmdline").and_then(Value::as_array).map(|args| {
                    args.iter()
                        .map(|a| a.as_str().unwrap_or_default().to_owned())
                        .collect::<Vec<_>>()
                        .into()
                }),
            }),
        };
        let proto = match str_field(v, "proto")? {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            other => return Err(EventJsonError(format!("unknown proto {other:?}"))),
        };
        let family = match str_field(v, "family")? {
            "ipv4" => Family::Ipv4,
            "ipv6" => Family::Ipv6,
            other => return Err(EventJsonError(format!("unknown family {other:?}"))),
        };
        Ok(Event {
            kind,
            time,
            verdict,
            rule: opt_str(v, "rule"),
            owner,
            proto,
            family,
            local: endpoint(v, "local")?.ok_or_else(|| EventJsonError("local is null".into()))?,
            remote: endpoint(v, "remote")?,
            socket: opt_u64(v, "socket")?.unwrap_or(0),
            existing: v.get("existing").and_then(Value::as_bool).unwrap_or(false),
            netns: opt_u64(v, "netns")?,
            remote_host: opt_str(v, "remote_host"),
            details: Details {
                backlog: opt_u64(v, "backlog")?.map(|b| b as u32),
                listener: opt_u64(v, "listener")?,
                bytes_sent: opt_u64(v, "bytes_sent")?,
                bytes_received: opt_u64(v, "bytes_received")?,
                duration_ns: opt_u64(v, "duration_ns")?,
                suppressed: opt_u64(v, "suppressed")?.map(|n| n as u32),
                enforced_by: match v.get("enforced_by").and_then(Value::as_str) {
                    Some("lsm") => Some("lsm"),
                    Some("cgroup") => Some("cgroup"),
                    Some("sk_lookup") => Some("sk_lookup"),
                    Some("destroy") => Some("destroy"),
                    _ => None,
                },
            },
        })
    }
}
