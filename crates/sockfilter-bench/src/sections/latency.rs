//! Section `latency`: stamped operations against the library consumer's arrivals.

use crate::bench::Bench;
use crate::consumer::Consumer;
use crate::report::{note, us, Report};
use crate::stats::quantile;
use sockfilter_model::event::EventKind;
use std::collections::HashMap;
use std::time::Duration;

impl Bench {
    /// Writes the latency section.
    pub fn latency(&mut self, r: &mut Report) -> anyhow::Result<()> {
        r.line("## Event latency (library consumer)");
        r.line("");
        r.line("`sockfilter::watch::Watcher` (`WatchOptions { cgroup: Some(CG), existing: false }`, current-thread tokio runtime) in the runner; the load generator stamps CLOCK_REALTIME just before each `listen()`/`connect()` and records the socket cookie; latency = arrival of the event in the consumer - stamp. kernel→user = arrival - the event's own `time` (taken in the BPF program).");
        r.line("");
        r.line("| load | events matched | p50 | p99 | max | kernel→user p50 | kernel→user p99 |");
        r.line("|---|---|---|---|---|---|---|");
        let c = Consumer::start(&self.cg, true)?;
        let runs: [(&str, &str, Option<f64>, f64); 4] = [
            ("listen, paced 2,000/s", "listen", Some(2000.0), 3.0),
            ("connect, paced 2,000/s", "connect", Some(2000.0), 3.0),
            ("listen storm (as fast as possible)", "listen", None, 2.0),
            ("connect storm (as fast as possible)", "connect", None, 2.0),
        ];
        for (label, mode, rate, secs) in runs {
            note(format!("latency {label}"));
            let stamps = self.tmp.join("stamps.txt");
            let mut a = vec![
                "--mode".to_string(),
                mode.into(),
                "--threads".into(),
                self.args.threads.to_string(),
                "--seconds".into(),
                secs.to_string(),
                "--stamps".into(),
                stamps.display().to_string(),
            ];
            if let Some(rt) = rate {
                a.push("--rate".into());
                a.push(rt.to_string());
            }
            c.take_arrivals();
            let res = self.load(&a)?;
            std::thread::sleep(Duration::from_millis(500));
            let arrivals = c.take_arrivals();
            let kind = if mode == "listen" {
                EventKind::Listen
            } else {
                EventKind::Connect
            };
            let stamps: HashMap<u64, u64> = std::fs::read_to_string(&stamps)?
                .lines()
                .filter_map(|l| {
                    let mut it = l.split_whitespace();
                    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
                })
                .collect();
            let mut lat = Vec::new();
            let mut k2u = Vec::new();
            for a in arrivals.iter().filter(|a| a.kind == kind) {
                if let Some(&t) = stamps.get(&a.cookie) {
                    lat.push((a.arrival_ns as f64 - t as f64) / 1e3);
                    k2u.push((a.arrival_ns as f64 - a.event_ns as f64) / 1e3);
                }
            }
            let q = |v: &mut Vec<f64>, x: f64| quantile(v, x).map(us).unwrap_or_else(|| "-".into());
            r.line(format!(
                "| {label} ({:.0} ops/s reached) | {} of {} | {} | {} | {} | {} | {} |",
                res["rate"].as_f64().unwrap_or(0.0),
                lat.len(),
                stamps.len(),
                q(&mut lat, 0.5),
                q(&mut lat, 0.99),
                q(&mut lat, 1.0),
                q(&mut k2u, 0.5),
                q(&mut k2u, 0.99),
            ));
        }
        let lost = c.lost();
        c.stop();
        r.line("");
        r.line(format!("Events lost during the latency runs: {lost}."));
        r.line("");
        Ok(())
    }
}
