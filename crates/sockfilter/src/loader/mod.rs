//! Loading sockfilter's BPF object and attaching its programs.
//!
//! Everything attached here is owned by [`Probe`]: aya detaches every link
//! and unloads every program when it is dropped, so a normal exit, an error
//! or a signal handled by the caller leaves nothing behind.
//! Persistent enforcement is the exception: what it pins in bpffs outlives
//! the process until `sockfilter unload`.
//!
//! - `hooks`: which program is attached where, and how each kind of hook
//!   is attached;
//! - `persistent`: pinning, adopting a dead enforcer's pins, replacing
//!   another build's;
//! - `seed`: the executables of the processes that run before the start.

mod hooks;
mod persistent;
mod seed;

use hooks::{
    attach_first, attach_loaded, attach_one, ensure_tracefs, load_for_later, lsm_programs_load,
    Hook, HookKind, ARCH_HOOKS, HOOKS, URING_HOOKS,
};
use persistent::{open_pins, pin_all, pin_one};
use seed::seed_executables;

use crate::abi::{SfExe, COUNTER_LOST, EXE_LEN};
use crate::netns_tag::NetnsAttachment;
use crate::pinned::{PinnedScope, State as PinnedState};
use aya::maps::{CgroupArray, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::links::FdLink;
use aya::programs::SkLookup;
use aya::{Btf, Ebpf, EbpfLoader};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

/// The compiled BPF object for the architecture this crate is built for
/// (`bpf/build.sh ARCH`): the programs read system-call registers, whose
/// layout is the architecture's. The x86_64 object is committed and checked
/// in CI; the arm64 one is built before `cargo build` (docs/kernels.md).
#[cfg(target_arch = "x86_64")]
pub static OBJECT: &[u8] = include_bytes!("../../../../bpf/sockfilter.bpf.o");
/// The compiled BPF object for the architecture this crate is built for
/// (`bpf/build.sh arm64` writes it; see docs/kernels.md).
#[cfg(target_arch = "aarch64")]
pub static OBJECT: &[u8] = include_bytes!("../../../../bpf/sockfilter.bpf.arm64.o");
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!(
    "sockfilter's BPF object is built for x86_64 and arm64 only: add the architecture to bpf/build.sh"
);

/// Prefix of every program name, so tests and operators can find ours with
/// `bpftool prog`.
pub const PROGRAM_PREFIX: &str = "sf_";

/// Why sockfilter could not start. Each message says what is missing and
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not enough privilege.
    #[error("sockfilter needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_SYS_ADMIN) to load BPF programs; run it as root")]
    NotRoot,
    /// No cgroup2 hierarchy.
    #[error("no cgroup v2 hierarchy is mounted (none in /proc/self/mountinfo); mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`")]
    NoCgroup2,
    /// The cgroup to attach to cannot be opened.
    #[error("cannot open cgroup {path}: {source}; give a directory of the cgroup v2 hierarchy")]
    Cgroup {
        /// The path given.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// tracefs is not mounted and could not be.
    #[error("tracefs is not mounted at /sys/kernel/tracing and mounting it failed ({0}); mount it with `mount -t tracefs tracefs /sys/kernel/tracing`")]
    NoTracefs(String),
    /// The kernel has no BTF.
    #[error("the kernel exposes no BTF (/sys/kernel/btf/vmlinux: {0}); sockfilter needs a kernel built with CONFIG_DEBUG_INFO_BTF=y")]
    NoBtf(String),
    /// The object could not be loaded (maps).
    #[error("loading sockfilter's BPF maps failed: {0}")]
    Object(String),
    /// Pinning in bpffs, or adopting what is pinned, failed.
    #[error("persistent enforcement (bpffs, {dir}): {0}", dir = crate::pinned::ROOT)]
    Pinned(String),
    /// One program was refused or could not attach.
    #[error("the kernel refused BPF program {program} ({hook}): {reason}")]
    Program {
        /// Program name.
        program: &'static str,
        /// The hook it needs.
        hook: &'static str,
        /// The kernel's answer.
        reason: String,
    },
}

/// What to attach to.
#[derive(Debug, Clone, Default)]
pub struct ProbeOptions {
    /// A cgroup v2 directory: watch only sockets of processes in its subtree.
    /// None = the whole host (the cgroup2 root).
    pub cgroup: Option<PathBuf>,
    /// Load the enforcement hooks too (bind/connect/sendmsg, and socket
    /// lookup for [`Probe::attach_sk_lookup`]); decisions come from the
    /// policy maps, which [`crate::enforce::Enforcer`] fills.
    pub enforce: bool,
    /// Pin programs, links and maps in bpffs so that enforcement outlives
    /// this process, and adopt what a dead enforcer of the same scope left
    /// pinned ([`crate::pinned`]). Enforce only.
    pub persist: bool,
}

/// The loaded, attached BPF programs and their maps.
pub struct Probe {
    bpf: Ebpf,
    cgroup_path: PathBuf,
    attached: Vec<&'static str>,
    /// Links of this process (not pinned), held so that they are detached
    /// when the probe drops.
    _links: Vec<FdLink>,
    /// The bpffs state this probe keeps enforcement in, when persistent.
    pins: Option<PinnedScope>,
    /// Adopted: the pinned socket-lookup program, and the namespaces it is
    /// attached to already (until the policy agent takes them).
    adopted: Option<(SkLookup, Vec<NetnsAttachment>)>,
    /// Loaded, not attached yet: the 32-bit system call hook until a
    /// 32-bit program runs (crate::compat_hook).
    deferred: Vec<&'static Hook>,
    /// Another sockfilter build's pinned enforcement that this probe
    /// replaces (its scope, and its object's hash): it stays in force, next
    /// to this probe's unpinned programs, until
    /// [`Probe::retire_replaced`] swaps the pins.
    replacing: Option<(PinnedScope, String)>,
    /// The object hash of the build whose enforcement was replaced.
    replaced: Option<String>,
}

impl Probe {
    /// Loads the object and attaches every program: process tracking first,
    /// then the socket hooks, so no socket event can precede its process's
    /// executable record.
    pub fn attach(opts: &ProbeOptions) -> Result<Probe, LoadError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(LoadError::NotRoot);
        }
        let cgroup_path = match &opts.cgroup {
            Some(p) => p.clone(),
            None => crate::cgroup::cgroup2_mount().ok_or(LoadError::NoCgroup2)?,
        };
        let cgroup = File::open(&cgroup_path).map_err(|source| LoadError::Cgroup {
            path: cgroup_path.clone(),
            source,
        })?;
        ensure_tracefs()?;
        let btf = Btf::from_sys_fs().map_err(|e| LoadError::NoBtf(e.to_string()))?;
        let mut globals = Globals::of(opts);
        if globals.lsm {
            if let Err(why) = lsm_programs_load(&btf, &globals) {
                // Degraded, not broken: the cgroup hooks decide instead.
                eprintln!("sockfilter: BPF LSM is active but the kernel refused sockfilter's LSM programs ({why}); denied bind() and connect() fail in the cgroup hooks and denied listeners are refused and destroyed instead");
                globals.lsm = false;
                globals.cfg_lsm = 0;
            }
        }
        let pins = if opts.persist {
            Some(open_pins(opts.cgroup.as_deref())?)
        } else {
            None
        };
        if let Some(scope) = pins {
            match scope.state(&crate::pinned::object_hash(OBJECT)) {
                PinnedState::Complete => return Probe::adopt(scope, cgroup_path, &btf, &globals),
                PinnedState::Foreign(hash) => {
                    // Another build (an upgrade): its programs cannot be
                    // adopted, so this one's run next to them, unpinned,
                    // until its policy is in force; then the pins swap.
                    let mut probe =
                        Probe::attach_fresh(opts, cgroup_path, cgroup, &btf, &globals, None)?;
                    probe.replacing = Some((scope, hash));
                    return Ok(probe);
                }
                // An enforcer that died while pinning: start over.
                PinnedState::Partial => {
                    scope.clear();
                }
                PinnedState::Empty => {}
            }
            return Probe::attach_fresh(opts, cgroup_path, cgroup, &btf, &globals, Some(scope));
        }
        Probe::attach_fresh(opts, cgroup_path, cgroup, &btf, &globals, None)
    }

    /// Loads and attaches everything anew; pins it in `pins` when given.
    fn attach_fresh(
        opts: &ProbeOptions,
        cgroup_path: PathBuf,
        cgroup: File,
        btf: &Btf,
        globals: &Globals,
        pins: Option<PinnedScope>,
    ) -> Result<Probe, LoadError> {
        let mut loader = EbpfLoader::new();
        globals.configure(loader.btf(Some(btf)));
        let mut bpf = loader
            .load(OBJECT)
            .map_err(|e| LoadError::Object(error_chain(&e)))?;

        if opts.cgroup.is_some() {
            let mut arr: CgroupArray<&mut MapData> = bpf
                .map_mut("watched_cgroup")
                .and_then(|m| m.try_into().ok())
                .ok_or_else(|| LoadError::Object("map watched_cgroup missing".into()))?;
            arr.set(0, cgroup.as_raw_fd(), 0)
                .map_err(|e| LoadError::Object(format!("watched_cgroup: {e}")))?;
        }

        let mut attached = Vec::new();
        let mut links = Vec::new();
        let mut deferred = Vec::new();
        for hook in HOOKS.iter().chain(ARCH_HOOKS) {
            let wanted = match hook.kind {
                HookKind::SockAddrUnlessLsm => opts.enforce && !globals.lsm,
                HookKind::Lsm(_) => globals.lsm,
                _ => true,
            };
            if !wanted {
                continue;
            }
            if ARCH_HOOKS.iter().any(|h| h.program == hook.program) {
                // Verified now, attached when a 32-bit program runs
                // (crate::compat_hook), and pinned then when persistent.
                load_for_later(&mut bpf, hook, btf)?;
                deferred.push(hook);
                continue;
            }
            let link =
                attach_one(&mut bpf, hook, btf, &cgroup).map_err(|reason| LoadError::Program {
                    program: hook.program,
                    hook: hook.what,
                    reason,
                })?;
            links.push(link);
            attached.push(hook.program);
            if hook.program == "sf_fork" {
                // exec and fork tracking is live: record the processes that
                // already exist (never overwriting what exec just recorded).
                seed_executables(&mut bpf);
            }
        }
        for group in URING_HOOKS {
            if let Some((hook, link)) = attach_first(&mut bpf, group, btf, &cgroup)? {
                links.push(link);
                attached.push(hook.program);
            }
        }
        if opts.enforce {
            let p: &mut SkLookup = bpf
                .program_mut("sf_sk_lookup")
                .and_then(|p| p.try_into().ok())
                .ok_or_else(|| LoadError::Object("program sf_sk_lookup missing".into()))?;
            p.load().map_err(|e| LoadError::Program {
                program: "sf_sk_lookup",
                hook: "sk_lookup",
                reason: error_chain(&e),
            })?;
        }
        if let Some(scope) = &pins {
            pin_all(scope, &mut bpf, &attached, &mut links)?;
        }
        let mut probe = Probe {
            bpf,
            cgroup_path,
            attached,
            _links: links,
            pins,
            adopted: None,
            deferred,
            replacing: None,
            replaced: None,
        };
        // Attached now where 32-bit system calls are possible at all
        // (crate::compat_hook); else the exec hook's count of 32-bit execs
        // attaches it later.
        if !probe.deferred.is_empty() && crate::compat_hook::needed_at_start() {
            probe.attach_deferred()?;
        }
        Ok(probe)
    }

    /// Attaches socket lookup to one network namespace (given by an open
    /// `/proc/PID/ns/net` or `/run/netns/NAME`): the namespace's tag program
    /// ([`crate::netns_tag`]), then `sf_sk_lookup`, which runs after it.
    /// Enforce only. The attachment holds the tag program's link: dropping
    /// it detaches the tag unless the probe is persistent (then pinned).
    pub fn attach_sk_lookup(&mut self, netns: &File) -> Result<NetnsAttachment, LoadError> {
        use std::os::unix::fs::MetadataExt;
        let refused = |program: &'static str, reason: String| LoadError::Program {
            program,
            hook: "sk_lookup",
            reason,
        };
        let ino = netns
            .metadata()
            .map_err(|e| refused("sf_sk_lookup", format!("the namespace: {e}")))?
            .ino();
        let cookie = crate::netns_tag::cookie(netns)
            .map_err(|e| refused("sf_sk_lookup", format!("the namespace's cookie: {e}")))?;
        let map = self
            .bpf
            .map("lookup_netns")
            .ok_or_else(|| LoadError::Object("map lookup_netns missing".into()))?;
        let aya::maps::Map::PerCpuArray(data) = map else {
            return Err(LoadError::Object(
                "map lookup_netns is not a per-CPU array".into(),
            ));
        };
        let tag = crate::netns_tag::attach(data.fd().as_fd(), netns, cookie)
            .map_err(|e| refused(crate::netns_tag::PROGRAM_NAME, e))?;
        let p: &mut SkLookup = match self.adopted.as_mut() {
            Some((p, _)) => p,
            None => self
                .bpf
                .program_mut("sf_sk_lookup")
                .and_then(|p| p.try_into().ok())
                .ok_or_else(|| LoadError::Object("program sf_sk_lookup missing".into()))?,
        };
        // On failure the tag's link is dropped here: detached.
        let id = p
            .attach(netns)
            .map_err(|e| refused("sf_sk_lookup", error_chain(&e)))?;
        let main = FdLink::from(
            p.take_link(id)
                .map_err(|e| refused("sf_sk_lookup", error_chain(&e)))?,
        );
        let main = match &self.pins {
            Some(scope) => scope
                .pin_sk_lookup(main, &tag, ino, cookie)
                .map_err(|e| LoadError::Pinned(format!("socket-lookup links: {e}")))?,
            None => main,
        };
        Ok(NetnsAttachment::new(ino, cookie, tag, Some(main)))
    }

    /// Lets go of socket lookup in a namespace that died: its pins are
    /// removed (then dropping `a` frees its links and tag program), so that
    /// namespaces made and left, however many, cost nothing once gone.
    pub fn forget_sk_lookup(&self, a: NetnsAttachment) {
        if let Some(scope) = &self.pins {
            scope.unpin_sk_lookup(a.ino, a.cookie);
        }
    }

    /// The loaded object, for the policy maps.
    pub fn bpf_mut(&mut self) -> &mut Ebpf {
        &mut self.bpf
    }

    /// The loaded object.
    pub fn bpf(&self) -> &Ebpf {
        &self.bpf
    }

    /// The cgroup the socket hooks are attached to.
    pub fn cgroup_path(&self) -> &Path {
        &self.cgroup_path
    }

    /// Names of the attached programs.
    pub fn programs(&self) -> &[&'static str] {
        &self.attached
    }

    /// The ring buffer of events. Can be taken once.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.bpf
            .take_map("events")
            .and_then(|m| RingBuf::try_from(m).ok())
    }

    /// The ring buffer of exec records (`struct sf_exec`). Can be taken once.
    pub fn take_execs(&mut self) -> Option<RingBuf<MapData>> {
        self.bpf
            .take_map("execs")
            .and_then(|m| RingBuf::try_from(m).ok())
    }

    /// Events the kernel dropped because the ring buffer was full, summed
    /// over CPUs, since load.
    pub fn lost(&self) -> u64 {
        self.counter(COUNTER_LOST)
    }

    /// Attaches the 32-bit system call hook if it waits for a 32-bit
    /// program and the exec hook has seen one run (crate::compat_hook).
    /// Returns whether it was attached now; a failure to attach is the
    /// error.
    pub fn attach_compat_if_needed(&mut self) -> Result<bool, LoadError> {
        if self.deferred.is_empty() || self.counter(crate::abi::COUNTER_COMPAT_EXECS) == 0 {
            return Ok(false);
        }
        self.attach_deferred()?;
        Ok(true)
    }

    fn attach_deferred(&mut self) -> Result<(), LoadError> {
        for hook in std::mem::take(&mut self.deferred) {
            let link = attach_loaded(&mut self.bpf, hook).map_err(|reason| LoadError::Program {
                program: hook.program,
                hook: hook.what,
                reason,
            })?;
            self.attached.push(hook.program);
            match &self.pins {
                // Persistent: pinned like the others, so that it outlives
                // this process (the 32-bit program may still run).
                Some(scope) => pin_one(scope, &mut self.bpf, hook.program, link)?,
                None => self._links.push(link),
            }
        }
        Ok(())
    }

    /// One of the kernel side's counters (`crate::abi::COUNTER_*`), summed
    /// over CPUs, since load.
    pub fn counter(&self, index: u32) -> u64 {
        let Some(map) = self.bpf.map("counters") else {
            return 0;
        };
        let Ok(arr) = PerCpuArray::<&MapData, u64>::try_from(map) else {
            return 0;
        };
        arr.get(&index, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }

    /// The executable the kernel recorded for a process, if any.
    pub fn exe_of(&self, pid: u32) -> Option<String> {
        exe_string(&self.exe_record(pid)?)
    }

    /// The kernel's record of a process's executable and ancestry, if any.
    pub fn exe_record(&self, pid: u32) -> Option<SfExe> {
        let map = self.bpf.map("exe_by_pid")?;
        let m = BpfHashMap::<&MapData, u32, SfExe>::try_from(map).ok()?;
        m.get(&pid, 0).ok()
    }
}

/// The path of a record, if it is whole.
pub fn exe_string(x: &SfExe) -> Option<String> {
    if x.len == 0 || x.truncated != 0 {
        return None;
    }
    let n = (x.len as usize).min(EXE_LEN);
    Some(String::from_utf8_lossy(&x.path[..n]).into_owned())
}

/// The object's read-only globals (`const volatile cfg_*` in bpf/).
struct Globals {
    filter_cgroup: u8,
    enforce: u8,
    /// Enforce in BPF LSM hooks (where bpf is an active LSM).
    lsm: bool,
    cfg_lsm: u8,
}

impl Globals {
    fn of(opts: &ProbeOptions) -> Globals {
        let lsm = opts.enforce
            && crate::features::probe(crate::features::Feature::BpfLsm).available() == Some(true);
        Globals {
            filter_cgroup: opts.cgroup.is_some().into(),
            enforce: opts.enforce.into(),
            lsm,
            cfg_lsm: lsm.into(),
        }
    }

    fn configure<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        loader
            .override_global("cfg_filter_cgroup", &self.filter_cgroup, true)
            .override_global("cfg_enforce", &self.enforce, true)
            .override_global("cfg_lsm", &self.cfg_lsm, true);
    }
}

/// The line of a verifier log that says why (the last one before its
/// statistics), or all of `s`.
fn last_line(s: &str) -> &str {
    let stats = ["verification time", "stack depth", "processed ", ")"];
    s.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !stats.iter().any(|p| l.starts_with(p)))
        .unwrap_or(s)
}

/// An error and its causes on one line (aya nests the verifier log).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        cur = c.source();
    }
    s
}
