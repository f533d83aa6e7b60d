//! The daemon's configuration file (`/etc/sockfilter/sockfilter.toml`):
//! parsed strictly (unknown keys and bad values are errors), every error
//! reported as `FILE:LINE:COLUMN: message`, like policy errors.

use serde::Deserialize;
use sockfilter_model::file_error::line_col;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Where the daemon reads its configuration when no `--config` is given.
pub const DEFAULT_PATH: &str = "/etc/sockfilter/sockfilter.toml";

/// A configuration error: `FILE:LINE:COLUMN: message`, or why the file could
/// not be read.
pub type ConfigError = sockfilter_model::file_error::FileError;

/// The validated configuration. Every section is optional.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The `host` field of every event; None: the machine's hostname.
    pub host: Option<String>,
    /// The policy to enforce; None: watch only.
    pub policy: Option<PathBuf>,
    /// Watch one cgroup v2 subtree, named as in `/proc/PID/cgroup`.
    pub cgroup: Option<String>,
    /// The SQLite history.
    pub history: Option<HistoryConfig>,
    /// The Prometheus endpoint.
    pub metrics: Option<MetricsConfig>,
    /// Where events go, in file order.
    pub outputs: Vec<OutputConfig>,
}

/// `[history]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryConfig {
    /// The SQLite database.
    pub path: PathBuf,
    /// Rows older than this are deleted while the daemon runs.
    pub retention: Duration,
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    /// Where `/metrics` is served.
    pub listen: SocketAddr,
}

/// One `[[output]]`.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputConfig {
    /// JSON lines in a file, rotated by size.
    File {
        /// The file.
        path: PathBuf,
        /// Rotate when the file reaches this many MiB.
        rotate_mb: u64,
        /// Rotated files kept (`events.jsonl.1` ... `.KEEP`).
        keep: u32,
    },
    /// RFC 5424 syslog messages whose MSG is the JSON event.
    Syslog {
        /// The syslog server.
        address: SyslogAddress,
    },
    /// NATS JetStream.
    Nats {
        /// The server, `nats://HOST:PORT`.
        url: String,
        /// Events are published as `SUBJECT.HOST`.
        subject: String,
        /// Bound of the on-disk queue kept while the server is unreachable.
        queue_mb: u64,
    },
}

impl OutputConfig {
    /// `file`, `syslog` or `nats`.
    pub fn kind(&self) -> &'static str {
        match self {
            OutputConfig::File { .. } => "file",
            OutputConfig::Syslog { .. } => "syslog",
            OutputConfig::Nats { .. } => "nats",
        }
    }
}

/// Where syslog messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogAddress {
    /// A local datagram socket such as `/dev/log`.
    Unix(PathBuf),
    /// `HOST:PORT` over UDP, one message per datagram.
    Udp(String),
    /// `HOST:PORT` over TCP, octet-counted framing (RFC 6587).
    Tcp(String),
}

impl std::fmt::Display for SyslogAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyslogAddress::Unix(p) => write!(f, "unix:{}", p.display()),
            SyslogAddress::Udp(a) => write!(f, "udp:{a}"),
            SyslogAddress::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

// The file as written. Values that need checking keep their spans so that
// errors point at them.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    host: Option<Spanned<String>>,
    policy: Option<PathBuf>,
    cgroup: Option<Spanned<String>>,
    history: Option<RawHistory>,
    metrics: Option<RawMetrics>,
    #[serde(default, rename = "output")]
    outputs: Vec<RawOutput>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHistory {
    path: PathBuf,
    retention: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    kind: Spanned<String>,
    path: Option<Spanned<PathBuf>>,
    rotate_mb: Option<Spanned<u64>>,
    keep: Option<Spanned<u32>>,
    address: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    subject: Option<Spanned<String>>,
    queue_mb: Option<Spanned<u64>>,
}

/// A message and the bytes of the file it is about.
type Problem = (Range<usize>, String);

fn problem<T>(at: &Spanned<T>, message: impl Into<String>) -> Problem {
    (at.span(), message.into())
}

/// Default retention of the history.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 86400);

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Io {
            what: "config",
            path: path.to_owned(),
            err,
        })?;
        Config::parse(&text, path)
    }

    /// Validates the text of a configuration file; `source` names it in errors.
    pub fn parse(text: &str, source: &Path) -> Result<Config, ConfigError> {
        let invalid = |(span, message): Problem| {
            let (line, column) = line_col(text, span.start);
            ConfigError::Invalid {
                path: source.to_owned(),
                line,
                column,
                message,
            }
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            invalid((
                e.span().unwrap_or(0..0),
                e.message().trim_end().replace('\n', "; "),
            ))
        })?;
        raw.validate().map_err(invalid)
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, Problem> {
        if let Some(h) = &self.host {
            check_host(h.get_ref()).map_err(|m| problem(h, m))?;
        }
        if let Some(c) = &self.cgroup {
            if !c.get_ref().starts_with('/') {
                return Err(problem(
                    c,
                    "cgroup must be a path as in /proc/PID/cgroup, starting with /",
                ));
            }
        }
        let history = match self.history {
            None => None,
            Some(h) => Some(HistoryConfig {
                path: h.path,
                retention: match &h.retention {
                    None => DEFAULT_RETENTION,
                    Some(r) => parse_retention(r.get_ref()).map_err(|m| problem(r, m))?,
                },
            }),
        };
        let metrics = match self.metrics {
            None => None,
            Some(m) => Some(MetricsConfig {
                listen: m.listen.get_ref().parse().map_err(|_| {
                    problem(
                        &m.listen,
                        format!(
                            "listen {:?} is not an IP:PORT address (e.g. \"127.0.0.1:9178\")",
                            m.listen.get_ref()
                        ),
                    )
                })?,
            }),
        };
        let outputs = self
            .outputs
            .into_iter()
            .map(RawOutput::validate)
            .collect::<Result<_, _>>()?;
        Ok(Config {
            host: self.host.map(Spanned::into_inner),
            policy: self.policy,
            cgroup: self.cgroup.map(Spanned::into_inner),
            history,
            metrics,
            outputs,
        })
    }
}

impl RawOutput {
    /// The keys present, with their spans, for "does not apply" errors.
    fn present(&self) -> Vec<(&'static str, Range<usize>)> {
        let mut v = Vec::new();
        let mut add = |name, span: Option<Range<usize>>| {
            if let Some(s) = span {
                v.push((name, s));
            }
        };
        add("path", self.path.as_ref().map(Spanned::span));
        add("rotate_mb", self.rotate_mb.as_ref().map(Spanned::span));
        add("keep", self.keep.as_ref().map(Spanned::span));
        add("address", self.address.as_ref().map(Spanned::span));
        add("url", self.url.as_ref().map(Spanned::span));
        add("subject", self.subject.as_ref().map(Spanned::span));
        add("queue_mb", self.queue_mb.as_ref().map(Spanned::span));
        v
    }

    fn validate(self) -> Result<OutputConfig, Problem> {
        let kind = self.kind.get_ref().as_str();
        let allowed: &[&str] = match kind {
            "file" => &["path", "rotate_mb", "keep"],
            "syslog" => &["address"],
            "nats" => &["url", "subject", "queue_mb"],
            other => {
                return Err(problem(
                    &self.kind,
                    format!("unknown output kind {other:?}; expected file, syslog or nats"),
                ))
            }
        };
        if let Some((key, span)) = self
            .present()
            .into_iter()
            .find(|(k, _)| !allowed.contains(k))
        {
            return Err((
                span,
                format!(
                    "{key} does not apply to a {kind} output (its keys: kind, {})",
                    allowed.join(", ")
                ),
            ));
        }
        let missing = |key: &str| problem(&self.kind, format!("a {kind} output needs {key}"));
        match kind {
            "file" => {
                let rotate_mb = positive(self.rotate_mb, 100, "rotate_mb")?;
                let keep = self.keep.map_or(5, Spanned::into_inner);
                Ok(OutputConfig::File {
                    path: self.path.ok_or_else(|| missing("path"))?.into_inner(),
                    rotate_mb,
                    keep,
                })
            }
            "syslog" => {
                let a = self.address.ok_or_else(|| missing("address"))?;
                Ok(OutputConfig::Syslog {
                    address: parse_syslog_address(a.get_ref()).map_err(|m| problem(&a, m))?,
                })
            }
            _ => {
                let url = self.url.ok_or_else(|| missing("url"))?;
                if !url.get_ref().starts_with("nats://") && !url.get_ref().starts_with("tls://") {
                    return Err(problem(&url, "url must start with nats:// or tls://"));
                }
                if let Err(e) = url.get_ref().parse::<async_nats::ServerAddr>() {
                    return Err(problem(&url, format!("url {:?}: {e}", url.get_ref())));
                }
                let subject = match self.subject {
                    None => "sockfilter.events".to_string(),
                    Some(s) => {
                        check_subject(s.get_ref()).map_err(|m| problem(&s, m))?;
                        s.into_inner()
                    }
                };
                Ok(OutputConfig::Nats {
                    url: url.into_inner(),
                    subject,
                    queue_mb: positive(self.queue_mb, 64, "queue_mb")?,
                })
            }
        }
    }
}

fn positive(v: Option<Spanned<u64>>, default: u64, key: &str) -> Result<u64, Problem> {
    match v {
        None => Ok(default),
        Some(v) if *v.get_ref() == 0 => Err(problem(&v, format!("{key} must be at least 1"))),
        Some(v) => Ok(v.into_inner()),
    }
}

/// A host name usable in a NATS subject and key: letters, digits, `-`, `_`, `.`.
pub fn check_host(h: &str) -> Result<(), String> {
    if h.is_empty() || h.len() > 253 {
        return Err("host must be 1 to 253 characters".into());
    }
    match h
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        Some(c) => Err(format!(
            "host {h:?} contains {c:?}; allowed: letters, digits, '-', '_', '.'"
        )),
        None if h.starts_with('.') || h.ends_with('.') || h.contains("..") => {
            Err(format!("host {h:?} has an empty dot-separated part"))
        }
        None => Ok(()),
    }
}

fn check_subject(s: &str) -> Result<(), String> {
    let bad = s.is_empty()
        || s.split('.')
            .any(|t| t.is_empty() || t.chars().any(|c| c.is_whitespace() || c == '*' || c == '>'));
    if bad {
        Err(format!(
            "subject {s:?} is not a NATS subject (dot-separated tokens without spaces or wildcards)"
        ))
    } else {
        Ok(())
    }
}

/// `"30d"`, `"12h"`, ...: a duration of at least one minute.
fn parse_retention(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("retention {s:?} is not a duration like \"30d\" or \"12h\": {e}"))?;
    if d < Duration::from_secs(60) {
        return Err(format!("retention {s:?} is shorter than a minute"));
    }
    Ok(d)
}

/// `unix:/dev/log`, `udp:HOST:PORT` or `tcp:HOST:PORT`.
pub fn parse_syslog_address(s: &str) -> Result<SyslogAddress, String> {
    let host_port = |rest: &str| -> Result<String, String> {
        match rest.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => {
                Ok(rest.to_string())
            }
            _ => Err(format!(
                "address {s:?}: expected HOST:PORT after the scheme"
            )),
        }
    };
    if let Some(p) = s.strip_prefix("unix:") {
        if !p.starts_with('/') {
            return Err(format!(
                "address {s:?}: a unix socket needs an absolute path"
            ));
        }
        Ok(SyslogAddress::Unix(PathBuf::from(p)))
    } else if let Some(rest) = s.strip_prefix("udp:") {
        host_port(rest).map(SyslogAddress::Udp)
    } else if let Some(rest) = s.strip_prefix("tcp:") {
        host_port(rest).map(SyslogAddress::Tcp)
    } else {
        Err(format!(
            "address {s:?}: expected \"unix:PATH\", \"udp:HOST:PORT\" or \"tcp:HOST:PORT\""
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, Path::new("c.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_issue_example_parses() {
        let c = Config::parse(
            r#"
host = "web-01"
policy = "/etc/sockfilter/policy.toml"
cgroup = "/system.slice"
[history]
path = "/var/lib/sockfilter/history.db"
retention = "30d"
[metrics]
listen = "127.0.0.1:9178"
[[output]]
kind = "file"
path = "/var/log/sockfilter/events.jsonl"
rotate_mb = 100
keep = 5
[[output]]
kind = "syslog"
address = "unix:/dev/log"
[[output]]
kind = "nats"
url = "nats://127.0.0.1:4222"
subject = "sockfilter.events"
"#,
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.host.as_deref(), Some("web-01"));
        assert_eq!(c.history.unwrap().retention, DEFAULT_RETENTION);
        assert_eq!(c.outputs.len(), 3);
        assert_eq!(
            c.outputs[1],
            OutputConfig::Syslog {
                address: SyslogAddress::Unix("/dev/log".into())
            }
        );
    }

    #[test]
    fn an_empty_file_is_a_watch_only_daemon() {
        let c = Config::parse("", Path::new("c.toml")).unwrap();
        assert!(c.outputs.is_empty() && c.history.is_none() && c.metrics.is_none());
    }

    #[test]
    fn errors_point_at_the_offending_key_or_value() {
        assert!(err("hots = \"a\"\n").starts_with("c.toml:1:1: unknown field `hots`"));
        assert_eq!(
            err("[history]\npath = \"/x\"\nretention = \"soon\"\n"),
            "c.toml:3:13: retention \"soon\" is not a duration like \"30d\" or \"12h\": unknown time unit \"soon\""
                .replace("unknown time unit \"soon\"", &humantime::parse_duration("soon").unwrap_err().to_string())
        );
        assert!(err("[metrics]\nlisten = \"localhost\"\n").starts_with("c.toml:2:10: listen"));
        assert!(
            err("[[output]]\nkind = \"kafka\"\n").starts_with("c.toml:2:8: unknown output kind")
        );
        assert!(err("[[output]]\nkind = \"file\"\nurl = \"nats://x\"\n")
            .starts_with("c.toml:3:7: url does not apply to a file output"));
        assert!(err("[[output]]\nkind = \"file\"\n")
            .starts_with("c.toml:2:8: a file output needs path"));
        assert!(
            err("[[output]]\nkind = \"syslog\"\naddress = \"udp:x\"\n").starts_with("c.toml:3:11:")
        );
        assert!(err("host = \"a b\"\n").starts_with("c.toml:1:8: host"));
        assert!(
            err("[[output]]\nkind = \"file\"\npath = \"/x\"\nkeep = -1\n")
                .starts_with("c.toml:4:8:")
        );
    }

    #[test]
    fn a_nats_url_that_does_not_parse_is_an_error_at_its_position() {
        // Otherwise the daemon would start and retry it forever, counted
        // in sockfilter_output_errors_total but never reported.
        for url in ["nats://127.0.0.1:99999", "nats://[::1"] {
            let e = err(&format!("[[output]]\nkind = \"nats\"\nurl = \"{url}\"\n"));
            assert!(e.starts_with("c.toml:3:7: url"), "{url}: {e}");
        }
        assert!(Config::parse(
            "[[output]]\nkind = \"nats\"\nurl = \"nats://nats.example:4222\"\n",
            Path::new("c.toml")
        )
        .is_ok());
    }

    #[test]
    fn syslog_addresses() {
        assert_eq!(
            parse_syslog_address("tcp:127.0.0.1:514").unwrap(),
            SyslogAddress::Tcp("127.0.0.1:514".into())
        );
        assert!(parse_syslog_address("tcp:127.0.0.1").is_err());
        assert!(parse_syslog_address("unix:dev/log").is_err());
    }
}
