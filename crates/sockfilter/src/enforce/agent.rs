//! A policy file in force on a running [`Watcher`]: read, checked,
//! compiled and installed; re-installed without a gap when the file changes
//! or on request (an invalid new file keeps the previous policy); socket
//! lookup attached to every network namespace as it appears; denied
//! listeners closed. Shared by `sockfilter enforce` and `sockfilter daemon`.

use super::compile::{compile, unenforceable, workload_roots, CompileError, Compiled};
use super::Enforcer;
use crate::cgroup_changes::CgroupChanges;
use crate::netns_tag::NetnsAttachment;
use crate::watch::Watcher;
use sockfilter_model::event::{Event, EventKind, Verdict};
use sockfilter_model::policy::Policy;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reads a policy and checks that the kernel hooks can enforce every rule
/// as written. Errors are `FILE:LINE:COLUMN: message` lines.
pub fn load_enforceable(path: &Path) -> Result<Policy, Vec<String>> {
    let policy = Policy::load(path).map_err(|e| vec![e.to_string()])?;
    let problems = unenforceable(&policy);
    if problems.is_empty() {
        return Ok(policy);
    }
    Err(problems
        .into_iter()
        .map(|(i, msg)| format!("{}:{}:1: {msg}", path.display(), policy.rules[i].line))
        .collect())
}

/// Reads, checks and compiles the policy. Errors are the lines `sockfilter
/// check` prints.
pub fn prepare(path: &Path) -> Result<(Policy, Compiled), Vec<String>> {
    let policy = load_enforceable(path)?;
    let root = crate::cgroup::cgroup2_mount()
        .ok_or_else(|| vec!["no cgroup v2 hierarchy is mounted".to_string()])?;
    let compiled = compile_now(&policy, &root).map_err(|e| {
        let line = match &e {
            CompileError::NoCgroup { line, .. } | CompileError::AmbiguousContainer { line, .. } => {
                *line
            }
            _ => 1,
        };
        vec![format!("{}:{line}:1: {e}", path.display())]
    })?;
    Ok((policy, compiled))
}

/// Compiles `policy` against the cgroup hierarchy as it is now.
fn compile_now(policy: &Policy, root: &Path) -> Result<Compiled, CompileError> {
    let cgroup_id = |p: &str| cgroup_id(root, p);
    let tree = if policy.rules.iter().any(|r| r.constrains_workload()) {
        crate::cgroup::hierarchy(root)
    } else {
        Vec::new()
    };
    compile(policy, cgroup_id, &tree, &root.display().to_string())
}

/// (device, inode, mtime, size): changes when the file is edited in place
/// or replaced by a rename.
type Fingerprint = (u64, u64, i64, i64, u64);

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
}

/// How long a namespace found covered is taken to be so without asking
/// the kernel again.
const LIVENESS_FRESH: Duration = Duration::from_millis(1);

/// A policy file read and compiled, not yet in force: a reload that
/// changes more than the policy checks everything before it changes
/// anything.
pub struct PreparedPolicy {
    path: PathBuf,
    /// The file as it was before it was read (a change while it was read
    /// is then seen, and read again, at the next tick).
    fingerprint: Option<Fingerprint>,
    policy: Policy,
    compiled: Compiled,
}

impl PreparedPolicy {
    /// Reads and compiles the policy at `path`; the error lines name the
    /// file, line and column of each problem.
    pub fn read(path: &Path) -> Result<PreparedPolicy, Vec<String>> {
        let fingerprint = fingerprint(path);
        let (policy, compiled) = prepare(path)?;
        Ok(PreparedPolicy {
            path: path.to_owned(),
            fingerprint,
            policy,
            compiled,
        })
    }
}

/// A policy file in force.
pub struct PolicyAgent {
    path: PathBuf,
    enforcer: Enforcer,
    fingerprint: Option<Fingerprint>,
    /// Network namespaces socket lookup is attached to, by inode; an entry
    /// is dropped when its namespace dies, so that a namespace that gets a
    /// dead one's inode number is attached too.
    namespaces: HashMap<u64, NetnsAttachment>,
    last_scan: Instant,
    /// The namespace last found covered, and when: asking the kernel
    /// (one bpf(2) call) for every event cost ~1 µs per event; a
    /// namespace that reuses a dead one's inode is still found at its first
    /// event after [`LIVENESS_FRESH`].
    last_live: Option<(u64, Instant)>,
    rules: usize,
    /// The policy in force, when it names things of the host that can be
    /// replaced under it (`exe` files, `cgroup`s, units, containers): it is
    /// compiled again whenever what they resolve to changes.
    followed: Option<Arc<Followed>>,
    /// What those names resolved to when the policy was compiled.
    resolved: HostNames,
    /// Cgroups created or removed (watched only while the policy in force
    /// names units or containers, which depend on the whole hierarchy).
    cgroup_changes: Option<CgroupChanges>,
}

/// A policy that names things of the host, and those names, collected once
/// per install: they are looked up every tick (a policy of 10,000 rules
/// cloned and its names sorted every 200 ms cost an idle enforcer 3% of a
/// CPU).
struct Followed {
    policy: Policy,
    /// The `exe` paths, sorted, without duplicates.
    exe: Vec<String>,
    /// The directories of the `exe` paths, each with the indexes of its
    /// files in `exe`: a missing directory is one lookup for all of them.
    exe_dirs: Vec<(PathBuf, Vec<usize>)>,
    /// The `cgroup` paths, sorted, without duplicates.
    cgroup: Vec<String>,
    /// Whether a rule names a unit or container.
    workloads: bool,
}

impl Followed {
    fn of(policy: &Policy) -> Option<Followed> {
        let workloads = policy.rules.iter().any(|r| r.constrains_workload());
        let mut exe: Vec<String> = policy
            .rules
            .iter()
            .flat_map(|r| r.exe.iter().flatten().cloned())
            .collect();
        exe.sort();
        exe.dedup();
        let mut cgroup: Vec<String> = policy
            .rules
            .iter()
            .filter_map(|r| r.cgroup.clone())
            .collect();
        cgroup.sort();
        cgroup.dedup();
        let mut exe_dirs: BTreeMap<PathBuf, Vec<usize>> = BTreeMap::new();
        for (i, p) in exe.iter().enumerate() {
            let dir = Path::new(p).parent().unwrap_or(Path::new("/"));
            exe_dirs.entry(dir.to_owned()).or_default().push(i);
        }
        (workloads || !exe.is_empty() || !cgroup.is_empty()).then(|| Followed {
            policy: policy.clone(),
            exe,
            exe_dirs: exe_dirs.into_iter().collect(),
            cgroup,
            workloads,
        })
    }
}

/// What a policy's names resolve to on the host now: the file identity of
/// each `exe` path (a package upgrade replaces the file: a new inode), the
/// id of each `cgroup` path (a restarted unit gets a new cgroup), the
/// cgroups where the named units and containers start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct HostNames {
    /// In the order of [`Followed::exe`].
    exe: Vec<Option<(u32, u64)>>,
    /// In the order of [`Followed::cgroup`].
    cgroup: Vec<Option<u64>>,
    workloads: Vec<(String, u64)>,
}

impl HostNames {
    /// What the names resolve to now; the cgroups of units and containers
    /// are looked for only when `hierarchy_changed` (else `previous`'s).
    fn now(
        followed: &Followed,
        root: &Path,
        hierarchy_changed: bool,
        previous: &HostNames,
    ) -> HostNames {
        if hierarchy_changed {
            return HostNames::of(followed, root);
        }
        let mut names = HostNames::of_files(followed, root);
        names.workloads = previous.workloads.clone();
        names
    }

    fn of(followed: &Followed, root: &Path) -> HostNames {
        let mut names = HostNames::of_files(followed, root);
        names.workloads = if followed.workloads {
            workload_roots(&followed.policy, &crate::cgroup::hierarchy(root))
        } else {
            Vec::new()
        };
        names
    }

    /// The `exe` files and `cgroup` paths (not units and containers).
    fn of_files(followed: &Followed, root: &Path) -> HostNames {
        let mut exe = vec![None; followed.exe.len()];
        for (dir, files) in &followed.exe_dirs {
            if dir.exists() {
                for &i in files {
                    exe[i] = super::file_identity(&followed.exe[i]);
                }
            }
        }
        HostNames {
            exe,
            cgroup: followed.cgroup.iter().map(|p| cgroup_id(root, p)).collect(),
            workloads: Vec::new(),
        }
    }
}

/// The id of cgroup `path` (as in /proc/PID/cgroup) under the cgroup2 mount.
fn cgroup_id(root: &Path, path: &str) -> Option<u64> {
    std::fs::metadata(root.join(path.trim_start_matches('/')))
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| m.ino())
}

impl PolicyAgent {
    /// Prepares `w` (loaded with the enforcement hooks) for the policy at
    /// `path`: socket lookup in every network namespace, rule names for the
    /// events' verdicts. Nothing is enforced until [`PolicyAgent::install`].
    pub fn attach(w: &mut Watcher, path: &Path) -> PolicyAgent {
        // Adopted from a dead enforcer: its policy stays in force until
        // install() switches slots.
        let enforcer = if w.probe().is_adopted() {
            let e = Enforcer::adopt(w.probe().bpf()).unwrap_or_else(|e| {
                eprintln!("sockfilter: reading the adopted policy maps: {e}");
                Enforcer::new()
            });
            // The events the dead enforcer left are named with its rules.
            if let Some(slots) = w.probe().saved_rule_names() {
                e.restore_names(slots);
            }
            e
        } else {
            Enforcer::new()
        };
        let mut agent = PolicyAgent {
            path: path.to_owned(),
            enforcer,
            fingerprint: fingerprint(path),
            namespaces: w
                .probe_mut()
                .take_sk_lookup_namespaces()
                .into_iter()
                .map(|a| (a.ino, a))
                .collect(),
            last_scan: Instant::now(),
            last_live: None,
            rules: 0,
            followed: None,
            resolved: HostNames::default(),
            cgroup_changes: None,
        };
        agent.scan_namespaces(w);
        w.set_rule_names(agent.enforcer.rule_names());
        agent
    }

    /// Writes an already prepared policy to the kernel's maps, then judges
    /// the sockets that exist with it: those it denies are destroyed and
    /// queued on `w` as `existing` events with verdict `deny`
    /// ([`super::existing`]).
    pub fn install(
        &mut self,
        w: &mut Watcher,
        policy: &Policy,
        compiled: &Compiled,
    ) -> Result<(), super::EnforceError> {
        let names = learned_names(w);
        self.enforcer
            .install_with_names(w.probe_mut().bpf_mut(), policy, compiled, &names)?;
        self.rules = policy.rules.len();
        self.followed = Followed::of(policy).map(Arc::new);
        if let (Some(followed), Some(root)) = (&self.followed, crate::cgroup::cgroup2_mount()) {
            self.resolved = HostNames::of_files(followed, &root);
            self.resolved.workloads = compiled.workload_roots.clone();
        }
        // Namespaces made since the last scan get socket lookup first: the
        // existing listeners are registered under their namespace's cookie.
        self.scan_namespaces(w);
        let cookies: HashMap<u64, u64> = self
            .namespaces
            .iter()
            .map(|(&ino, a)| (ino, a.cookie))
            .collect();
        judge_existing(w, policy, &cookies);
        // Replacing another build's enforcement: this policy is in force
        // now, so the other build's programs can go and ours be pinned.
        let mut attachments: Vec<&mut NetnsAttachment> = self.namespaces.values_mut().collect();
        if let Err(e) = w.probe_mut().retire_replaced(&mut attachments) {
            eprintln!("sockfilter: {e}; enforcement holds while this process runs, but would not outlive it");
        }
        if let Err(e) = w.probe().save_rule_names(&self.enforcer.name_slots()) {
            eprintln!("sockfilter: keeping the rule names in bpffs: {e} (after a crash, the next enforce reports the events this one's policy decided with rule null)");
        }
        Ok(())
    }

    /// Compiles the policy in force again when what its names resolve to
    /// changed: an `exe` file replaced (a package upgrade), a `cgroup`
    /// removed and created again (a restarted unit), units and containers
    /// started or stopped. Until then the previous compilation decides.
    fn follow_host_names(&mut self, w: &mut Watcher) {
        let Some(followed) = self.followed.clone() else {
            return;
        };
        let Some(root) = crate::cgroup::cgroup2_mount() else {
            return;
        };
        let policy = &followed.policy;
        let hierarchy_changed = followed.workloads
            && match &mut self.cgroup_changes {
                Some(c) => c.changed(),
                None => {
                    // From now on only changes make the hierarchy be walked.
                    self.cgroup_changes = CgroupChanges::new(&root);
                    true
                }
            };
        let now = HostNames::now(&followed, &root, hierarchy_changed, &self.resolved);
        if now == self.resolved {
            return;
        }
        let result = compile_now(policy, &root)
            .map_err(|e| e.to_string())
            .and_then(|c| self.install(w, policy, &c).map_err(|e| e.to_string()));
        match result {
            Ok(()) => eprintln!(
                "sockfilter: files, cgroups, units or containers the policy names changed; policy compiled again"
            ),
            Err(e) => {
                // Keep the policy in force; say so once per change.
                self.resolved = now;
                eprintln!("sockfilter: files, cgroups, units or containers the policy names changed, but the policy could not be compiled again (the previous compilation stays in force): {e}");
            }
        }
    }

    /// The policy file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rules of the policy in force.
    pub fn rules(&self) -> usize {
        self.rules
    }

    /// Attaches socket lookup to every network namespace that does not have
    /// it yet. Also with a cgroup: there the program refuses only
    /// connections for denied listeners and for listeners of the cgroup, so
    /// attaching it everywhere means a process of the cgroup that moves to
    /// another namespace is covered from its first listen.
    fn scan_namespaces(&mut self, w: &mut Watcher) {
        self.last_scan = Instant::now();
        self.last_live = None;
        // First forget the namespaces that died: their inode numbers may
        // already name new ones.
        let dead: Vec<u64> = self
            .namespaces
            .iter()
            .filter(|(_, a)| !a.is_live())
            .map(|(&ino, _)| ino)
            .collect();
        for ino in dead {
            if let Some(a) = self.namespaces.remove(&ino) {
                w.probe().forget_sk_lookup(a);
            }
        }
        for pid in crate::procfs::pids() {
            let Some(ino) = crate::procfs::netns_inode(pid) else {
                continue;
            };
            if self.namespaces.contains_key(&ino) {
                continue;
            }
            if let Ok(f) = std::fs::File::open(format!("/proc/{pid}/ns/net")) {
                match w.probe_mut().attach_sk_lookup(&f) {
                    Ok(a) => {
                        self.namespaces.insert(ino, a);
                    }
                    Err(e) => eprintln!("sockfilter: network namespace {ino}: {e}"),
                }
            }
        }
    }

    /// Whether socket lookup is attached to the live namespace `ino` (not
    /// to a dead one that had the same inode number).
    fn covers(&mut self, ino: u64) -> bool {
        if let Some((last, at)) = self.last_live {
            if last == ino && at.elapsed() < LIVENESS_FRESH {
                return true;
            }
        }
        let live = self.namespaces.get(&ino).is_some_and(|a| a.is_live());
        self.last_live = live.then(|| (ino, Instant::now()));
        live
    }

    /// Re-reads the file and installs it; an invalid file keeps the policy
    /// in force. Says what happened on stderr; returns whether the new
    /// policy is in force.
    pub fn reload(&mut self, w: &mut Watcher, why: &str) -> bool {
        match PreparedPolicy::read(&self.path) {
            Ok(prepared) => self.install_prepared(w, prepared, why),
            Err(lines) => {
                self.fingerprint = fingerprint(&self.path);
                eprintln!("sockfilter: reload rejected, the previous policy stays in force:");
                for l in lines {
                    eprintln!("{l}");
                }
                false
            }
        }
    }

    /// Puts a policy read with [`PreparedPolicy::read`] in force; from then
    /// on its file is the one reloaded. On an error (reported) the policy
    /// and file in force stay.
    pub fn install_prepared(&mut self, w: &mut Watcher, p: PreparedPolicy, why: &str) -> bool {
        match self.install(w, &p.policy, &p.compiled) {
            Ok(()) => {
                self.path = p.path;
                self.fingerprint = p.fingerprint;
                eprintln!(
                    "sockfilter: enforcing {} rules from {} ({why})",
                    p.policy.rules.len(),
                    self.path.display()
                );
                true
            }
            Err(e) => {
                if p.path == self.path {
                    // Not tried again at every tick: at the next change.
                    self.fingerprint = p.fingerprint;
                }
                eprintln!("sockfilter: reload rejected, the previous policy stays in force: {e}");
                false
            }
        }
    }

    /// Per event: a new namespace gets socket lookup; a denied listener is
    /// closed.
    pub fn on_event(&mut self, w: &mut Watcher, e: &Event) {
        if let Some(ns) = e.netns {
            if !self.covers(ns) {
                self.scan_namespaces(w);
            }
        }
        if e.kind == EventKind::Listen
            && e.verdict == Verdict::Deny
            && !e.existing
            && e.details.enforced_by != Some("lsm")
        {
            // (Under BPF LSM the listen() failed: there is nothing to close.)
            // Connections to it are already refused in socket lookup; close
            // it so that its owner's accept() fails and the port is freed.
            if let Err(err) = crate::diag::destroy(&e.into()) {
                eprintln!(
                    "sockfilter: could not close denied listener {} (socket {}): {err}",
                    e.local, e.socket
                );
            }
        }
    }

    /// Periodically (about every 200 ms): reload when the file changed,
    /// follow the files, cgroups, units and containers the policy names,
    /// look for new namespaces every second.
    pub fn on_tick(&mut self, w: &mut Watcher) {
        let now = fingerprint(&self.path);
        if now.is_some() && now != self.fingerprint {
            self.reload(w, "file changed");
        }
        self.follow_host_names(w);
        if self.last_scan.elapsed() >= Duration::from_secs(1) {
            self.scan_namespaces(w);
        }
    }

    /// Matches per rule (None: the default), from the kernel's counters.
    pub fn hits(&self, w: &Watcher) -> Vec<(Option<String>, u64)> {
        self.enforcer.hits(w.probe().bpf())
    }
}

/// Judges every socket that exists now with `policy` (just put in force),
/// destroys those it denies and queues their events on `w`.
/// `cookies`: network namespace inode -> cookie.
fn judge_existing(w: &mut Watcher, policy: &Policy, cookies: &HashMap<u64, u64>) {
    let mut events = w.existing_now();
    super::existing::judge(policy, &mut events);
    // The allowed listeners' owners, for accept decisions in socket lookup.
    super::listeners::register_existing(w.probe_mut().bpf_mut(), &events, cookies);
    events.retain(|e| e.verdict == Verdict::Deny);
    for (e, err) in super::existing::destroy_denied(&events) {
        eprintln!(
            "sockfilter: could not close denied existing socket {} (socket {}): {err}",
            e.local, e.socket
        );
    }
    for e in events {
        w.queue_event(e);
    }
}

/// The names the watcher learned from DNS answers whose TTL has not run
/// out, for the kernel's `dns_addrs` (namespace inode or 0, address as
/// IPv6, name, end of TTL on the boot clock), oldest first.
fn learned_names(w: &Watcher) -> Vec<(u32, [u8; 16], String, u64)> {
    let now = std::time::SystemTime::now();
    let boot_now = crate::decode::boot_clock_ns();
    w.host_names()
        .live(now)
        .into_iter()
        .map(|(ns, ip, name, expires)| {
            let left = expires.duration_since(now).unwrap_or_default();
            let addr = match ip {
                std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                std::net::IpAddr::V6(v6) => v6.octets(),
            };
            (
                ns.unwrap_or(0) as u32,
                addr,
                name.to_owned(),
                boot_now.saturating_add(left.as_nanos() as u64),
            )
        })
        .collect()
}
