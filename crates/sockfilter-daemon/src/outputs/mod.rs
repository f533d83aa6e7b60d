//! Where the daemon sends events: a file of JSON lines, syslog, NATS
//! JetStream. Every output receives each event as the JSON of the `--json`
//! contract with the `host` field added.

pub mod file;
pub mod nats;
pub mod syslog;

use crate::config::OutputConfig;
use crate::metrics::Metrics;
use sockfilter_model::Event;
use std::path::Path;

/// One open output.
pub trait Output: Send {
    /// Takes one event; `json` is its contract JSON with `host`. An error is
    /// counted (`sockfilter_output_errors_total`) and reported by the caller.
    fn send(&mut self, event: &Event, json: &str) -> Result<(), String>;
    /// Reports that the kernel dropped events: `json` is the contract's
    /// `{"event":"lost","count":N}` with `host`. Only outputs that carry the
    /// `--json` stream as it is (the file) write it; the others have the
    /// count in `sockfilter_events_lost_total`.
    fn send_lost(&mut self, _json: &str) -> Result<(), String> {
        Ok(())
    }
    /// Pushes buffered events out; called when no event is waiting.
    fn flush(&mut self) -> Result<(), String>;
    /// Events accepted and not yet delivered.
    fn pending(&self) -> u64 {
        0
    }
    /// The host's current listeners changed (`json`: see
    /// [`crate::listeners::Listeners::to_json`]); outputs that publish them
    /// (NATS) take note.
    fn set_listeners(&mut self, _json: &str) {}
    /// The daemon stops cleanly (SIGTERM): what the output still does
    /// before it is dropped (NATS: marks the host's listeners as those of a
    /// stopped daemon), as a task the daemon waits for, for a bounded time.
    fn stop(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        None
    }
}

/// Opens the outputs of a configuration; `names` gets each output's metric
/// label (`file`, `syslog`, `nats`, then `file-2`... for repeated kinds).
/// `state_dir` is where outputs keep their own state (the NATS queue).
pub fn open_all(
    configs: &[OutputConfig],
    host: &str,
    state_dir: &Path,
    metrics: &Metrics,
) -> anyhow::Result<Vec<(String, Box<dyn Output>)>> {
    let mut seen: std::collections::HashMap<&str, usize> = Default::default();
    let mut outs = Vec::new();
    for c in configs {
        let n = seen.entry(c.kind()).or_default();
        *n += 1;
        let name = if *n == 1 {
            c.kind().to_string()
        } else {
            format!("{}-{n}", c.kind())
        };
        let out: Box<dyn Output> = match c {
            OutputConfig::File {
                path,
                rotate_mb,
                keep,
            } => Box::new(file::FileOutput::open(
                path,
                rotate_mb * 1024 * 1024,
                *keep,
            )?),
            OutputConfig::Syslog { address } => {
                Box::new(syslog::SyslogOutput::open(address.clone(), host)?)
            }
            OutputConfig::Nats {
                url,
                subject,
                queue_mb,
            } => Box::new(nats::NatsOutput::start(nats::NatsSettings {
                url: url.clone(),
                subject: subject.clone(),
                host: host.to_string(),
                queue_path: state_dir.join(format!("{name}-queue.jsonl")),
                queue_bytes: queue_mb * 1024 * 1024,
                metrics: metrics.clone(),
                label: Metrics::output(&name),
            })?),
        };
        metrics.init_output(&name);
        outs.push((name, out));
    }
    Ok(outs)
}
