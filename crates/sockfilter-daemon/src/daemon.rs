//! `sockfilter daemon`: the watch loop of `sockfilter watch`, with every
//! event sent to the history, the metrics and the configured outputs;
//! `READY=1` once everything is open (and the policy, if any, is in
//! force), a clean stop on SIGTERM, and a reload of configuration and
//! policy on SIGHUP that keeps the running ones when a new file is invalid
//! or cannot be opened.

use crate::config::{Config, HistoryConfig, MetricsConfig};
use crate::history::HistoryWriter;
use crate::listeners::Listeners;
use crate::metrics::Metrics;
use crate::outputs::Output;
use anyhow::Context;
use sockfilter::enforce::agent::{prepare, PolicyAgent, PreparedPolicy};
use sockfilter::watch::{Item, WatchOptions, Watcher};
use sockfilter_model::Event;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often listeners, pending counts and the like are refreshed.
const TICK: Duration = Duration::from_millis(200);
/// An output's errors are reported on stderr at most this often (each one
/// is counted in `sockfilter_output_errors_total`).
const ERROR_REPORT_EVERY: Duration = Duration::from_secs(10);
/// How long a clean stop waits for the outputs' last work (NATS: marking
/// the host's listeners stopped) when a server does not answer.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Where outputs keep state when no history database is configured.
const DEFAULT_STATE_DIR: &str = "/var/lib/sockfilter";

/// The task serving `/metrics`, stopped when dropped.
struct MetricsServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Everything that a configuration opens; replaced as a whole on reload.
struct Opened {
    config: Config,
    host: String,
    outputs: Vec<(String, Box<dyn Output>)>,
    history: Option<HistoryWriter>,
    metrics_server: Option<MetricsServer>,
}

fn state_dir(config: &Config) -> PathBuf {
    config
        .history
        .as_ref()
        .and_then(|h| h.path.parent().map(Path::to_owned))
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

async fn bind_metrics(m: &MetricsConfig, metrics: &Metrics) -> anyhow::Result<MetricsServer> {
    let listener = tokio::net::TcpListener::bind(m.listen)
        .await
        .with_context(|| format!("metrics: listening on {}", m.listen))?;
    let task = tokio::spawn(crate::metrics::serve(listener, metrics.clone()));
    Ok(MetricsServer {
        addr: m.listen,
        task,
    })
}

impl Opened {
    /// Opens what `config` asks for. On a reload, `previous` is the running
    /// set: what is unchanged (the same history database, metrics address
    /// or outputs) is taken over from it, and it is left as it was unless
    /// everything new opened.
    async fn open(
        config: Config,
        metrics: &Metrics,
        mut previous: Option<&mut Opened>,
    ) -> anyhow::Result<Opened> {
        let host = crate::host::host_name(config.host.as_deref())?;
        let prev = previous.as_deref();
        let keep_history = match (&config.history, prev.and_then(|p| p.history.as_ref())) {
            (Some(h), Some(w)) => w.path() == h.path,
            _ => false,
        };
        let keep_metrics = match (
            &config.metrics,
            prev.and_then(|p| p.metrics_server.as_ref()),
        ) {
            (Some(m), Some(s)) => s.addr == m.listen,
            _ => false,
        };
        let keep_outputs = prev.is_some_and(|p| {
            p.config.outputs == config.outputs
                && p.host == host
                && state_dir(&p.config) == state_dir(&config)
        });
        let new_history = match &config.history {
            Some(HistoryConfig { path, retention }) if !keep_history => {
                Some(HistoryWriter::open(path, *retention, metrics)?)
            }
            _ => None,
        };
        let new_metrics = match &config.metrics {
            Some(m) if !keep_metrics => Some(bind_metrics(m, metrics).await?),
            _ => None,
        };
        // Outputs last, and nothing awaits from here on: a running NATS
        // output cannot touch its queue while the new one opens it.
        let new_outputs = if keep_outputs {
            None
        } else {
            if let Some(p) = previous.as_deref_mut() {
                p.flush_outputs(metrics);
            }
            Some(crate::outputs::open_all(
                &config.outputs,
                &host,
                &state_dir(&config),
                metrics,
            )?)
        };
        let history = match keep_history {
            true => previous.as_deref_mut().and_then(|p| p.history.take()),
            false => new_history,
        };
        let metrics_server = match keep_metrics {
            true => previous
                .as_deref_mut()
                .and_then(|p| p.metrics_server.take()),
            false => new_metrics,
        };
        let outputs = match new_outputs {
            Some(o) => o,
            None => previous
                .map(|p| std::mem::take(&mut p.outputs))
                .unwrap_or_default(),
        };
        Ok(Opened {
            config,
            host,
            outputs,
            history,
            metrics_server,
        })
    }

    fn flush_outputs(&mut self, metrics: &Metrics) {
        for (name, out) in &mut self.outputs {
            if let Err(e) = out.flush() {
                metrics
                    .output_errors
                    .get_or_create(&Metrics::output(name))
                    .inc();
                eprintln!("sockfilter: output {name}: {e}");
            }
        }
    }

    /// One line for the start and reload messages.
    fn describe(&self) -> String {
        let mut parts = vec![format!("host {}", self.host)];
        if let Some(h) = &self.history {
            parts.push(format!("history {}", h.path().display()));
        }
        if let Some(m) = &self.metrics_server {
            parts.push(format!("metrics http://{}/metrics", m.addr));
        }
        for (name, _) in &self.outputs {
            parts.push(format!("output {name}"));
        }
        parts.join(", ")
    }
}

/// The running daemon.
struct Daemon {
    config_path: PathBuf,
    /// The policy in force, when the config names one.
    policy: Option<PolicyAgent>,
    opened: Opened,
    metrics: Metrics,
    listeners: Listeners,
    /// The watched cgroup subtree, for the listener resync after losses.
    subtree: Option<String>,
    json: String,
    errors_reported: HashMap<String, Instant>,
    events: u64,
    lost: u64,
    /// Exec records lost and forgotten, as last counted in the metrics.
    execs_not_kept: (u64, u64),
    /// Kernel table overflows, as last counted in the metrics.
    tables_full: [u64; 3],
}

impl Daemon {
    fn on_event(&mut self, w: &mut Watcher, e: &Event) {
        if let Some(p) = &mut self.policy {
            p.on_event(w, e);
        }
        self.events += 1;
        self.metrics.count_event(e);
        self.listeners.apply(e);
        self.json.clear();
        e.write_json_with_host(Some(&self.opened.host), &mut self.json);
        if let Some(h) = &mut self.opened.history {
            h.record(e, &self.json);
        }
        for i in 0..self.opened.outputs.len() {
            let (name, out) = &mut self.opened.outputs[i];
            if let Err(msg) = out.send(e, &self.json) {
                let name = name.clone();
                self.output_error(&name, &msg);
            }
        }
    }

    fn output_error(&mut self, name: &str, msg: &str) {
        self.metrics
            .output_errors
            .get_or_create(&Metrics::output(name))
            .inc();
        let last = self
            .errors_reported
            .entry(name.to_string())
            .or_insert_with(|| Instant::now() - ERROR_REPORT_EVERY);
        if last.elapsed() >= ERROR_REPORT_EVERY {
            *last = Instant::now();
            eprintln!("sockfilter: output {name}: {msg} (each failure is counted in sockfilter_output_errors_total)");
        }
    }

    fn on_lost(&mut self, n: u64) {
        self.lost += n;
        self.metrics.lost.inc_by(n);
        eprintln!(
            "sockfilter: the kernel dropped {n} events (ring buffer full); {} so far",
            self.lost
        );
        self.listeners
            .resync(sockfilter::watch::existing_events(self.subtree.as_deref()));
        // With `host` and, since the history keeps it for later, `time`.
        let now = std::time::SystemTime::now();
        let mut lost = sockfilter_model::event::lost_json(n);
        lost["host"] = self.opened.host.clone().into();
        lost["time"] = sockfilter_model::event::rfc3339(now).into();
        let lost = lost.to_string();
        if let Some(h) = &mut self.opened.history {
            h.record_lost(now, &lost);
        }
        for i in 0..self.opened.outputs.len() {
            let (name, out) = &mut self.opened.outputs[i];
            if let Err(msg) = out.send_lost(&lost) {
                let name = name.clone();
                self.output_error(&name, &msg);
            }
        }
    }

    fn on_tick(&mut self, w: &mut Watcher) {
        if let Some(p) = &mut self.policy {
            p.on_tick(w);
        }
        if self.listeners.take_changed() {
            self.listeners.export(&self.metrics);
            let json = self.listeners.to_json(&self.opened.host).to_string();
            for (_, out) in &mut self.opened.outputs {
                out.set_listeners(&json);
            }
        }
        for (name, out) in &self.opened.outputs {
            self.metrics
                .output_pending
                .get_or_create(&Metrics::output(name))
                .set(out.pending() as i64);
        }
        self.count_execs_not_kept(w);
        self.count_kernel_tables_full(w);
    }

    fn count_kernel_tables_full(&mut self, w: &Watcher) {
        for (i, (table, n)) in w.kernel_tables_full().into_iter().enumerate() {
            let new = n.saturating_sub(self.tables_full[i]);
            if new > 0 {
                self.metrics
                    .kernel_tables_full
                    .get_or_create(&crate::metrics::TableLabels {
                        table: table.into(),
                    })
                    .inc_by(new);
            }
            self.tables_full[i] = n;
        }
    }

    fn count_execs_not_kept(&mut self, w: &Watcher) {
        let (lost, forgotten) = w.execs_not_kept();
        let (was_lost, was_forgotten) = self.execs_not_kept;
        for (reason, n) in [
            ("lost", lost.saturating_sub(was_lost)),
            ("forgotten", forgotten.saturating_sub(was_forgotten)),
        ] {
            if n > 0 {
                self.metrics
                    .exec_records_not_kept
                    .get_or_create(&crate::metrics::ExecLabels {
                        reason: reason.into(),
                    })
                    .inc_by(n);
            }
        }
        self.execs_not_kept = (lost, forgotten);
    }

    async fn reload(&mut self, w: &mut Watcher) {
        let config = match Config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "sockfilter: reload rejected, the previous configuration stays in force: {e}"
                );
                // The policy file is its own: reread it all the same.
                if let Some(agent) = &mut self.policy {
                    agent.reload(w, "SIGHUP");
                }
                return;
            }
        };
        if config.cgroup != self.opened.config.cgroup
            || config.policy.is_some() != self.opened.config.policy.is_some()
        {
            eprintln!("sockfilter: a changed cgroup, or a policy added or removed, takes effect when the daemon restarts");
        }
        // All or nothing: the new policy is read and compiled, and what the
        // new config opens is opened, before either is put in force.
        let policy = match (&self.policy, &config.policy) {
            (Some(_), Some(path)) => match PreparedPolicy::read(path) {
                Ok(p) => Some(p),
                Err(lines) => {
                    eprintln!("sockfilter: reload rejected, the previous configuration and policy stay in force:");
                    for l in lines {
                        eprintln!("{l}");
                    }
                    return;
                }
            },
            _ => None,
        };
        match Opened::open(config, &self.metrics, Some(&mut self.opened)).await {
            Ok(new) => {
                if let (Some(agent), Some(p)) = (&mut self.policy, policy) {
                    agent.install_prepared(w, p, "SIGHUP");
                }
                self.opened = new;
                if let (Some(h), Some(c)) = (&self.opened.history, &self.opened.config.history) {
                    h.expire_now(c.retention);
                }
                // The host may have changed: publish the listeners again.
                self.listeners
                    .resync(sockfilter::watch::existing_events(self.subtree.as_deref()));
                eprintln!(
                    "sockfilter: configuration reloaded from {} (SIGHUP): {}",
                    self.config_path.display(),
                    self.opened.describe()
                );
            }
            Err(e) => eprintln!(
                "sockfilter: reload rejected, the previous configuration and policy stay in force: {e:#}"
            ),
        }
    }
}

/// The cgroup v2 directory of `cgroup` (named as in /proc/PID/cgroup).
fn cgroup_dir(cgroup: &str) -> anyhow::Result<PathBuf> {
    let root = sockfilter::cgroup::cgroup2_mount()
        .ok_or_else(|| anyhow::anyhow!("no cgroup v2 hierarchy is mounted"))?;
    let dir = root.join(cgroup.trim_start_matches('/'));
    anyhow::ensure!(
        dir.is_dir(),
        "cgroup {cgroup}: no such cgroup ({} is not a directory)",
        dir.display()
    );
    Ok(dir)
}

/// Runs the daemon with the configuration at `config_path` until SIGTERM
/// or SIGINT. Must run inside a tokio runtime.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let config = Config::load(config_path)?;
    let prepared = config
        .policy
        .as_deref()
        .map(prepare)
        .transpose()
        .map_err(|lines| anyhow::anyhow!(lines.join("\n")))?;
    let metrics = Metrics::new();
    let cgroup = config.cgroup.as_deref().map(cgroup_dir).transpose()?;
    let subtree = config.cgroup.clone();
    // One line naming what this kernel cannot do (`sockfilter doctor` tells more).
    let command = if prepared.is_some() {
        sockfilter::features::Command::Enforce
    } else {
        sockfilter::features::Command::Watch
    };
    if let Some(line) = sockfilter::features::degraded_line(command) {
        eprintln!("sockfilter: {line}");
    }
    // What the config opens comes first: a daemon that cannot open an
    // output, its history or its metrics address must change nothing in
    // the kernel (with a policy, its programs would otherwise stay pinned
    // and enforcing after a start that failed, with no daemon to take them
    // over).
    let policy_path = config.policy.clone();
    let opened = Opened::open(config, &metrics, None).await?;
    let opts = WatchOptions {
        cgroup,
        existing: true,
    };
    // With a policy, enforcement is pinned in bpffs and outlives a crash,
    // as `sockfilter enforce`'s does (docs/security.md).
    let mut watcher = if prepared.is_some() {
        Watcher::start_persistent(opts)?
    } else {
        Watcher::start_with(opts, false)?
    };
    let policy = match (&policy_path, prepared) {
        (Some(path), Some((policy, compiled))) => {
            let mut agent = PolicyAgent::attach(&mut watcher, path);
            agent.install(&mut watcher, &policy, &compiled)?;
            Some(agent)
        }
        _ => None,
    };
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut d = Daemon {
        config_path: config_path.to_owned(),
        policy,
        opened,
        metrics,
        listeners: Listeners::default(),
        subtree,
        json: String::with_capacity(1024),
        errors_reported: HashMap::new(),
        events: 0,
        lost: 0,
        execs_not_kept: (0, 0),
        tables_full: [0; 3],
    };
    d.listeners.export(&d.metrics);
    eprintln!(
        "sockfilter: daemon running from {}: {}",
        config_path.display(),
        d.opened.describe()
    );
    if let Some(p) = &d.policy {
        eprintln!(
            "sockfilter: enforcing {} rules from {}",
            p.rules(),
            p.path().display()
        );
    }
    crate::notify::notify("READY=1");
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = loop {
        let item = tokio::select! {
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            _ = sighup.recv() => { d.reload(&mut watcher).await; continue }
            _ = tick.tick() => { d.on_tick(&mut watcher); continue }
            item = watcher.next() => item,
        };
        match item {
            None => break "end of stream",
            Some(Item::Lost(n)) => d.on_lost(n),
            Some(Item::Event(e)) => d.on_event(&mut watcher, &e),
        }
        if watcher.pending() == 0 {
            d.opened.flush_outputs(&d.metrics);
        }
    };
    crate::notify::notify("STOPPING=1");
    // What the kernel produced before the signal still reaches the outputs.
    for item in watcher.take_remaining() {
        match item {
            Item::Lost(n) => d.on_lost(n),
            Item::Event(e) => d.on_event(&mut watcher, &e),
        }
    }
    d.opened.flush_outputs(&d.metrics);
    watcher.release_pins(); // a clean stop leaves nothing enforced
    drop(watcher); // detaches every program
    let last_work: Vec<_> = d
        .opened
        .outputs
        .iter_mut()
        .filter_map(|(_, out)| out.stop())
        .collect();
    if tokio::time::timeout(STOP_GRACE, futures_util::future::join_all(last_work))
        .await
        .is_err()
    {
        eprintln!("sockfilter: an output did not finish within {STOP_GRACE:?} of the stop (NATS unreachable?): the fleet view shows this host's last update");
    }
    let (events, lost) = (d.events, d.lost);
    drop(d); // writes the history's last batch
    eprintln!("sockfilter: daemon stopped ({stop}); programs detached; events: {events}; dropped by the kernel: {lost}");
    Ok(())
}
