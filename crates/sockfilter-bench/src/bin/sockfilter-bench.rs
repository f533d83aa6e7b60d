//! `sockfilter-bench`: what sockfilter costs a busy host, measured side by
//! side with the alternatives, in one run. Needs root. Everything runs in a
//! cgroup it creates (and removes), and sockfilter attaches to that cgroup
//! only (`--cgroup`), so it coexists with other sockfilters on the host.
//!
//! Sections: `throughput` (baseline vs watch / enforce / bpftrace,
//! alternating pairs), `latency` (library consumer, stamped operations),
//! `ramp` (highest event rate without loss), `memory` (RSS of watch with
//! many live connections and after many short ones).

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::{json, Value};
use sockfilter::watch::{Item, WatchOptions, Watcher};
use sockfilter_bench::realtime_ns;
use sockfilter_bench::stats::{quantile, Spread};
use sockfilter_model::event::EventKind;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

/// Measures sockfilter against a baseline and bpftrace (root only).
#[derive(Parser)]
#[command(name = "sockfilter-bench")]
struct Args {
    /// Baseline/agent pairs per throughput measurement (at least 5 for the document).
    #[arg(long, default_value_t = 5)]
    pairs: usize,
    /// Seconds per load run in the throughput section.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Client threads of the connect and listen storms.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Sections to run (comma-separated): throughput,latency,ramp,memory.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "throughput,latency,ramp,memory"
    )]
    sections: Vec<String>,
    /// Load modes of the throughput section.
    #[arg(long, value_delimiter = ',', default_value = "connect,listen,bulk")]
    modes: Vec<String>,
    /// Agents of the throughput section.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "watch,watch-pipe,library,enforce-10,enforce-1000,enforce-10000,bpftrace,bpftrace-pipe"
    )]
    agents: Vec<String>,
    /// Short connections for the memory section's history test.
    #[arg(long, default_value_t = 1_000_000)]
    million: u64,
    /// Live connections for the memory section.
    #[arg(long, default_value_t = 10_000)]
    live: usize,
    /// The sockfilter binary (default: next to this one).
    #[arg(long)]
    sockfilter: Option<PathBuf>,
    /// The load generator (default: next to this one).
    #[arg(long)]
    loadgen: Option<PathBuf>,
    /// Another sockfilter binary (e.g. a build of an earlier commit),
    /// measured as agent `watch-before`: the same command as `watch`, so
    /// that a change's before and after are measured in one run.
    #[arg(long)]
    before: Option<PathBuf>,
    /// Write the Markdown report here too.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The report, printed as it grows and written out at the end.
struct Report {
    md: String,
    out: Option<PathBuf>,
}

impl Report {
    fn line(&mut self, s: impl AsRef<str>) {
        println!("{}", s.as_ref());
        let _ = std::io::stdout().flush();
        self.md.push_str(s.as_ref());
        self.md.push('\n');
        if let Some(p) = &self.out {
            let _ = std::fs::write(p, &self.md);
        }
    }
}

fn note(s: impl AsRef<str>) {
    eprintln!("[bench] {}", s.as_ref());
}

struct Bench {
    args: Args,
    cg: PathBuf,
    sockfilter: PathBuf,
    loadgen: PathBuf,
    enforce: bool,
    bpftrace: Option<PathBuf>,
    tmp: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !nix_is_root() {
        bail!("sockfilter-bench needs root (it attaches BPF programs and creates a cgroup)");
    }
    let me = std::env::current_exe()?;
    let dir = me.parent().context("binary directory")?.to_path_buf();
    let sockfilter = args
        .sockfilter
        .clone()
        .unwrap_or_else(|| dir.join("sockfilter"));
    let loadgen = args
        .loadgen
        .clone()
        .unwrap_or_else(|| dir.join("sockfilter-loadgen"));
    for b in [&sockfilter, &loadgen] {
        if !b.is_file() {
            bail!(
                "{} not found; build it first: cargo build --release -p sockfilter-cli -p sockfilter-bench",
                b.display()
            );
        }
    }
    let root = sockfilter::cgroup::cgroup2_mount().context("no cgroup v2 mount")?;
    let cg = root.join(format!("sockfilter-bench-{}", std::process::id()));
    std::fs::create_dir_all(&cg).with_context(|| format!("creating {}", cg.display()))?;
    let tmp = std::env::temp_dir().join(format!("sockfilter-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let enforce = Command::new(&sockfilter)
        .args(["enforce", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let bpftrace = which("bpftrace");
    let out = args.out.clone();
    let mut b = Bench {
        args,
        cg: cg.clone(),
        sockfilter,
        loadgen,
        enforce,
        bpftrace,
        tmp: tmp.clone(),
    };
    let mut r = Report {
        md: String::new(),
        out,
    };
    let result = b.run(&mut r);
    // Leave nothing behind: the cgroup (empty once our children are gone).
    for _ in 0..50 {
        if std::fs::remove_dir(&cg).is_ok() || !cg.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// utime + stime of a process, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    cpu_seconds_path(&format!("/proc/{pid}/stat"))
}

/// utime + stime from a `stat` file of /proc, seconds.
fn cpu_seconds_path(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return f64::NAN;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

/// A field of /proc/PID/status in kB (VmRSS, VmHWM).
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn mb(kb: Option<u64>) -> String {
    kb.map(|k| format!("{:.1}", k as f64 / 1024.0))
        .unwrap_or_else(|| "?".into())
}

/// Ready pattern meaning: wait for the file `bpftrace-ready` beside the
/// script (the last argument).
const FLAG_READY: &str = "<bpftrace-ready file>";

/// A process under measurement (sockfilter or bpftrace), its output read by
/// threads: stdout lines counted as events, "lost" reports summed.
struct Agent {
    child: Child,
    events: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Agent {
    /// Starts `argv` and waits until `ready` appears on its stdout or stderr.
    /// `count` = stdout is read and counted; otherwise it goes to /dev/null.
    fn start(argv: &[String], ready: &str, count: bool) -> anyhow::Result<Agent> {
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

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, wait (SIGKILL after 15 s); returns stderr.
    fn stop(mut self) -> String {
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
fn parse_policy_times(stderr: &str) -> Option<(f64, f64)> {
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

/// CPU time (user + system, seconds) of the children waited for so far.
fn children_cpu() -> f64 {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
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

/// An agent under measurement: a process, or the library in this process.
enum Running {
    /// The process, and whether its stdout is counted.
    Proc(Agent, bool),
    Lib(Consumer),
}

impl Running {
    /// CPU seconds of the agent so far (the consumer thread for the library).
    fn cpu(&self) -> f64 {
        match self {
            Running::Proc(a, _) => cpu_seconds(a.pid()),
            Running::Lib(c) => c.cpu(),
        }
    }

    /// (events, lost) received so far, when they are counted live.
    fn counts(&self) -> Option<(u64, u64)> {
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
    fn stderr(&self) -> Option<String> {
        match self {
            Running::Proc(a, _) => Some(a.stderr.lock().unwrap().clone()),
            Running::Lib(_) => None,
        }
    }

    /// Stops it; (events, lost) of the whole run from sockfilter's exit
    /// summary when its output was not counted.
    fn stop(self) -> Option<(u64, u64)> {
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
    fn loadgen_cmd(&self, args: &[String]) -> Command {
        let mut c = Command::new(&self.loadgen);
        c.arg("--cgroup").arg(&self.cg).args(args);
        c
    }

    /// Runs the load generator in the cgroup; its JSON line, with its CPU
    /// time (user + system, from the children's rusage) added as
    /// `loadgen_cpu` (seconds).
    fn load(&self, args: &[String]) -> anyhow::Result<Value> {
        let cpu0 = children_cpu();
        let out = self
            .loadgen_cmd(args)
            .stderr(Stdio::inherit())
            .output()
            .context("running sockfilter-loadgen")?;
        let loadgen_cpu = children_cpu() - cpu0;
        if !out.status.success() {
            bail!("sockfilter-loadgen {:?} failed: {}", args, out.status);
        }
        let s = String::from_utf8_lossy(&out.stdout);
        let last = s
            .lines()
            .last()
            .context("no output from sockfilter-loadgen")?;
        let mut v: Value = serde_json::from_str(last)?;
        v["loadgen_cpu"] = loadgen_cpu.into();
        Ok(v)
    }

    fn mode_args(&self, mode: &str) -> Vec<String> {
        vec![
            "--mode".into(),
            mode.into(),
            "--threads".into(),
            self.args.threads.to_string(),
            "--seconds".into(),
            self.args.seconds.to_string(),
        ]
    }

    fn run(&mut self, r: &mut Report) -> anyhow::Result<()> {
        let uname = Command::new("uname")
            .arg("-r")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        // SAFETY: sysconf has no preconditions.
        let ncpu = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        r.line(format!(
            "Machine: {ncpu} CPUs, {}, Linux {uname}; load average at start {}; {}",
            cpu_model(),
            loadavg(),
            chrono_now()
        ));
        r.line(format!(
            "Cgroup: {} (sockfilter attached there with --cgroup; the load runs in it)",
            self.cg.display()
        ));
        r.line("");
        let sections = self.args.sections.clone();
        for s in &sections {
            let started = Instant::now();
            match s.as_str() {
                "throughput" => self.throughput(r)?,
                "latency" => self.latency(r)?,
                "ramp" => self.ramp(r)?,
                "memory" => self.memory(r)?,
                other => bail!("unknown section {other:?}"),
            }
            note(format!(
                "section {s} took {:.0} s",
                started.elapsed().as_secs_f64()
            ));
        }
        r.line(format!("Load average at end: {}", loadavg()));
        Ok(())
    }

    /// The command of an agent, the line that says it is ready, and whether
    /// its stdout is read through a pipe and counted (else: /dev/null).
    fn agent_argv(&self, agent: &str) -> anyhow::Result<Option<(Vec<String>, &'static str, bool)>> {
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

    fn start_running(&self, agent: &str) -> anyhow::Result<Option<Running>> {
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

    fn throughput(&mut self, r: &mut Report) -> anyhow::Result<()> {
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

    fn latency(&mut self, r: &mut Report) -> anyhow::Result<()> {
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

    fn ramp(&mut self, r: &mut Report) -> anyhow::Result<()> {
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

    fn memory(&mut self, r: &mut Report) -> anyhow::Result<()> {
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

fn rate_fmt(mode: &str, v: f64) -> String {
    match mode {
        "bulk" => format!("{:.2} GB/s", v / 1e9),
        _ => format!("{v:.0}/s"),
    }
}

fn us(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

fn chrono_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    sockfilter_model::event::rfc3339(UNIX_EPOCH + Duration::from_secs(secs))
}

/// One listen/connect event as the consumer saw it.
struct Arrival {
    kind: EventKind,
    cookie: u64,
    arrival_ns: u64,
    event_ns: u64,
}

struct Shared {
    tid: AtomicU64,
    events: AtomicU64,
    lost: AtomicU64,
    arrivals: Mutex<Vec<Arrival>>,
    stop: tokio::sync::Notify,
}

/// The in-process consumer: a Watcher on its own thread and runtime.
struct Consumer {
    shared: Arc<Shared>,
    handle: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Consumer {
    fn start(cg: &Path, record: bool) -> anyhow::Result<Consumer> {
        let shared = Arc::new(Shared {
            tid: AtomicU64::new(0),
            events: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            arrivals: Mutex::new(Vec::new()),
            stop: tokio::sync::Notify::new(),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let sh = shared.clone();
        let cg = cg.to_path_buf();
        let handle = std::thread::spawn(move || -> anyhow::Result<()> {
            // SAFETY: gettid has no preconditions.
            sh.tid
                .store(unsafe { libc::gettid() } as u64, Ordering::Relaxed);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let mut w = match Watcher::start(WatchOptions {
                    cgroup: Some(cg),
                    existing: false,
                }) {
                    Ok(w) => w,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return Ok(());
                    }
                };
                let _ = tx.send(Ok(()));
                loop {
                    let item = tokio::select! {
                        biased;
                        _ = sh.stop.notified() => break,
                        item = w.next() => item,
                    };
                    match item {
                        None => break,
                        Some(Item::Lost(n)) => {
                            sh.lost.fetch_add(n, Ordering::Relaxed);
                        }
                        Some(Item::Event(e)) => {
                            sh.events.fetch_add(1, Ordering::Relaxed);
                            if record && matches!(e.kind, EventKind::Listen | EventKind::Connect) {
                                let arrival_ns = realtime_ns();
                                let event_ns = e
                                    .time
                                    .duration_since(UNIX_EPOCH)
                                    .map(|d| d.as_nanos() as u64)
                                    .unwrap_or(0);
                                sh.arrivals.lock().unwrap().push(Arrival {
                                    kind: e.kind,
                                    cookie: e.socket,
                                    arrival_ns,
                                    event_ns,
                                });
                            }
                        }
                    }
                }
                Ok(())
            })
        });
        match rx.recv() {
            Ok(Ok(())) => Ok(Consumer { shared, handle }),
            Ok(Err(e)) => bail!("Watcher::start: {e}"),
            Err(_) => bail!("consumer thread ended: {:?}", handle.join()),
        }
    }

    /// CPU seconds of the consumer thread.
    fn cpu(&self) -> f64 {
        let tid = self.shared.tid.load(Ordering::Relaxed);
        cpu_seconds_path(&format!("/proc/self/task/{tid}/stat"))
    }

    fn events(&self) -> u64 {
        self.shared.events.load(Ordering::Relaxed)
    }

    fn lost(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }

    fn take_arrivals(&self) -> Vec<Arrival> {
        std::mem::take(&mut *self.shared.arrivals.lock().unwrap())
    }

    fn stop(self) {
        self.shared.stop.notify_one();
        let _ = self.handle.join();
    }
}
