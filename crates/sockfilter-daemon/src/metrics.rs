//! The Prometheus metrics of the daemon. Their names and labels are a
//! contract with dashboards and alerts outside this project (issue 12):
//! `sockfilter_events_total{event,verdict}`, `sockfilter_events_lost_total`,
//! `sockfilter_listeners{proto,family}`, `sockfilter_rule_matches_total{rule}`,
//! `sockfilter_output_errors_total{output}`, `sockfilter_output_pending{output}`,
//! `sockfilter_output_dropped_total{output}`,
//! `sockfilter_exec_records_not_kept_total{reason}`,
//! `sockfilter_kernel_tables_full_total{table}`, and the usual `process_*`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use sockfilter_model::Event;
use std::sync::{Arc, Mutex};

/// Labels of `sockfilter_events_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// `bind`, `listen`, ...
    pub event: String,
    /// `allow`, `deny`, `audit`.
    pub verdict: String,
}

/// Labels of `sockfilter_listeners`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `tcp` or `udp`.
    pub proto: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
}

/// Labels of `sockfilter_rule_matches_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// The policy rule's name.
    pub rule: String,
}

/// Labels of the per-output metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutputLabels {
    /// The output's name: `file`, `syslog`, `nats`, `history` (with `-2`,
    /// `-3`... for further outputs of the same kind).
    pub output: String,
}

/// Labels of `sockfilter_exec_records_not_kept_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExecLabels {
    /// `lost` (the kernel's exec ring buffer was full) or `forgotten`
    /// (beyond the exec table's bound, oldest first).
    pub reason: String,
}

/// Labels of `sockfilter_kernel_tables_full_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    /// `executables`, `accepted_sockets` or `udp_endpoints`
    /// (`sockfilter::watch::Watcher::kernel_tables_full`).
    pub table: String,
}

/// Every metric of the daemon; clones share the same values.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    /// `sockfilter_events_total{event,verdict}`.
    pub events: Family<EventLabels, Counter>,
    /// `sockfilter_events_lost_total`: events the kernel could not deliver.
    pub lost: Counter,
    /// `sockfilter_listeners{proto,family}`.
    pub listeners: Family<ListenerLabels, Gauge>,
    /// `sockfilter_rule_matches_total{rule}`.
    pub rule_matches: Family<RuleLabels, Counter>,
    /// `sockfilter_output_errors_total{output}`.
    pub output_errors: Family<OutputLabels, Counter>,
    /// `sockfilter_output_pending{output}`: events accepted, not yet delivered.
    pub output_pending: Family<OutputLabels, Gauge>,
    /// `sockfilter_output_dropped_total{output}`: events an output had to give up.
    pub output_dropped: Family<OutputLabels, Counter>,
    /// `sockfilter_exec_records_not_kept_total{reason}`: execs whose
    /// executable and arguments were not kept (see docs/events.md,
    /// Ancestry).
    pub exec_records_not_kept: Family<ExecLabels, Counter>,
    /// `sockfilter_kernel_tables_full_total{table}`: entries a bounded
    /// kernel table could not take (docs/daemon.md).
    pub kernel_tables_full: Family<TableLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            registry: Arc::new(Mutex::new(Registry::default())),
            events: Family::default(),
            lost: Counter::default(),
            listeners: Family::default(),
            rule_matches: Family::default(),
            output_errors: Family::default(),
            output_pending: Family::default(),
            output_dropped: Family::default(),
            exec_records_not_kept: Family::default(),
            kernel_tables_full: Family::default(),
        };
        // At 0 from the start, so that the first overflow is an increase.
        for table in ["executables", "accepted_sockets", "udp_endpoints"] {
            m.kernel_tables_full
                .get_or_create(&TableLabels {
                    table: table.into(),
                })
                .inc_by(0);
        }
        r.register(
            "sockfilter_events",
            "Socket events seen, by kind and verdict",
            m.events.clone(),
        );
        r.register(
            "sockfilter_events_lost",
            "Events the kernel could not deliver (ring buffer full)",
            m.lost.clone(),
        );
        r.register(
            "sockfilter_listeners",
            "Current TCP listeners and bound, unconnected UDP sockets",
            m.listeners.clone(),
        );
        r.register(
            "sockfilter_rule_matches",
            "Events decided by each policy rule",
            m.rule_matches.clone(),
        );
        r.register(
            "sockfilter_output_errors",
            "Failed writes or sends, by output",
            m.output_errors.clone(),
        );
        r.register(
            "sockfilter_output_pending",
            "Events accepted by an output and not yet delivered",
            m.output_pending.clone(),
        );
        r.register(
            "sockfilter_output_dropped",
            "Events an output gave up (its bound was exceeded)",
            m.output_dropped.clone(),
        );
        r.register(
            "sockfilter_exec_records_not_kept",
            "Execs whose executable and arguments were not kept, by reason (lost, forgotten)",
            m.exec_records_not_kept.clone(),
        );
        r.register(
            "sockfilter_kernel_tables_full",
            "Entries a bounded kernel table could not take, by table (executables, accepted_sockets, udp_endpoints)",
            m.kernel_tables_full.clone(),
        );
        r.register_collector(Box::new(ProcessCollector));
        *m.registry.lock().expect("not poisoned") = r;
        m
    }

    /// Counts one event (kind, verdict, deciding rule).
    pub fn count_event(&self, e: &Event) {
        self.events
            .get_or_create(&EventLabels {
                event: e.kind.as_str().into(),
                verdict: e.verdict.as_str().into(),
            })
            .inc();
        if let Some(rule) = &e.rule {
            self.rule_matches
                .get_or_create(&RuleLabels {
                    rule: label_value(rule),
                })
                .inc();
        }
    }

    /// Creates an output's errors and drops counters at 0, so that they
    /// exist before anything happens: a counter whose series first appears
    /// at 1 shows no increase to Prometheus, and an alert on the first drop
    /// would never fire. (The daemon sets each output's pending gauge.)
    pub fn init_output(&self, name: &str) {
        let label = Metrics::output(name);
        let _ = self.output_errors.get_or_create(&label);
        let _ = self.output_dropped.get_or_create(&label);
    }

    /// The labels of one output.
    pub fn output(name: &str) -> OutputLabels {
        OutputLabels {
            output: name.into(),
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("not poisoned");
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// `s` as a label value of the text format: `\\`, `"` and newlines escaped.
/// prometheus-client writes label values as they are, and a rule name (the
/// one label that is not a fixed word) may hold any of them: unescaped, one
/// would make the whole exposition unreadable to Prometheus.
fn label_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `process_*` metrics of this process, read from /proc at each scrape.
#[derive(Debug)]
struct ProcessCollector;

impl ProcessCollector {
    fn counter(
        enc: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        v: f64,
    ) -> Result<(), std::fmt::Error> {
        let c = ConstCounter::new(v);
        c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
    }

    fn gauge(
        enc: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        v: f64,
    ) -> Result<(), std::fmt::Error> {
        let g = ConstGauge::new(v);
        g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let p = ProcessStats::read();
        Self::counter(
            &mut enc,
            "process_cpu_seconds",
            "User and system CPU time",
            p.cpu_seconds,
        )?;
        Self::gauge(
            &mut enc,
            "process_resident_memory_bytes",
            "Resident memory",
            p.rss_bytes,
        )?;
        Self::gauge(
            &mut enc,
            "process_virtual_memory_bytes",
            "Virtual memory",
            p.vsize_bytes,
        )?;
        Self::gauge(
            &mut enc,
            "process_open_fds",
            "Open file descriptors",
            p.open_fds,
        )?;
        Self::gauge(
            &mut enc,
            "process_max_fds",
            "Limit of open file descriptors",
            p.max_fds,
        )?;
        Self::gauge(
            &mut enc,
            "process_start_time_seconds",
            "Start time, seconds since the Unix epoch",
            p.start_time,
        )
    }
}

#[derive(Default)]
struct ProcessStats {
    cpu_seconds: f64,
    rss_bytes: f64,
    vsize_bytes: f64,
    open_fds: f64,
    max_fds: f64,
    start_time: f64,
}

impl ProcessStats {
    fn read() -> ProcessStats {
        let mut p = ProcessStats::default();
        // SAFETY: sysconf has no memory effects.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK) as f64,
                libc::sysconf(libc::_SC_PAGESIZE) as f64,
            )
        };
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name, which may contain spaces.
            if let Some((_, rest)) = stat.rsplit_once(") ") {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                // rest[0] is field 3 (state): utime 14, stime 15, starttime 22, vsize 23, rss 24.
                p.cpu_seconds = (num(11) + num(12)) / ticks;
                p.vsize_bytes = num(20);
                p.rss_bytes = num(21) * page;
                let boot = std::fs::read_to_string("/proc/stat")
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
                    })
                    .unwrap_or(0.0);
                p.start_time = boot + num(19) / ticks;
            }
        }
        p.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()) as f64;
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes only into `lim`.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            p.max_fds = lim.rlim_cur as f64;
        }
        p
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped: a minimal
/// HTTP/1.1 responder (one request per connection), enough for Prometheus.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Metrics) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, most likely: do not spin.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(10), answer(stream, &metrics))
                    .await;
        });
    }
}

async fn answer(mut stream: tokio::net::TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let request_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let (method, target) = (parts.next(), parts.next());
    let path = target.map(|t| t.split(|&b| b == b'?').next().unwrap_or_default());
    let (status, content_type, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        (Some(b"GET"), _) => (
            "404 Not Found",
            "text/plain",
            "sockfilter serves /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_names_are_exposed() {
        let m = Metrics::new();
        m.lost.inc();
        m.events
            .get_or_create(&EventLabels {
                event: "listen".into(),
                verdict: "allow".into(),
            })
            .inc();
        m.output_pending
            .get_or_create(&Metrics::output("nats"))
            .set(3);
        m.exec_records_not_kept
            .get_or_create(&ExecLabels {
                reason: "lost".into(),
            })
            .inc_by(2);
        m.kernel_tables_full
            .get_or_create(&TableLabels {
                table: "executables".into(),
            })
            .inc_by(4);
        let text = m.encode();
        assert!(text.contains("sockfilter_exec_records_not_kept_total{reason=\"lost\"} 2"));
        assert!(text.contains("sockfilter_kernel_tables_full_total{table=\"executables\"} 4"));
        assert!(text.contains("sockfilter_events_total{event=\"listen\",verdict=\"allow\"} 1"));
        assert!(text.contains("sockfilter_events_lost_total 1"));
        assert!(text.contains("sockfilter_output_pending{output=\"nats\"} 3"));
        assert!(text.contains("process_cpu_seconds_total "));
        assert!(text.contains("process_resident_memory_bytes "));
    }

    #[test]
    fn a_rule_name_with_quotes_backslashes_or_newlines_keeps_the_exposition_valid() {
        // A policy may name a rule so; the text format escapes \\, \" and \n
        // in label values (prometheus-client writes them as they are).
        let m = Metrics::new();
        let event = |rule: &str| {
            let v = serde_json::json!({"event":"bind","time":"2026-01-01T00:00:00.000000Z","verdict":"deny",
                "pid":1,"uid":0,"comm":"x","exe":null,"cgroup":null,"proto":"udp","family":"ipv4",
                "local":{"ip":"127.0.0.1","port":53},"remote":null,"socket":1,"existing":false,"rule":rule});
            Event::from_json(&v).unwrap()
        };
        m.count_event(&event("no \"dns\"\\\nhere"));
        let text = m.encode();
        assert!(
            text.contains("sockfilter_rule_matches_total{rule=\"no \\\"dns\\\"\\\\\\nhere\"} 1\n"),
            "{text}"
        );
    }
}
