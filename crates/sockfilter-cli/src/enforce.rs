//! `sockfilter enforce POLICY`: the policy compiled into BPF maps and
//! enforced by the kernel, events streamed like `watch`, reloaded without a
//! gap on SIGHUP or when the file changes.

use crate::watch::{event_loop, runtime, Extra, Output};
use sockfilter::enforce::compile::{compile, Compiled};
use sockfilter::enforce::Enforcer;
use sockfilter::watch::Watcher;
use sockfilter_model::event::{Event, EventKind, Verdict};
use sockfilter_model::policy::Policy;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
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

/// Reads, checks and compiles the policy. Errors are the lines `check`
/// prints.
fn prepare(path: &Path) -> Result<(Policy, Compiled), Vec<String>> {
    let policy = crate::check::load(path, false)?;
    let root = sockfilter::cgroup::cgroup2_mount()
        .ok_or_else(|| vec!["no cgroup v2 hierarchy is mounted".to_string()])?;
    let cgroup_id = |p: &str| {
        std::fs::metadata(root.join(p.trim_start_matches('/')))
            .ok()
            .filter(|m| m.is_dir())
            .map(|m| m.ino())
    };
    let compiled = compile(&policy, cgroup_id, &root.display().to_string()).map_err(|e| {
        let line = match &e {
            sockfilter::enforce::compile::CompileError::NoCgroup { line, .. } => *line,
            _ => 1,
        };
        vec![format!("{}:{line}:1: {e}", path.display())]
    })?;
    Ok((policy, compiled))
}

/// (device, inode, mtime, size): changes when the file is edited in place
/// or replaced by a rename.
fn fingerprint(path: &Path) -> Option<(u64, u64, i64, i64, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
}

/// Tells systemd (or anything listening on $NOTIFY_SOCKET) that enforcement
/// is in place.
fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(b"READY=1", &a))
    } else {
        sock.send_to(b"READY=1", Path::new(&path))
    };
    if let Err(e) = result {
        eprintln!("sockfilter: could not notify $NOTIFY_SOCKET: {e}");
    }
}

struct Enforcing {
    path: PathBuf,
    enforcer: Enforcer,
    fingerprint: Option<(u64, u64, i64, i64, u64)>,
    namespaces: HashSet<u64>,
    last_scan: Instant,
    stats_every: Option<Duration>,
    last_stats: Instant,
}

impl Enforcing {
    /// Attaches socket lookup to every network namespace that does not have
    /// it yet. Also with --cgroup: there the program refuses only
    /// connections for denied listeners and for listeners of the cgroup, so
    /// attaching it everywhere means a process of the cgroup that moves to
    /// another namespace is covered from its first listen.
    fn scan_namespaces(&mut self, w: &mut Watcher) {
        self.last_scan = Instant::now();
        for pid in sockfilter::procfs::pids() {
            let Some(ino) = sockfilter::procfs::netns_inode(pid) else {
                continue;
            };
            if self.namespaces.contains(&ino) {
                continue;
            }
            if let Ok(f) = std::fs::File::open(format!("/proc/{pid}/ns/net")) {
                match w.probe_mut().attach_sk_lookup(&f) {
                    Ok(()) => {
                        self.namespaces.insert(ino);
                    }
                    Err(e) => eprintln!("sockfilter: network namespace {ino}: {e}"),
                }
            }
        }
    }

    fn reload(&mut self, w: &mut Watcher, why: &str) {
        self.fingerprint = fingerprint(&self.path);
        match prepare(&self.path) {
            Ok((policy, compiled)) => {
                match self
                    .enforcer
                    .install(w.probe_mut().bpf_mut(), &policy, &compiled)
                {
                    Ok(()) => eprintln!(
                        "sockfilter: enforcing {} rules from {} ({why})",
                        policy.rules.len(),
                        self.path.display()
                    ),
                    Err(e) => eprintln!(
                        "sockfilter: reload rejected, the previous policy stays in force: {e}"
                    ),
                }
            }
            Err(lines) => {
                eprintln!("sockfilter: reload rejected, the previous policy stays in force:");
                for l in lines {
                    eprintln!("{l}");
                }
            }
        }
    }

    /// One line per rule that matched, then the default; rules that never
    /// matched are counted, not listed (a policy may have thousands).
    fn stats_lines(&self, w: &Watcher) -> Vec<String> {
        let hits = self.enforcer.hits(w.probe().bpf());
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
        lines
    }
}

impl Extra for Enforcing {
    fn on_event(&mut self, w: &mut Watcher, e: &Event) {
        if let Some(ns) = e.netns {
            if !self.namespaces.contains(&ns) {
                self.scan_namespaces(w);
            }
        }
        if e.kind == EventKind::Listen && e.verdict == Verdict::Deny && !e.existing {
            // Connections to it are already refused in socket lookup; close
            // it so that its owner's accept() fails and the port is freed.
            if let Err(err) = sockfilter::diag::destroy(&e.into()) {
                eprintln!(
                    "sockfilter: could not close denied listener {} (socket {}): {err}",
                    e.local, e.socket
                );
            }
        }
    }

    fn on_tick(&mut self, w: &mut Watcher) {
        if fingerprint(&self.path) != self.fingerprint && fingerprint(&self.path).is_some() {
            self.reload(w, "file changed");
        }
        if self.last_scan.elapsed() >= Duration::from_secs(1) {
            self.scan_namespaces(w);
        }
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
        self.reload(w, "SIGHUP");
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
            path: args.policy.clone(),
            enforcer: Enforcer::new(),
            fingerprint: fingerprint(&args.policy),
            namespaces: HashSet::new(),
            last_scan: Instant::now(),
            stats_every: args.stats.map(|s| Duration::from_secs(s.max(1))),
            last_stats: Instant::now(),
        };
        state.scan_namespaces(&mut watcher);
        watcher.set_rule_names(state.enforcer.rule_names());
        let t = Instant::now();
        state
            .enforcer
            .install(watcher.probe_mut().bpf_mut(), &policy, &compiled)?;
        let message = format!(
            "sockfilter: enforcing {} rules from {} for {} (policy read and compiled in {} ms, written to the kernel in {} ms); Ctrl-C to stop",
            policy.rules.len(),
            args.policy.display(),
            args.output.scope(&watcher),
            parsed.as_millis(),
            t.elapsed().as_millis()
        );
        let destroy = sockfilter::destroy::destroy_method();
        event_loop(watcher, &args.output, &mut state, || {
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
