//! Section `throughput`: baseline vs agent, alternating pairs.

use crate::agent::parse_policy_times;
use crate::bench::Bench;
use crate::report::{note, rate_fmt, Report};
use crate::stats::Spread;
use anyhow::bail;
use serde_json::{json, Value};
use std::time::Duration;

/// Events an operation of each mode produces (sockfilter and the bpftrace
/// script alike): connect = connect + accept + 2 closes; listen = bind +
/// listen + close.
fn events_per_op(mode: &str) -> Option<f64> {
    match mode {
        "connect" => Some(4.0),
        "listen" => Some(3.0),
        _ => None,
    }
}

struct Pair {
    base: f64,
    agent: f64,
    ops: f64,
    cpu: f64,
    /// CPU per operation: the baseline run's load generator, and the agent
    /// run's load generator (with the BPF programs that run in its
    /// context) plus the agent.
    base_cpu_op: f64,
    run_cpu_op: f64,
    events: Option<u64>,
    lost: Option<u64>,
    expected: Option<f64>,
}

impl Bench {
    /// Writes the throughput section (and the enforce start-up table).
    pub fn throughput(&mut self, r: &mut Report) -> anyhow::Result<()> {
        r.line("## Throughput: baseline vs agent, alternating pairs");
        r.line("");
        r.line(format!(
            "{} pairs per row, {} s per load run, {} client threads; each pair is a baseline run then an agent run (agent started before, stopped after). ratio = agent-run rate / baseline rate of the same pair: median [min, max]. events = what the agent received / what the operations produce (connect storm: connect, accept, 2 closes; listen storm: bind, listen, close). lost = what the agent reported lost. CPU = the agent's utime+stime during the agent run (/proc/PID/stat). CPU per op: the load generator's user+system time per operation (children's rusage; it includes the BPF programs and the loopback softirq work that run in its context) in the baseline run, and in the agent run plus the agent's CPU; CPU ratio = baseline / agent run, per pair: unlike the rate ratio it does not move when other work on the machine takes CPU time from the load.",
            self.args.pairs, self.args.seconds, self.args.threads
        ));
        r.line("");
        r.line("| mode | agent | baseline rate (median) | agent-run rate (median) | ratio median [min, max] | events received / produced | lost | agent CPU s per run (median) | agent CPU µs per op | CPU µs per op: baseline / agent run (medians) | CPU ratio median [min, max] |");
        r.line("|---|---|---|---|---|---|---|---|---|---|---|");
        let modes = self.args.modes.clone();
        let agents = self.args.agents.clone();
        // enforce agent -> (read+compiled ms, written ms) of each start
        let mut policy_startup: std::collections::BTreeMap<String, Vec<(f64, f64)>> =
            Default::default();
        for mode in &modes {
            for agent in &agents {
                if agent != "library" && self.agent_argv(agent)?.is_none() {
                    let why = if agent.starts_with("bpftrace") {
                        "not available: bpftrace not installed (apt-get install -y bpftrace)"
                    } else if agent == "watch-before" {
                        "not measured: no --before binary given"
                    } else if agent.starts_with("enforce") {
                        "not available: `sockfilter enforce --help` fails in this build"
                    } else {
                        "not available: could not start"
                    };
                    r.line(format!("| {mode} | {agent} | {why} | | | | | | | | |"));
                    continue;
                }
                let mut pairs = Vec::new();
                let mut failed = None;
                let mut startup: Vec<(f64, f64)> = Vec::new();
                for i in 0..self.args.pairs {
                    note(format!("throughput {mode} {agent} pair {}", i + 1));
                    let base = self.load(&self.mode_args(mode))?;
                    let a = match self.start_running(agent) {
                        Ok(Some(a)) => a,
                        Ok(None) => bail!("{agent} vanished"),
                        Err(e) => {
                            failed = Some(e.to_string());
                            break;
                        }
                    };
                    if let Some(t) = a.stderr().as_deref().and_then(parse_policy_times) {
                        startup.push(t);
                    }
                    std::thread::sleep(Duration::from_millis(200));
                    let (c0, n0) = (a.cpu(), a.counts());
                    let run = self.load(&self.mode_args(mode))?;
                    let c1 = a.cpu();
                    // Let the agent drain what is still buffered.
                    let mut last = None;
                    for _ in 0..30 {
                        std::thread::sleep(Duration::from_millis(100));
                        let now = a.counts();
                        if now == last {
                            break;
                        }
                        last = now;
                    }
                    let n1 = a.counts();
                    let stopped = a.stop();
                    let (events, lost) = match (n0, n1, stopped) {
                        (Some((e0, l0)), Some((e1, l1)), _) => (Some(e1 - e0), Some(l1 - l0)),
                        (_, _, Some((e, l))) => (Some(e), Some(l)),
                        _ => (None, None),
                    };
                    let ops = run["ops"].as_f64().unwrap_or(0.0);
                    let base_ops = base["ops"].as_f64().unwrap_or(0.0).max(1.0);
                    pairs.push(Pair {
                        base: base["rate"].as_f64().unwrap_or(0.0),
                        agent: run["rate"].as_f64().unwrap_or(0.0),
                        ops,
                        cpu: c1 - c0,
                        base_cpu_op: base["loadgen_cpu"].as_f64().unwrap_or(0.0) / base_ops,
                        run_cpu_op: (run["loadgen_cpu"].as_f64().unwrap_or(0.0) + c1 - c0)
                            / ops.max(1.0),
                        events,
                        lost,
                        expected: events_per_op(mode).map(|k| k * ops),
                    });
                }
                if let Some(e) = failed {
                    let first = e.lines().next().unwrap_or("").replace('|', "/");
                    r.line(format!(
                        "| {mode} | {agent} | failed to start: {first} | | | | | | | | |"
                    ));
                    continue;
                }
                let ratios: Vec<f64> = pairs.iter().map(|p| p.agent / p.base).collect();
                let rs = Spread::of(&ratios).unwrap();
                let bm = Spread::of(&pairs.iter().map(|p| p.base).collect::<Vec<_>>()).unwrap();
                let am = Spread::of(&pairs.iter().map(|p| p.agent).collect::<Vec<_>>()).unwrap();
                let cpu = Spread::of(&pairs.iter().map(|p| p.cpu).collect::<Vec<_>>()).unwrap();
                let events: Option<u64> = pairs.iter().map(|p| p.events).sum();
                let lost: Option<u64> = pairs.iter().map(|p| p.lost).sum();
                let expected: Option<f64> = pairs.iter().map(|p| p.expected).sum();
                let ops_total: f64 = pairs.iter().map(|p| p.ops).sum();
                let received = match (events, expected) {
                    (Some(e), Some(x)) if x > 0.0 => {
                        format!("{e} / {x:.0} ({:.2}%)", 100.0 * e as f64 / x)
                    }
                    (Some(e), _) => format!("{e} / n/a"),
                    (None, _) => "not counted".into(),
                };
                let per_op = if mode == "bulk" {
                    "n/a".to_string()
                } else {
                    format!(
                        "{:.2}",
                        1e6 * pairs.iter().map(|p| p.cpu).sum::<f64>() / ops_total
                    )
                };
                let cpu_ratios: Vec<f64> = pairs
                    .iter()
                    .map(|p| p.base_cpu_op / p.run_cpu_op.max(1e-12))
                    .collect();
                let cr = Spread::of(&cpu_ratios).unwrap();
                let bc =
                    Spread::of(&pairs.iter().map(|p| p.base_cpu_op).collect::<Vec<_>>()).unwrap();
                let rc =
                    Spread::of(&pairs.iter().map(|p| p.run_cpu_op).collect::<Vec<_>>()).unwrap();
                r.line(format!(
                    "| {mode} | {agent} | {} | {} | **{:.3}** [{:.3}, {:.3}] | {received} | {} | {:.2} | {per_op} | {:.1} / {:.1} | **{:.3}** [{:.3}, {:.3}] |",
                    rate_fmt(mode, bm.median),
                    rate_fmt(mode, am.median),
                    rs.median,
                    rs.min,
                    rs.max,
                    lost.map(|l| l.to_string()).unwrap_or_else(|| "not counted".into()),
                    cpu.median,
                    1e6 * bc.median,
                    1e6 * rc.median,
                    cr.median,
                    cr.min,
                    cr.max
                ));
                let raw: Vec<Value> = pairs
                    .iter()
                    .map(|p| json!({"base": p.base, "agent": p.agent, "cpu": p.cpu, "events": p.events, "lost": p.lost, "base_cpu_op": p.base_cpu_op, "run_cpu_op": p.run_cpu_op}))
                    .collect();
                note(format!("raw {mode} {agent}: {}", Value::Array(raw)));
                if !startup.is_empty() {
                    policy_startup
                        .entry(agent.clone())
                        .or_default()
                        .extend(startup);
                }
            }
        }
        r.line("");
        if !policy_startup.is_empty() {
            r.line("### `sockfilter enforce` start-up");
            r.line("");
            r.line("From each enforce agent's ready line on stderr (`policy read and compiled in N ms, written to the kernel in M ms`), over every start of the throughput section: median [min, max].");
            r.line("");
            r.line("| agent | starts | read and compiled (ms) | written to the kernel (ms) |");
            r.line("|---|---|---|---|");
            for (agent, times) in &policy_startup {
                let c = Spread::of(&times.iter().map(|t| t.0).collect::<Vec<_>>()).unwrap();
                let w = Spread::of(&times.iter().map(|t| t.1).collect::<Vec<_>>()).unwrap();
                r.line(format!(
                    "| {agent} | {} | {:.0} [{:.0}, {:.0}] | {:.0} [{:.0}, {:.0}] |",
                    times.len(),
                    c.median,
                    c.min,
                    c.max,
                    w.median,
                    w.min,
                    w.max
                ));
            }
            r.line("");
        }
        Ok(())
    }
}
