//! Section `ramp`: the highest event rate without loss, library and CLI consumers.

use crate::agent::Agent;
use crate::bench::Bench;
use crate::consumer::Consumer;
use crate::host::cpu_seconds;
use crate::report::{note, Report};
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Bench {
    /// Writes the ramp section, one table per consumer.
    pub fn ramp(&mut self, r: &mut Report) -> anyhow::Result<()> {
        r.line("## Highest event rate without loss");
        r.line("");
        r.line("Paced listen storm (3 events per operation: bind, listen, close), 5 s per step, rate raised until the kernel's drop counter moves (`Item::Lost` / `lost_total()`, or `{\"event\":\"lost\"}` lines for the CLI) or the load generator cannot reach 90% of the target.");
        r.line("");
        let targets = [
            25_000.0, 50_000.0, 100_000.0, 120_000.0, 150_000.0, 200_000.0, 250_000.0, 300_000.0,
            400_000.0, 600_000.0,
        ];
        for consumer in ["library", "watch-cli"] {
            r.line(format!(
                "### Consumer: {}",
                if consumer == "library" {
                    "library (`Watcher::next()`, events counted in-process)"
                } else {
                    "`sockfilter watch --json --cgroup CG`, stdout read by a counter through a pipe"
                }
            ));
            r.line("");
            r.line("| target events/s | reached events/s | events received / produced | lost | consumer CPU % of one core |");
            r.line("|---|---|---|---|---|");
            let lib = if consumer == "library" {
                Some(Consumer::start(&self.cg, false)?)
            } else {
                None
            };
            let cli = if consumer == "watch-cli" {
                let (argv, ready, _) = self.agent_argv("watch-pipe")?.unwrap();
                Some(Agent::start(&argv, ready, true)?)
            } else {
                None
            };
            let pid = cli.as_ref().map(|a| a.pid()).unwrap_or(std::process::id());
            let mut last_ok: Option<f64> = None;
            let mut first_loss: Option<f64> = None;
            let mut max_reached = 0f64;
            for t in targets {
                note(format!("ramp {consumer} {t}"));
                let (e0, l0) = match (&lib, &cli) {
                    (Some(c), _) => (c.events(), c.lost()),
                    (_, Some(a)) => (
                        a.events.load(Ordering::Relaxed),
                        a.lost.load(Ordering::Relaxed),
                    ),
                    _ => unreachable!(),
                };
                let c0 = cpu_seconds(pid);
                let mut a = self.mode_args("listen");
                a[5] = "5".into();
                a.push("--rate".into());
                a.push(format!("{:.0}", t / 3.0));
                let res = self.load(&a)?;
                let c1 = cpu_seconds(pid);
                std::thread::sleep(Duration::from_millis(700));
                let (e1, l1) = match (&lib, &cli) {
                    (Some(c), _) => (c.events(), c.lost()),
                    (_, Some(a)) => (
                        a.events.load(Ordering::Relaxed),
                        a.lost.load(Ordering::Relaxed),
                    ),
                    _ => unreachable!(),
                };
                let ops = res["ops"].as_f64().unwrap_or(0.0);
                let secs = res["seconds"].as_f64().unwrap_or(1.0);
                let reached = 3.0 * ops / secs;
                max_reached = max_reached.max(reached);
                let lost = l1 - l0;
                r.line(format!(
                    "| {t:.0} | {reached:.0} | {} / {:.0} | {lost} | {:.0}% |",
                    e1 - e0,
                    3.0 * ops,
                    100.0 * (c1 - c0) / secs
                ));
                if lost > 0 {
                    first_loss = Some(reached);
                    break;
                }
                last_ok = Some(reached);
                if reached < 0.9 * t {
                    break;
                }
            }
            if let Some(c) = lib {
                c.stop();
            }
            if let Some(a) = cli {
                a.stop();
            }
            r.line("");
            r.line(match (last_ok, first_loss) {
                (ok, Some(l)) => format!(
                    "Result ({consumer}): last rate without loss {}, first with loss {l:.0} events/s.",
                    ok.map(|o| format!("{o:.0} events/s")).unwrap_or_else(|| "none".into())
                ),
                (_, None) => format!(
                    "Result ({consumer}): no loss; the machine could not generate more than {max_reached:.0} events/s (the load generator and the consumer share 2 cores)."
                ),
            });
            r.line("");
        }
        Ok(())
    }
}
