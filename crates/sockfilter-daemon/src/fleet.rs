//! The fleet view: every host's current listeners, read from the NATS
//! key-value bucket that each daemon keeps up to date (one key per host).

use crate::outputs::nats::LISTENERS_BUCKET;
use anyhow::Context;
use futures_util::StreamExt;
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// One host's entry in the bucket.
#[derive(Debug, Clone)]
pub struct HostListeners {
    /// The key: the daemon's `host`.
    pub host: String,
    /// When the daemon last wrote it (RFC 3339).
    pub time: Option<String>,
    /// Each listener: the contract JSON of its `listen`/`bind` socket.
    pub listeners: Vec<Value>,
    /// When its daemon stopped cleanly (RFC 3339): the listeners are then
    /// the last it saw.
    pub stopped: Option<String>,
}

/// A running daemon rewrites its entry at least this often; an entry older
/// than [`STALE_AFTER`] means its daemon stopped publishing (killed, host
/// down, NATS unreachable from there).
pub const REFRESH: Duration = crate::outputs::nats::LISTENERS_REFRESH;
/// Three refreshes missed.
pub const STALE_AFTER: Duration = Duration::from_secs(3 * REFRESH.as_secs());

impl HostListeners {
    /// How long ago the daemon last wrote the entry, at `now` (None when
    /// the entry has no readable time).
    pub fn age(&self, now: SystemTime) -> Option<Duration> {
        let t = humantime::parse_rfc3339_weak(self.time.as_deref()?).ok()?;
        Some(now.duration_since(t).unwrap_or_default())
    }

    /// What the text view says of the entry's freshness: `12s ago`,
    /// `stopped 5m ago`, `? ago` without a time.
    pub fn updated(&self, now: SystemTime) -> String {
        let age = self.age(now).map_or("?".to_string(), short_duration);
        match &self.stopped {
            Some(_) => format!("stopped {age} ago"),
            None => format!("{age} ago"),
        }
    }

    /// Whether the entry tells of a daemon that is not running: stopped,
    /// or not rewritten for [`STALE_AFTER`].
    pub fn is_stale(&self, now: SystemTime) -> bool {
        self.stopped.is_some() || self.age(now).is_none_or(|a| a > STALE_AFTER)
    }
}

/// `45s`, `12m`, `5h`, `3d`: the largest whole unit.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Reads every host's listeners from the NATS server at `url`, sorted by host.
pub async fn listeners(url: &str) -> anyhow::Result<Vec<HostListeners>> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))?;
    let js = async_nats::jetstream::new(client);
    let kv = js.get_key_value(LISTENERS_BUCKET).await.with_context(|| {
        format!("{url} has no key-value bucket {LISTENERS_BUCKET}: no sockfilter daemon publishes there yet")
    })?;
    let mut keys: Vec<String> = kv
        .keys()
        .await
        .context("listing the hosts")?
        .filter_map(|k| async move { k.ok() })
        .collect()
        .await;
    keys.sort();
    let mut hosts = Vec::new();
    for host in keys {
        let Some(value) = kv.get(&host).await.context("reading a host's listeners")? else {
            continue; // deleted meanwhile
        };
        let v: Value = serde_json::from_slice(&value)
            .with_context(|| format!("host {host:?}: the bucket holds no JSON"))?;
        hosts.push(HostListeners {
            time: v.get("time").and_then(Value::as_str).map(str::to_owned),
            stopped: v.get("stopped").and_then(Value::as_str).map(str::to_owned),
            listeners: v
                .get("listeners")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            host,
        });
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(time: &str, stopped: Option<&str>) -> HostListeners {
        HostListeners {
            host: "h".into(),
            time: Some(time.into()),
            listeners: vec![],
            stopped: stopped.map(str::to_owned),
        }
    }

    #[test]
    fn an_entry_says_how_old_it_is_and_whether_its_daemon_runs() {
        let now = humantime::parse_rfc3339("2026-11-30T12:00:00Z").unwrap();
        let fresh = entry("2026-11-30T11:59:48.000000Z", None);
        assert_eq!(fresh.updated(now), "12s ago");
        assert!(!fresh.is_stale(now));
        let old = entry("2026-11-30T09:00:00.000000Z", None);
        assert_eq!(old.updated(now), "3h ago");
        assert!(old.is_stale(now), "three refreshes missed");
        let just_stale = entry("2026-11-30T11:58:29.000000Z", None);
        assert!(just_stale.is_stale(now), "91 s");
        let stopped = entry(
            "2026-11-30T11:55:00.000000Z",
            Some("2026-11-30T11:55:00.000000Z"),
        );
        assert_eq!(stopped.updated(now), "stopped 5m ago");
        assert!(stopped.is_stale(now));
        let forged = HostListeners {
            time: Some("\x1b[2J".into()),
            ..fresh
        };
        assert_eq!(forged.updated(now), "? ago");
        assert!(forged.is_stale(now));
        assert_eq!(short_duration(Duration::from_secs(3 * 86400 + 5)), "3d");
    }
}
