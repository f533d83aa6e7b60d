//! `sockfilter enforce POLICY`: the policy compiled into BPF maps and
//! enforced by the kernel, events streamed like `watch`, reloaded without a
//! gap on SIGHUP or when the file changes.

use crate::watch::{event_loop, runtime, Extra, Output};
use sockfilter::enforce::agent::{prepare, PolicyAgent};
use sockfilter::enforce::existing;
use sockfilter::watch::Watcher;
use sockfilter_model::event::{Event, Verdict};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Arguments of `sockfilter enforce`.
#[derive(clap::Args)]
pub struct Args {
    /// The policy file (see docs/policy.md).
    pub policy: PathBuf,
    #[command(flatten)]
    pub output: Output,
    /// Print per-rule match counters on stderr every SECONDS.
    #[arg(long, value_name = "SECONDS")]
    pub stats: Option<u64>,
}

/// Tells systemd (or anything listening on $NOTIFY_SOCKET) that enforcement
/// is in place.
fn notify_ready() {
    sockfilter_daemon::notify::notify("READY=1");
}

struct Enforcing {
    agent: PolicyAgent,
    stats_every: Option<Duration>,
    last_stats: Instant,
}

impl Enforcing {
    /// One line per rule that matched, then the default; rules that never
    /// matched are counted, not listed (a policy may have thousands).
    fn stats_lines(&self, w: &Watcher) -> Vec<String> {
        let hits = self.agent.hits(w);
        let mut idle = 0;
        let mut lines = Vec::new();
        for (name, n) in hits {
            match name {
                Some(name) if n > 0 => lines.push(format!("rule {name}: {n} matches")),
                Some(_) => idle += 1,
                None => lines.push(format!("default: {n} matches")),
            }
        }
        if idle > 0 {
            lines.push(format!("{idle} other rules: no matches"));
        }
        let probe = w.probe();
        let suppressed = probe.counter(sockfilter::abi::COUNTER_REFUSED_SUPPRESSED);
        if suppressed > 0 {
            lines.push(format!(
                "refused inbound connections not reported (over {} a second per listener): {suppressed}",
                sockfilter::abi::REFUSED_PER_SEC
            ));
        }
        let unregistered = probe.counter(sockfilter::abi::COUNTER_LISTENERS_FULL);
        if unregistered > 0 {
            lines.push(format!(
                "listeners not registered (the kernel's listener table was full; accept rules with process fields did not match them): {unregistered}"
            ));
        }
        lines
    }
}

impl Extra for Enforcing {
    fn on_event(&mut self, w: &mut Watcher, e: &Event) {
        self.agent.on_event(w, e);
    }

    fn on_tick(&mut self, w: &mut Watcher) {
        self.agent.on_tick(w);
        if let Some(every) = self.stats_every {
            if self.last_stats.elapsed() >= every {
                self.last_stats = Instant::now();
                for l in self.stats_lines(w) {
                    eprintln!("sockfilter: {l}");
                }
            }
        }
    }

    fn on_hangup(&mut self, w: &mut Watcher) {
        self.agent.reload(w, "SIGHUP");
    }

    fn summary(&mut self, w: &Watcher) -> Vec<String> {
        let mut v = vec!["enforcement removed; matches per rule of the last policy:".to_string()];
        v.extend(self.stats_lines(w));
        v
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let prepared = prepare(&args.policy);
    let parsed = started.elapsed();
    let (policy, compiled) = match prepared {
        Ok(p) => p,
        Err(lines) => {
            for l in lines {
                eprintln!("{l}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    runtime()?.block_on(async {
        let mut watcher = args.output.start(true)?;
        let mut state = Enforcing {
            agent: PolicyAgent::attach(&mut watcher, &args.policy),
            stats_every: args.stats.map(|s| Duration::from_secs(s.max(1))),
            last_stats: Instant::now(),
        };
        let t = Instant::now();
        state.agent.install(&mut watcher, &policy, &compiled)?;
        let written = t.elapsed();
        if !args.output.no_existing {
            // The denied ones are closed and queued already; the others are
            // reported with the verdict the policy gives them.
            watcher.report_existing(
                |events| existing::judge(&policy, events),
                |e| e.verdict != Verdict::Deny,
            );
        }
        let message = format!(
            "sockfilter: enforcing {} rules from {} for {} (policy read and compiled in {} ms, written to the kernel in {} ms); Ctrl-C to stop",
            policy.rules.len(),
            args.policy.display(),
            args.output.scope(&watcher),
            parsed.as_millis(),
            written.as_millis()
        );
        let adopted = watcher.probe().pin_dir().filter(|_| watcher.probe().is_adopted()).map(|d| {
            format!(
                "sockfilter: took over the enforcement that an enforce which is gone left in {}: its policy stayed in force until this one replaced it",
                d.display()
            )
        });
        let replaced = watcher.probe().replaced_build().map(|hash| {
            format!(
                "sockfilter: replaced the enforcement of another sockfilter build (BPF object {hash}) without a gap: its policy stayed in force until this one's was, then its programs were removed",
            )
        });
        let destroy = sockfilter::destroy::destroy_method();
        event_loop(watcher, &args.output, &mut state, || {
            if let Some(line) = adopted.into_iter().chain(replaced).next() {
                eprintln!("{line}");
            }
            eprintln!("{message}");
            if destroy != sockfilter::destroy::DestroyMethod::BpfIterator {
                // Degraded: an SO_REUSEPORT member may be out of reach.
                eprintln!("sockfilter: denied sockets are closed with {destroy}");
            }
            notify_ready();
        })
        .await
    })
}
