//! Section `memory`: RSS of `sockfilter watch` with many live connections and after many short ones.

use crate::agent::Agent;
use crate::bench::Bench;
use crate::host::status_kb;
use crate::report::{mb, note, Report};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::{Duration, Instant};

impl Bench {
    /// Writes the memory section.
    pub fn memory(&mut self, r: &mut Report) -> anyhow::Result<()> {
        r.line("## Memory of `sockfilter watch --json --cgroup CG > /dev/null`");
        r.line("");
        r.line("| case | VmRSS at start (MB) | VmRSS at end (MB) | peak VmHWM (MB) | notes |");
        r.line("|---|---|---|---|---|");
        let (argv, ready, _) = self.agent_argv("watch")?.unwrap();
        // 1. Live connections opened while watching.
        note(format!("memory: {} live connections", self.args.live));
        let w = Agent::start(&argv, ready, false)?;
        std::thread::sleep(Duration::from_millis(300));
        let rss0 = status_kb(w.pid(), "VmRSS");
        let mut hold = self
            .loadgen_cmd(&[
                "--mode".into(),
                "hold".into(),
                "--connections".into(),
                self.args.live.to_string(),
                "--seconds".into(),
                "15".into(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut err = BufReader::new(hold.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line)?;
        let t_open = Instant::now();
        std::thread::sleep(Duration::from_secs(2));
        let (rss1, hwm1) = (status_kb(w.pid(), "VmRSS"), status_kb(w.pid(), "VmHWM"));
        let s = w.stop();
        r.line(format!(
            "| {} connections opened while watching (each side's events live) | {} | {} | **{}** | loadgen: {} |",
            self.args.live,
            mb(rss0),
            mb(rss1),
            mb(hwm1),
            line.trim()
        ));
        note(s.lines().last().unwrap_or(""));
        // 2. The same connections, existing at start (the sock_diag snapshot).
        let w = Agent::start(&argv, ready, false)?;
        std::thread::sleep(Duration::from_millis(1500));
        let (rss2, hwm2) = (status_kb(w.pid(), "VmRSS"), status_kb(w.pid(), "VmHWM"));
        let still_open = t_open.elapsed().as_secs_f64() < 14.0;
        w.stop();
        r.line(format!(
            "| watch started while {} connections ({} sockets) exist: snapshot of existing sockets | - | {} | **{}** | connections still open at the reading: {still_open} |",
            self.args.live,
            2 * self.args.live,
            mb(rss2),
            mb(hwm2)
        ));
        let _ = hold.wait();
        // 3. History: many short connections.
        note(format!("memory: {} short connections", self.args.million));
        let w = Agent::start(&argv, ready, false)?;
        std::thread::sleep(Duration::from_millis(300));
        let rss0 = status_kb(w.pid(), "VmRSS");
        let t0 = Instant::now();
        let mut storm = self
            .loadgen_cmd(&[
                "--mode".into(),
                "connect".into(),
                "--threads".into(),
                self.args.threads.to_string(),
                "--max-ops".into(),
                self.args.million.to_string(),
                "--seconds".into(),
                "1800".into(),
            ])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut samples = Vec::new();
        while storm.try_wait()?.is_none() {
            std::thread::sleep(Duration::from_secs(5));
            samples.push((
                t0.elapsed().as_secs(),
                status_kb(w.pid(), "VmRSS").unwrap_or(0),
            ));
        }
        let mut out = String::new();
        storm.stdout.take().unwrap().read_to_string(&mut out)?;
        let res: Value =
            serde_json::from_str(out.lines().last().unwrap_or("{}")).unwrap_or(json!({}));
        std::thread::sleep(Duration::from_millis(1000));
        let (rss1, hwm1) = (status_kb(w.pid(), "VmRSS"), status_kb(w.pid(), "VmHWM"));
        let s = w.stop();
        let summary = s
            .lines()
            .find(|l| l.contains("stopped"))
            .unwrap_or("")
            .to_string();
        let series: Vec<String> = samples
            .iter()
            .step_by((samples.len() / 8).max(1))
            .map(|(t, kb)| format!("{t}s {:.1}", *kb as f64 / 1024.0))
            .collect();
        r.line(format!(
            "| {} short connections (connect storm, {} threads) | {} | {} | **{}** | took {:.0} s ({:.0} connections/s); RSS over time (MB): {} |",
            res["ops"].as_u64().unwrap_or(0),
            self.args.threads,
            mb(rss0),
            mb(rss1),
            mb(hwm1),
            t0.elapsed().as_secs_f64(),
            res["rate"].as_f64().unwrap_or(0.0),
            series.join(", ")
        ));
        r.line("");
        r.line(format!("watch's own summary: `{}`", summary.trim()));
        r.line("");
        Ok(())
    }
}
