//! The fleet view: every host's current listeners, read from the NATS
//! key-value bucket that each daemon keeps up to date (one key per host).

use crate::outputs::nats::LISTENERS_BUCKET;
use anyhow::Context;
use futures_util::StreamExt;
use serde_json::Value;
use std::time::Duration;

/// One host's entry in the bucket.
#[derive(Debug, Clone)]
pub struct HostListeners {
    /// The key: the daemon's `host`.
    pub host: String,
    /// When the daemon last wrote it (RFC 3339).
    pub time: Option<String>,
    /// Each listener: the contract JSON of its `listen`/`bind` socket.
    pub listeners: Vec<Value>,
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
