//! Names for `remote_host` rules under `sockfilter supervise`: the supervised
//! program runs in a child cgroup of supervise's own, and the kernel's DNS
//! learner (`sf_dns_ingress`, via [`Watcher`]) limited to that cgroup reads
//! the DNS answers it receives. See `docs/supervise.md`.

use anyhow::Context;
use sockfilter::supervise::Request;
use sockfilter::watch::{WatchOptions, Watcher};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How often the ring is read between connects: the program's other socket
/// events go to the same ring, and a full ring would drop DNS answers.
const DRAIN_EVERY: Duration = Duration::from_millis(50);

/// The DNS learner of one supervise run; removes its cgroup when dropped.
pub struct NameLearner {
    /// Kept for the watcher's ring buffer (registered with this runtime).
    _runtime: tokio::runtime::Runtime,
    watcher: Arc<Mutex<Watcher>>,
    cgroup: PathBuf,
}

impl NameLearner {
    /// Creates the child cgroup and starts the learner on it; needs root.
    pub fn start() -> anyhow::Result<NameLearner> {
        let root = sockfilter::cgroup::cgroup2_mount().context("no cgroup2 mount found")?;
        let own = sockfilter::cgroup::cgroup_of_pid(std::process::id())
            .context("cannot read this process's cgroup")?;
        let cgroup = root
            .join(own.trim_start_matches('/'))
            .join(format!("sockfilter-supervise-{}", std::process::id()));
        std::fs::create_dir(&cgroup)
            .with_context(|| format!("cannot create cgroup {}", cgroup.display()))?;
        let runtime = crate::watch::runtime()?;
        let watcher = runtime.block_on(async {
            Watcher::start(WatchOptions {
                cgroup: Some(cgroup.clone()),
                existing: false,
            })
        });
        let watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_dir(&cgroup);
                return Err(e).context("loading the DNS learner (BPF)");
            }
        };
        let watcher = Arc::new(Mutex::new(watcher));
        let weak = Arc::downgrade(&watcher);
        // Ends once the learner is dropped.
        std::thread::spawn(move || {
            while let Some(w) = weak.upgrade() {
                drop(w.lock().unwrap_or_else(|e| e.into_inner()).take_remaining());
                drop(w);
                std::thread::sleep(DRAIN_EVERY);
            }
        });
        Ok(NameLearner {
            _runtime: runtime,
            watcher,
            cgroup,
        })
    }

    /// Makes `cmd` start in the learner's cgroup (before it runs anything,
    /// so that every DNS answer of the program and its children is seen).
    pub fn enter(&self, cmd: &mut Command) {
        let procs = self.cgroup.join("cgroup.procs");
        // SAFETY: only open/write/close between fork and exec.
        unsafe {
            cmd.pre_exec(move || std::fs::write(&procs, b"0"));
        }
    }

    /// The name the caller resolved the remote address of `req` from.
    /// Drains the ring first: the kernel submits an answer's record before
    /// it queues the answer to the socket, so every answer the program
    /// could have read by now is in the table.
    pub fn name_of(&self, req: &Request) -> Option<String> {
        let remote = req.remote?;
        let netns = std::fs::metadata(format!("/proc/{}/ns/net", req.tid))
            .ok()
            .map(|m| m.ino());
        let mut w = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        // The events themselves are not needed: supervise reports its own.
        drop(w.take_remaining());
        w.host_names()
            .lookup(netns, remote.ip, Some(req.pid), SystemTime::now())
            .map(str::to_owned)
    }
}

impl Drop for NameLearner {
    fn drop(&mut self) {
        let w = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        let (lost, evicted) = (w.dns_lost_total(), w.host_names().evicted());
        drop(w);
        if lost > 0 || evicted > 0 {
            eprintln!(
                "sockfilter: DNS names: {lost} answers lost (the ring buffer was full), {evicted} (address, name) pairs dropped before their TTL ran out: connects to those addresses matched no remote_host rule"
            );
        }
        // Empty once the supervised tree has exited; a leftover process
        // keeps it (and rmdir fails harmlessly).
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}
