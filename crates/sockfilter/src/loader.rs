//! Loading sockfilter's BPF object and attaching its programs.
//!
//! Everything attached here is owned by [`Probe`]: aya detaches every link
//! and unloads every program when it is dropped, so a normal exit, an error
//! or a signal handled by the caller leaves nothing behind.

use crate::abi::{SfExe, COUNTER_LOST, EXE_LEN, SEEDED_EXEC_ID};
use crate::netns_tag::NetnsAttachment;
use crate::pinned::{PinnedScope, State as PinnedState};
use aya::maps::{CgroupArray, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::links::FdLink;
use aya::programs::{
    BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr,
    Lsm, SkLookup, SockOps, TracePoint,
};
use aya::{Btf, Ebpf, EbpfLoader};
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

/// The compiled BPF object for the architecture this crate is built for
/// (`bpf/build.sh ARCH`): the programs read system-call registers, whose
/// layout is the architecture's. The x86_64 object is committed and checked
/// in CI; the arm64 one is built before `cargo build` (docs/kernels.md).
#[cfg(target_arch = "x86_64")]
pub static OBJECT: &[u8] = include_bytes!("../../../bpf/sockfilter.bpf.o");
/// The compiled BPF object for the architecture this crate is built for
/// (`bpf/build.sh arm64` writes it; see docs/kernels.md).
#[cfg(target_arch = "aarch64")]
pub static OBJECT: &[u8] = include_bytes!("../../../bpf/sockfilter.bpf.arm64.o");
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

struct Hook {
    program: &'static str,
    kind: HookKind,
    what: &'static str,
}

enum HookKind {
    Cgroup,
    /// cgroup sock_addr hooks that BPF LSM hooks replace where `bpf` is an
    /// active LSM: enforcement only.
    SockAddrUnlessLsm,
    /// BPF LSM hooks: enforcement only, where `bpf` is an active LSM.
    Lsm(&'static str),
    /// cgroup sock_addr hooks that also report (UDP sends to a new
    /// destination): attached by watch and enforce alike.
    SockAddrReport,
    SockOps,
    /// cgroup_skb/ingress: packets as they are delivered to a socket.
    SkbIngress,
    TpBtf(&'static str),
    TracePoint(&'static str, &'static str),
}

const HOOKS: &[Hook] = &[
    Hook {
        program: "sf_exec",
        kind: HookKind::TpBtf("sched_process_exec"),
        what: "tp_btf/sched_process_exec",
    },
    Hook {
        program: "sf_fork",
        kind: HookKind::TpBtf("sched_process_fork"),
        what: "tp_btf/sched_process_fork",
    },
    Hook {
        program: "sf_free",
        kind: HookKind::TpBtf("sched_process_free"),
        what: "tp_btf/sched_process_free",
    },
    Hook {
        program: "sf_tcp_state",
        kind: HookKind::TpBtf("inet_sock_set_state"),
        what: "tp_btf/inet_sock_set_state",
    },
    Hook {
        program: "sf_exit_accept",
        kind: HookKind::TracePoint("syscalls", "sys_exit_accept"),
        what: "tracepoint syscalls:sys_exit_accept",
    },
    Hook {
        program: "sf_exit_accept4",
        kind: HookKind::TracePoint("syscalls", "sys_exit_accept4"),
        what: "tracepoint syscalls:sys_exit_accept4",
    },
    Hook {
        program: "sf_exit_connect",
        kind: HookKind::TracePoint("syscalls", "sys_exit_connect"),
        what: "tracepoint syscalls:sys_exit_connect",
    },
    Hook {
        program: "sf_sock_create",
        kind: HookKind::Cgroup,
        what: "cgroup/sock_create",
    },
    Hook {
        program: "sf_post_bind4",
        kind: HookKind::Cgroup,
        what: "cgroup/post_bind4",
    },
    Hook {
        program: "sf_post_bind6",
        kind: HookKind::Cgroup,
        what: "cgroup/post_bind6",
    },
    Hook {
        program: "sf_sock_release",
        kind: HookKind::Cgroup,
        what: "cgroup/sock_release",
    },
    Hook {
        program: "sf_sockops",
        kind: HookKind::SockOps,
        what: "sockops (BPF_SOCK_OPS_TCP_LISTEN_CB)",
    },
    Hook {
        program: "sf_bind4",
        kind: HookKind::SockAddrUnlessLsm,
        what: "cgroup/bind4",
    },
    Hook {
        program: "sf_bind6",
        kind: HookKind::SockAddrUnlessLsm,
        what: "cgroup/bind6",
    },
    Hook {
        program: "sf_connect4",
        kind: HookKind::SockAddrUnlessLsm,
        what: "cgroup/connect4",
    },
    Hook {
        program: "sf_connect6",
        kind: HookKind::SockAddrUnlessLsm,
        what: "cgroup/connect6",
    },
    Hook {
        program: "sf_lsm_bind",
        kind: HookKind::Lsm("socket_bind"),
        what: "lsm/socket_bind",
    },
    Hook {
        program: "sf_lsm_connect",
        kind: HookKind::Lsm("socket_connect"),
        what: "lsm/socket_connect",
    },
    Hook {
        program: "sf_lsm_listen",
        kind: HookKind::Lsm("socket_listen"),
        what: "lsm/socket_listen",
    },
    Hook {
        program: "sf_dns_ingress",
        kind: HookKind::SkbIngress,
        what: "cgroup_skb/ingress (DNS answers)",
    },
    Hook {
        program: "sf_sendmsg4",
        kind: HookKind::SockAddrReport,
        what: "cgroup/sendmsg4",
    },
    Hook {
        program: "sf_sendmsg6",
        kind: HookKind::SockAddrReport,
        what: "cgroup/sendmsg6",
    },
];

/// io_uring's tracepoints (bpf/uring.h), whose names and arguments changed
/// between kernels: per group, the first program whose tracepoint exists
/// and that loads is attached. A kernel built without io_uring has none of
/// them, and nothing can take that path there.
const URING_HOOKS: &[&[Hook]] = &[
    &[
        Hook {
            program: "sf_uring_submit",
            kind: HookKind::TpBtf("io_uring_submit_req"),
            what: "tp_btf/io_uring_submit_req",
        },
        Hook {
            program: "sf_uring_submit_sqe",
            kind: HookKind::TpBtf("io_uring_submit_sqe"),
            what: "tp_btf/io_uring_submit_sqe",
        },
    ],
    &[
        Hook {
            program: "sf_uring_complete",
            kind: HookKind::TpBtf("io_uring_complete"),
            what: "tp_btf/io_uring_complete (ctx, req, cqe)",
        },
        Hook {
            program: "sf_uring_complete_fields",
            kind: HookKind::TpBtf("io_uring_complete"),
            what: "tp_btf/io_uring_complete (ctx, req, user_data, res, cflags, ...)",
        },
    ],
];

/// Hooks of one architecture: 32-bit system calls on x86_64 (bpf/compat.h).
#[cfg(target_arch = "x86_64")]
const ARCH_HOOKS: &[Hook] = &[Hook {
    program: "sf_compat_exit",
    kind: HookKind::TpBtf("sys_exit"),
    what: "tp_btf/sys_exit (32-bit system calls)",
}];
#[cfg(not(target_arch = "x86_64"))]
const ARCH_HOOKS: &[Hook] = &[];

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
                PinnedState::Partial => {
                    scope.clear();
                    return Probe::attach_fresh(
                        opts,
                        cgroup_path,
                        cgroup,
                        &btf,
                        &globals,
                        Some(scope),
                    );
                }
                PinnedState::Empty => {
                    return Probe::attach_fresh(
                        opts,
                        cgroup_path,
                        cgroup,
                        &btf,
                        &globals,
                        Some(scope),
                    )
                }
            }
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
                load_only(&mut bpf, hook, btf).map_err(|reason| LoadError::Program {
                    program: hook.program,
                    hook: hook.what,
                    reason,
                })?;
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
        // The exec hook counts 32-bit execs from here on; those that run
        // already are looked for now.
        if !probe.deferred.is_empty() && crate::compat_hook::any_ia32_process() {
            probe.attach_deferred()?;
        }
        Ok(probe)
    }

    /// Takes over what a dead enforcer of this scope pinned: its maps (the
    /// policy in force, the process records, the event ring) are opened
    /// from bpffs, and its programs keep running through their pinned
    /// links; nothing is attached twice.
    fn adopt(
        scope: PinnedScope,
        cgroup_path: PathBuf,
        btf: &Btf,
        globals: &Globals,
    ) -> Result<Probe, LoadError> {
        let names = scope.names("maps");
        let mut loader = EbpfLoader::new();
        globals.configure(loader.btf(Some(btf)));
        for name in &names {
            loader.map_pin_path(name.as_str(), scope.map_path(name));
        }
        let mut bpf = loader
            .load(OBJECT)
            .map_err(|e| LoadError::Object(error_chain(&e)))?;
        let sk_lookup = SkLookup::from_pin(scope.program_path("sf_sk_lookup"))
            .map_err(|e| LoadError::Pinned(format!("program sf_sk_lookup: {}", error_chain(&e))))?;
        let attached: Vec<&'static str> = HOOKS
            .iter()
            .chain(ARCH_HOOKS)
            .chain(URING_HOOKS.iter().copied().flatten())
            .map(|h| h.program)
            .filter(|p| scope.program_path(p).exists())
            .collect();
        let namespaces = scope.sk_lookup_namespaces();
        // The 32-bit hook is pinned only once a 32-bit program ran; until
        // then this enforcer defers it as a fresh one does.
        let mut deferred = Vec::new();
        for hook in ARCH_HOOKS {
            if !attached.contains(&hook.program) {
                load_only(&mut bpf, hook, btf).map_err(|reason| LoadError::Program {
                    program: hook.program,
                    hook: hook.what,
                    reason,
                })?;
                deferred.push(hook);
            }
        }
        let mut probe = Probe {
            bpf,
            cgroup_path,
            attached,
            _links: Vec::new(),
            pins: Some(scope),
            adopted: Some((sk_lookup, namespaces)),
            deferred,
            replacing: None,
            replaced: None,
        };
        if !probe.deferred.is_empty() {
            if probe.counter(crate::abi::COUNTER_COMPAT_EXECS) > 0 {
                // The dead enforcer had not attached it, so the exec came
                // in the gap (or just before it died).
                eprintln!("sockfilter: a 32-bit program was started while no enforcer ran: its accepts and UDP connects until now were not reported");
                probe.attach_deferred()?;
            } else if crate::compat_hook::any_ia32_process() {
                probe.attach_deferred()?;
            }
        }
        Ok(probe)
    }

    /// The bpffs directory this probe keeps its enforcement in, when
    /// persistent ([`crate::pinned`]).
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pins.as_ref().map(|p| p.dir())
    }

    /// Whether this probe took over what a dead enforcer pinned (its policy
    /// is in force until the next install).
    pub fn is_adopted(&self) -> bool {
        self.adopted.is_some()
    }

    /// Network namespaces that socket lookup is attached to already (by the
    /// enforcer whose pins were adopted); empty after the first call.
    pub fn take_sk_lookup_namespaces(&mut self) -> Vec<NetnsAttachment> {
        self.adopted
            .as_mut()
            .map_or_else(Vec::new, |(_, ns)| std::mem::take(ns))
    }

    /// Ends persistent enforcement: removes every pin (links are detached)
    /// so that nothing stays behind once this process exits. What a clean
    /// stop (SIGINT, SIGTERM) does; a crash skips it, and the kernel keeps
    /// enforcing. No-op without pins.
    pub fn release_pins(&mut self) {
        if let Some(scope) = self.pins.take() {
            scope.release();
        }
        if let Some((scope, _)) = self.replacing.take() {
            scope.release();
        }
    }

    /// When this probe replaces another build's pinned enforcement (see
    /// [`Probe::replaced_build`]), and once this probe's policy is in force:
    /// removes the other build's pins (its links are detached) and pins this
    /// probe's programs, links (with socket lookup's in `namespaces`) and
    /// maps in their place. Until then both builds' programs run, so every
    /// operation is decided by at least one policy: no gap. No-op otherwise.
    pub fn retire_replaced(
        &mut self,
        namespaces: &mut [&mut NetnsAttachment],
    ) -> Result<(), LoadError> {
        let Some((scope, hash)) = self.replacing.take() else {
            return Ok(());
        };
        scope
            .clear_for_another()
            .map_err(|e| LoadError::Pinned(format!("{}: {e}", scope.dir().display())))?;
        // From here until the state is marked complete, this process's
        // descriptors hold the enforcement: a crash in these milliseconds
        // leaves none (the only gap of an upgrade).
        for a in namespaces.iter_mut() {
            a.pin_in(&scope)
                .map_err(|e| LoadError::Pinned(format!("socket-lookup links: {e}")))?;
        }
        pin_all(&scope, &mut self.bpf, &self.attached, &mut self._links)?;
        self.pins = Some(scope);
        self.replaced = Some(hash);
        Ok(())
    }

    /// The BPF object hash of the other sockfilter build whose pinned
    /// enforcement this probe replaced, once it did.
    pub fn replaced_build(&self) -> Option<&str> {
        self.replaced.as_deref()
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

    /// Keeps the rule names of both policy slots next to the pinned
    /// enforcement, for an enforcer that adopts it ([`crate::pinned_names`]).
    /// No-op when not persistent.
    pub fn save_rule_names(&self, slots: &[Vec<String>; 2]) -> std::io::Result<()> {
        match &self.pins {
            Some(scope) => crate::pinned_names::save(&scope.map_path(RULE_NAMES), slots),
            None => Ok(()),
        }
    }

    /// The rule names the enforcer whose state was adopted kept.
    pub fn saved_rule_names(&self) -> Option<[Vec<String>; 2]> {
        crate::pinned_names::load(&self.pins.as_ref()?.map_path(RULE_NAMES))
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

/// Loads a `tp_btf` hook's program without attaching it.
fn load_only(bpf: &mut Ebpf, hook: &Hook, btf: &Btf) -> Result<(), String> {
    let HookKind::TpBtf(name) = hook.kind else {
        return Err("only tp_btf hooks are attached later".into());
    };
    let p: &mut BtfTracePoint = bpf
        .program_mut(hook.program)
        .ok_or_else(|| "not in the object".to_string())?
        .try_into()
        .map_err(|x| error_chain(&x))?;
    p.load(name, btf).map_err(|x| error_chain(&x))
}

/// Attaches a `tp_btf` hook loaded by [`load_only`].
fn attach_loaded(bpf: &mut Ebpf, hook: &Hook) -> Result<FdLink, String> {
    let p: &mut BtfTracePoint = bpf
        .program_mut(hook.program)
        .ok_or_else(|| "not in the object".to_string())?
        .try_into()
        .map_err(|x| error_chain(&x))?;
    let id = p.attach().map_err(|x| error_chain(&x))?;
    Ok(FdLink::from(p.take_link(id).map_err(|x| error_chain(&x))?))
}

fn attach_one(bpf: &mut Ebpf, hook: &Hook, btf: &Btf, cgroup: &File) -> Result<FdLink, String> {
    let prog = bpf
        .program_mut(hook.program)
        .ok_or_else(|| "not in the object".to_string())?;
    let e = |e: &dyn std::error::Error| error_chain(e);
    // Each link is taken from the program so that it can be pinned
    // (enforce); otherwise the probe owns it and detaches it on drop.
    let link = match hook.kind {
        HookKind::Cgroup => {
            let p: &mut CgroupSock = prog.try_into().map_err(|x| e(&x))?;
            p.load().map_err(|x| e(&x))?;
            let id = p
                .attach(cgroup, CgroupAttachMode::Single)
                .map_err(|x| e(&x))?;
            FdLink::try_from(p.take_link(id).map_err(|x| e(&x))?)
        }
        HookKind::Lsm(name) => {
            let p: &mut Lsm = prog.try_into().map_err(|x| e(&x))?;
            p.load(name, btf).map_err(|x| e(&x))?;
            let id = p.attach().map_err(|x| e(&x))?;
            Ok(FdLink::from(p.take_link(id).map_err(|x| e(&x))?))
        }
        HookKind::SockAddrUnlessLsm | HookKind::SockAddrReport => {
            let p: &mut CgroupSockAddr = prog.try_into().map_err(|x| e(&x))?;
            p.load().map_err(|x| e(&x))?;
            let id = p
                .attach(cgroup, CgroupAttachMode::Single)
                .map_err(|x| e(&x))?;
            FdLink::try_from(p.take_link(id).map_err(|x| e(&x))?)
        }
        HookKind::SockOps => {
            let p: &mut SockOps = prog.try_into().map_err(|x| e(&x))?;
            p.load().map_err(|x| e(&x))?;
            let id = p
                .attach(cgroup, CgroupAttachMode::Single)
                .map_err(|x| e(&x))?;
            FdLink::try_from(p.take_link(id).map_err(|x| e(&x))?)
        }
        HookKind::SkbIngress => {
            let p: &mut CgroupSkb = prog.try_into().map_err(|x| e(&x))?;
            p.load().map_err(|x| e(&x))?;
            let id = p
                .attach(
                    cgroup,
                    CgroupSkbAttachType::Ingress,
                    CgroupAttachMode::Single,
                )
                .map_err(|x| e(&x))?;
            FdLink::try_from(p.take_link(id).map_err(|x| e(&x))?)
        }
        HookKind::TpBtf(name) => {
            let p: &mut BtfTracePoint = prog.try_into().map_err(|x| e(&x))?;
            p.load(name, btf).map_err(|x| e(&x))?;
            let id = p.attach().map_err(|x| e(&x))?;
            Ok(FdLink::from(p.take_link(id).map_err(|x| e(&x))?))
        }
        HookKind::TracePoint(cat, name) => {
            let p: &mut TracePoint = prog.try_into().map_err(|x| e(&x))?;
            p.load().map_err(|x| e(&x))?;
            let id = p.attach(cat, name).map_err(|x| e(&x))?;
            FdLink::try_from(p.take_link(id).map_err(|x| e(&x))?)
        }
    };
    link.map_err(|x| format!("the kernel gave no BPF link ({})", e(&x)))
}

/// Attaches the first hook of `group` whose tracepoint this kernel has and
/// that loads; None when the kernel has none of the tracepoints; the last
/// refusal when it has some and none loads.
fn attach_first<'h>(
    bpf: &mut Ebpf,
    group: &'h [Hook],
    btf: &Btf,
    cgroup: &File,
) -> Result<Option<(&'h Hook, FdLink)>, LoadError> {
    let mut refused = None;
    for hook in group {
        let HookKind::TpBtf(name) = hook.kind else {
            continue;
        };
        if !tracepoint_exists(btf, name) {
            continue;
        }
        match attach_one(bpf, hook, btf, cgroup) {
            Ok(link) => return Ok(Some((hook, link))),
            Err(reason) => {
                refused = Some(LoadError::Program {
                    program: hook.program,
                    hook: hook.what,
                    reason,
                })
            }
        }
    }
    refused.map_or(Ok(None), Err)
}

/// Whether the kernel has tracepoint `name` (its `btf_trace_NAME` type).
fn tracepoint_exists(btf: &Btf, name: &str) -> bool {
    btf.id_by_type_name_kind(&format!("btf_trace_{name}"), aya_obj::btf::BtfKind::Typedef)
        .is_ok()
}

/// Loads (without attaching) the BPF LSM programs of an object configured
/// with `globals`: whether this kernel's verifier takes them. A kernel can
/// have `bpf` among its LSMs and still refuse a program (too complex for
/// its verifier, a helper it lacks).
fn lsm_programs_load(btf: &Btf, globals: &Globals) -> Result<(), String> {
    let mut loader = EbpfLoader::new();
    globals.configure(loader.btf(Some(btf)));
    let mut bpf = loader.load(OBJECT).map_err(|e| error_chain(&e))?;
    for hook in HOOKS {
        let HookKind::Lsm(name) = hook.kind else {
            continue;
        };
        let p: &mut Lsm = bpf
            .program_mut(hook.program)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| format!("program {} missing", hook.program))?;
        p.load(name, btf)
            .map_err(|e| format!("{}: {}", hook.what, last_line(&error_chain(&e))))?;
    }
    Ok(())
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

/// The pin name of the rule names map (made by user space, not in the
/// object).
const RULE_NAMES: &str = "rule_names";

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

/// Opens (creating it, and mounting bpffs if needed) and locks the pin
/// directory of the scope of `cgroup`.
fn open_pins(cgroup: Option<&Path>) -> Result<PinnedScope, LoadError> {
    let scope = crate::pinned::scope_name(cgroup)
        .map_err(|e| LoadError::Pinned(format!("naming the scope: {e}")))?;
    PinnedScope::lock(&scope).map_err(|e| LoadError::Pinned(e.to_string()))
}

/// Pins every map, every loaded program and every link in `scope`, then
/// marks the state complete (the last step: an enforcer that dies before
/// it leaves a partial state, which the next one clears).
fn pin_all(
    scope: &PinnedScope,
    bpf: &mut Ebpf,
    attached: &[&'static str],
    links: &mut Vec<FdLink>,
) -> Result<(), LoadError> {
    let failed =
        |what: String| move |e: aya::pin::PinError| LoadError::Pinned(format!("{what}: {e}"));
    for (name, map) in bpf.maps() {
        if name.contains('.') {
            continue; // global data (.rodata): per load, read by no one else
        }
        map.pin(scope.map_path(name))
            .map_err(failed(format!("map {name}")))?;
    }
    for &name in attached.iter().chain(["sf_sk_lookup"].iter()) {
        if let Some(p) = bpf.program_mut(name) {
            p.pin(scope.program_path(name))
                .map_err(failed(format!("program {name}")))?;
        }
    }
    for (&name, link) in attached.iter().zip(std::mem::take(links)) {
        link.pin(scope.link_path(name))
            .map_err(failed(format!("link of {name}")))?;
    }
    scope
        .mark_complete(&crate::pinned::object_hash(OBJECT))
        .map_err(|e| LoadError::Pinned(format!("marking {}: {e}", scope.dir().display())))
}

/// Pins one program attached after the others were pinned, and its link.
fn pin_one(
    scope: &PinnedScope,
    bpf: &mut Ebpf,
    name: &'static str,
    link: FdLink,
) -> Result<(), LoadError> {
    let failed =
        |what: &str, e: aya::pin::PinError| LoadError::Pinned(format!("{what} {name}: {e}"));
    if let Some(p) = bpf.program_mut(name) {
        p.pin(scope.program_path(name))
            .map_err(|e| failed("program", e))?;
    }
    link.pin(scope.link_path(name))
        .map_err(|e| failed("link of", e))?;
    Ok(())
}

/// Syscall tracepoints are attached by their tracefs id, so tracefs must be
/// mounted; mount it where the kernel expects it if nothing has (as perf does).
fn ensure_tracefs() -> Result<(), LoadError> {
    let dir = Path::new("/sys/kernel/tracing");
    if dir.join("events").is_dir() || Path::new("/sys/kernel/debug/tracing/events").is_dir() {
        return Ok(());
    }
    nix::mount::mount(
        Some("tracefs"),
        dir,
        Some("tracefs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| LoadError::NoTracefs(e.to_string()))
}

/// Fills `exe_by_pid` for processes that were running before sockfilter,
/// with their parents. Their exec ids are [`SEEDED_EXEC_ID`] | pid: unique
/// among them, and never one the kernel gives.
fn seed_executables(bpf: &mut Ebpf) {
    let Some(map) = bpf.map_mut("exe_by_pid") else {
        return;
    };
    let Ok(mut m) = BpfHashMap::<&mut MapData, u32, SfExe>::try_from(map) else {
        return;
    };
    let records: HashMap<u32, SfExe> = crate::procfs::pids()
        .into_iter()
        .filter_map(|pid| Some((pid, seed_record(pid)?)))
        .collect();
    for (&pid, x) in &records {
        let mut x = *x;
        if records.contains_key(&x.ppid) {
            x.parent_exec_id = SEEDED_EXEC_ID | u64::from(x.ppid);
        }
        // BPF_NOEXIST: an exec seen by the kernel since attach is newer.
        let _ = m.insert(pid, x, 1 /* BPF_NOEXIST */);
    }
}

/// A process's record as /proc shows it (parent_exec_id not yet known).
fn seed_record(pid: u32) -> Option<SfExe> {
    let path = crate::procfs::exe(pid)?;
    let bytes = path.as_bytes();
    // The file itself, through the /proc link (whatever path led to it).
    let (dev, ino) = crate::enforce::file_identity(&format!("/proc/{pid}/exe"))?;
    let mut x = SfExe {
        len: 0,
        truncated: 0,
        ino,
        dev,
        ppid: crate::procfs::ppid(pid).unwrap_or(0),
        exec_id: SEEDED_EXEC_ID | u64::from(pid),
        parent_exec_id: 0,
        path: [0; EXE_LEN],
    };
    // The kernel keeps at most EXE_LEN - 1 bytes (resolve_path).
    if bytes.len() >= EXE_LEN {
        x.truncated = 1;
    } else {
        x.len = bytes.len() as u32;
        x.path[..bytes.len()].copy_from_slice(bytes);
    }
    Some(x)
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
