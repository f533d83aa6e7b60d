//! The name a daemon gives its host: `host` from the config, else the
//! machine's hostname.

/// The kernel's hostname (`/proc/sys/kernel/hostname`, what `hostname`
/// prints), or `localhost` when it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `configured`, else the hostname; checked to be usable in a NATS subject
/// and key (see [`crate::config::check_host`]).
pub fn host_name(configured: Option<&str>) -> anyhow::Result<String> {
    let host = configured.map_or_else(hostname, str::to_owned);
    crate::config::check_host(&host).map_err(|e| {
        anyhow::anyhow!("{e}; set `host` in the config file to a name without such characters")
    })?;
    Ok(host)
}
