//! The agents under measurement: how each is started, counted and stopped, and the policy and bpftrace script they run.

use crate::bench::Bench;
use crate::consumer::Consumer;
use crate::host::cpu_seconds;
use crate::report::note;
use anyhow::{bail, Context};
use serde_json::Value;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Ready pattern meaning: wait for the file `bpftrace-ready` beside the
/// script (the last argument).
const FLAG_READY: &str = "<bpftrace-ready file>";

/// A process under measurement (sockfilter or bpftrace), its output read by
/// threads: stdout lines counted as events, "lost" reports summed.
pub(crate) struct Agent {
    child: Child,
    pub(crate) events: Arc<AtomicU64>,
    pub(crate) lost: Arc<AtomicU64>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Agent {
    /// Starts `argv` and waits until `ready` appears on its stdout or stderr.
    /// `count` = stdout is read and counted; otherwise it goes to /dev/null.
    pub(crate) fn start(argv: &[String], ready: &str, count: bool) -> anyhow::Result<Agent> {
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(if count { Stdio::piped() } else { Stdio::null() })
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", argv[0]))?;
        let ready_flag = Arc::new(AtomicBool::new(false));
        let events = Arc::new(AtomicU64::new(0));
        let lost = Arc::new(AtomicU64::new(0));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            let (rf, ev, lo, pat) = (
                ready_flag.clone(),
                events.clone(),
                lost.clone(),
                ready.to_string(),
            );
            readers.push(std::thread::spawn(move || {
                count_lines(out, &pat, &rf, &ev, &lo)
            }));
        }
        if let Some(err) = child.stderr.take() {
            let (rf, se, pat) = (ready_flag.clone(), stderr.clone(), ready.to_string());
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if line.contains(&pat) {
                        rf.store(true, Ordering::SeqCst);
                    }
                    let mut s = se.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let flag_file = (ready == FLAG_READY)
            .then(|| Path::new(&argv[argv.len() - 1]).with_file_name("bpftrace-ready"));
        while !ready_flag.load(Ordering::SeqCst) {
            if flag_file.as_ref().is_some_and(|f| f.exists()) {
                break;
            }
            if let Some(st) = child.try_wait()? {
                for h in readers {
                    let _ = h.join();
                }
                bail!(
                    "{} exited ({st}) before it was ready: {}",
                    argv.join(" "),
                    stderr.lock().unwrap().trim()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("{} not ready after 60 s", argv.join(" "));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Agent {
            child,
            events,
            lost,
            stderr,
            readers,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, wait (SIGKILL after 15 s); returns stderr.
    pub(crate) fn stop(mut self) -> String {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
        let s = self.stderr.lock().unwrap().clone();
        s
    }
}

/// (read and compiled, written) milliseconds from `sockfilter enforce`'s
/// ready line: "... (policy read and compiled in N ms, written to the
/// kernel in M ms) ...".
pub(crate) fn parse_policy_times(stderr: &str) -> Option<(f64, f64)> {
    let line = stderr
        .lines()
        .find(|l| l.contains("read and compiled in "))?;
    let num_after = |pat: &str| -> Option<f64> {
        let rest = &line[line.find(pat)? + pat.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    Some((
        num_after("compiled in ")?,
        num_after("written to the kernel in ")?,
    ))
}

/// Counts event lines of an agent's stdout: everything after the ready
/// line, except loss reports (`Lost N events` from bpftrace,
/// `{"event":"lost","count":N}` from sockfilter), which are summed.
fn count_lines(out: impl Read, ready: &str, rf: &AtomicBool, ev: &AtomicU64, lo: &AtomicU64) {
    let mut r = BufReader::with_capacity(1 << 20, out);
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.starts_with(b"Lost ") {
            let n = std::str::from_utf8(&line[5..])
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
            lo.fetch_add(n, Ordering::Relaxed);
        } else if line.starts_with(b"{\"count\":") && contains(&line, b"\"event\":\"lost\"") {
            let n = serde_json::from_slice::<Value>(&line)
                .ok()
                .and_then(|v| v["count"].as_u64())
                .unwrap_or(0);
            lo.fetch_add(n, Ordering::Relaxed);
        } else if !rf.load(Ordering::Relaxed) && contains(&line, ready.as_bytes()) {
            rf.store(true, Ordering::SeqCst);
        } else {
            ev.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The bpftrace peer: the same five steps from tracepoints, printed.
fn bpftrace_script(cg: &Path) -> String {
    let cg = cg.display();
    format!(
        r#"tracepoint:sock:inet_sock_set_state /args->protocol == 6 && (args->newstate == 2 || args->newstate == 10)/ {{
  if (cgroup == cgroupid("{cg}")) {{
    printf("%s %d %s %s %d %s %d\n", args->newstate == 2 ? "connect" : "listen", pid, comm, ntop(args->saddr), args->sport, ntop(args->daddr), args->dport);
  }}
}}
tracepoint:sock:inet_sock_set_state /args->protocol == 6 && args->newstate == 7 && args->oldstate != 2/ {{
  printf("close %d %s %s %d %s %d\n", pid, comm, ntop(args->saddr), args->sport, ntop(args->daddr), args->dport);
}}
tracepoint:syscalls:sys_exit_bind, tracepoint:syscalls:sys_exit_accept, tracepoint:syscalls:sys_exit_accept4 /cgroup == cgroupid("{cg}") && args->ret >= 0/ {{
  printf("%s %d %s %d\n", probe, pid, comm, args->ret);
}}
"#
    )
}

/// A generated policy of `n` rules that never match the load: deny connect
/// to 10.x.y.0/24 networks, and deny any operation by executables that do
/// not exist (bind, listen, connect: `exe` cannot be matched on accept);
/// default allow.
fn policy(n: usize) -> String {
    let mut s = String::from("default = \"allow\"\n");
    for i in 0..n {
        if i % 2 == 0 {
            let _ = write!(
                s,
                "\n[[rule]]\nname = \"r{i}\"\naction = \"deny\"\non = [\"connect\"]\nremote_ip = [\"10.{}.{}.0/24\"]\n",
                (i >> 8) & 255,
                i & 255
            );
        } else {
            let _ = write!(
                s,
                "\n[[rule]]\nname = \"r{i}\"\naction = \"deny\"\non = [\"bind\", \"listen\", \"connect\"]\nexe = [\"/nonexistent/sockfilter-bench/{i}\"]\n"
            );
        }
    }
    s
}

/// An agent under measurement: a process, or the library in this process.
pub(crate) enum Running {
    /// The process, and whether its stdout is counted.
    Proc(Agent, bool),
    Lib(Consumer),
}

impl Running {
    /// CPU seconds of the agent so far (the consumer thread for the library).
    pub(crate) fn cpu(&self) -> f64 {
        match self {
            Running::Proc(a, _) => cpu_seconds(a.pid()),
            Running::Lib(c) => c.cpu(),
        }
    }

    /// (events, lost) received so far, when they are counted live.
    pub(crate) fn counts(&self) -> Option<(u64, u64)> {
        match self {
            Running::Proc(a, true) => Some((
                a.events.load(Ordering::Relaxed),
                a.lost.load(Ordering::Relaxed),
            )),
            Running::Proc(_, false) => None,
            Running::Lib(c) => Some((c.events(), c.lost())),
        }
    }

    /// What it has written to stderr so far (a process agent).
    pub(crate) fn stderr(&self) -> Option<String> {
        match self {
            Running::Proc(a, _) => Some(a.stderr.lock().unwrap().clone()),
            Running::Lib(_) => None,
        }
    }

    /// Stops it; (events, lost) of the whole run from sockfilter's exit
    /// summary when its output was not counted.
    pub(crate) fn stop(self) -> Option<(u64, u64)> {
        match self {
            Running::Proc(a, counted) => {
                let err = a.stop();
                let summary = err.lines().find(|l| l.contains("stopped"));
                if let Some(line) = summary {
                    note(line);
                }
                if counted {
                    return Some((0, 0));
                }
                summary.and_then(parse_summary)
            }
            Running::Lib(c) => {
                let n = (c.events(), c.lost());
                c.stop();
                Some(n)
            }
        }
    }
}

/// "...; events: bind 1, listen 1, connect 5, accept 5, close 11; dropped
/// by the kernel: 0" -> (23, 0).
fn parse_summary(line: &str) -> Option<(u64, u64)> {
    let ev = line.split("events: ").nth(1)?.split(';').next()?;
    let events = ev
        .split(',')
        .map(|kv| {
            kv.split_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum::<Option<u64>>()?;
    let lost = line
        .split("dropped by the kernel: ")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((events, lost))
}

impl Bench {
    /// The command of an agent, the line that says it is ready, and whether
    /// its stdout is read through a pipe and counted (else: /dev/null).
    pub(crate) fn agent_argv(
        &self,
        agent: &str,
    ) -> anyhow::Result<Option<(Vec<String>, &'static str, bool)>> {
        let sf = self.sockfilter.display().to_string();
        let cg = self.cg.display().to_string();
        Ok(match agent {
            "watch" | "watch-pipe" => Some((
                vec![sf, "watch".into(), "--json".into(), "--cgroup".into(), cg],
                "sockfilter: watching",
                agent == "watch-pipe",
            )),
            "watch-before" => self.args.before.as_ref().map(|b| {
                (
                    vec![
                        b.display().to_string(),
                        "watch".into(),
                        "--json".into(),
                        "--cgroup".into(),
                        cg,
                    ],
                    "sockfilter: watching",
                    false,
                )
            }),
            a if a.starts_with("enforce-") => {
                if !self.enforce {
                    return Ok(None);
                }
                let n: usize = a["enforce-".len()..].parse()?;
                let p = self.tmp.join(format!("policy-{n}.toml"));
                std::fs::write(&p, policy(n))?;
                Some((
                    vec![
                        sf,
                        "enforce".into(),
                        p.display().to_string(),
                        "--json".into(),
                        "--cgroup".into(),
                        cg,
                    ],
                    "enforcing",
                    false,
                ))
            }
            "bpftrace" | "bpftrace-pipe" => {
                let Some(bt) = &self.bpftrace else {
                    return Ok(None);
                };
                let p = self.tmp.join("peer.bt");
                let flag = self.tmp.join("bpftrace-ready");
                let _ = std::fs::remove_file(&flag);
                let mut script = bpftrace_script(&self.cg);
                let mut argv = vec![bt.display().to_string()];
                let ready = if agent == "bpftrace" {
                    // Its output (also "Attaching N probes...") goes to
                    // /dev/null: BEGIN, which runs once every probe is
                    // attached, leaves a file instead.
                    script.push_str(&format!(
                        "BEGIN {{ system(\"touch {}\"); }}\n",
                        flag.display()
                    ));
                    argv.extend(["--unsafe".into(), "-o".into(), "/dev/null".into()]);
                    FLAG_READY
                } else {
                    "Attaching"
                };
                std::fs::write(&p, script)?;
                argv.push(p.display().to_string());
                Some((argv, ready, agent == "bpftrace-pipe"))
            }
            other => bail!("unknown agent {other:?}"),
        })
    }

    pub(crate) fn start_running(&self, agent: &str) -> anyhow::Result<Option<Running>> {
        if agent == "library" {
            return Ok(Some(Running::Lib(Consumer::start(&self.cg, false)?)));
        }
        Ok(match self.agent_argv(agent)? {
            None => None,
            Some((argv, ready, count)) => {
                Some(Running::Proc(Agent::start(&argv, ready, count)?, count))
            }
        })
    }
}
