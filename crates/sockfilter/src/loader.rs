//! Loading sockfilter's BPF object and attaching its programs.
//!
//! Everything attached here is owned by [`Probe`]: aya detaches every link
//! and unloads every program when it is dropped, so a normal exit, an error
//! or a signal handled by the caller leaves nothing behind.

use crate::abi::{SfExe, COUNTER_LOST, EXE_LEN};
use aya::maps::{CgroupArray, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{
    BtfTracePoint, CgroupAttachMode, CgroupSock, CgroupSockAddr, Lsm, SkLookup, SockOps, TracePoint,
};
use aya::{Btf, Ebpf, EbpfLoader};
use std::fs::File;
use std::os::fd::AsRawFd;
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
}

/// The loaded, attached BPF programs and their maps.
pub struct Probe {
    bpf: Ebpf,
    cgroup_path: PathBuf,
    attached: Vec<&'static str>,
}

struct Hook {
    program: &'static str,
    kind: HookKind,
    what: &'static str,
}

enum HookKind {
    Cgroup,
    /// cgroup sock_addr hooks: enforcement only.
    SockAddr,
    /// cgroup sock_addr hooks that BPF LSM hooks replace where `bpf` is an
    /// active LSM: enforcement only.
    SockAddrUnlessLsm,
    /// BPF LSM hooks: enforcement only, where `bpf` is an active LSM.
    Lsm(&'static str),
    SockOps,
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
        program: "sf_sendmsg4",
        kind: HookKind::SockAddr,
        what: "cgroup/sendmsg4",
    },
    Hook {
        program: "sf_sendmsg6",
        kind: HookKind::SockAddr,
        what: "cgroup/sendmsg6",
    },
];

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
        let filter: u8 = opts.cgroup.is_some().into();
        let enforce: u8 = opts.enforce.into();
        let lookup_netns: u8 = (opts.enforce
            && crate::features::probe(crate::features::Feature::SkLookupNetns).available()
                == Some(true))
        .into();
        let lsm = opts.enforce
            && crate::features::probe(crate::features::Feature::BpfLsm).available() == Some(true);
        let cfg_lsm: u8 = lsm.into();
        let mut bpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global("cfg_filter_cgroup", &filter, true)
            .override_global("cfg_enforce", &enforce, true)
            .override_global("cfg_lookup_netns", &lookup_netns, true)
            .override_global("cfg_lsm", &cfg_lsm, true)
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
        for hook in HOOKS {
            let wanted = match hook.kind {
                HookKind::SockAddr => opts.enforce,
                HookKind::SockAddrUnlessLsm => opts.enforce && !lsm,
                HookKind::Lsm(_) => lsm,
                _ => true,
            };
            if !wanted {
                continue;
            }
            attach_one(&mut bpf, hook, &btf, &cgroup).map_err(|reason| LoadError::Program {
                program: hook.program,
                hook: hook.what,
                reason,
            })?;
            attached.push(hook.program);
            if hook.program == "sf_fork" {
                // exec and fork tracking is live: record the processes that
                // already exist (never overwriting what exec just recorded).
                seed_executables(&mut bpf);
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
        Ok(Probe {
            bpf,
            cgroup_path,
            attached,
        })
    }

    /// Attaches the socket-lookup program to one network namespace (given
    /// by an open `/proc/PID/ns/net` or `/run/netns/NAME`). Enforce only.
    pub fn attach_sk_lookup(&mut self, netns: &File) -> Result<(), LoadError> {
        let p: &mut SkLookup = self
            .bpf
            .program_mut("sf_sk_lookup")
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| LoadError::Object("program sf_sk_lookup missing".into()))?;
        p.attach(netns).map_err(|e| LoadError::Program {
            program: "sf_sk_lookup",
            hook: "sk_lookup",
            reason: error_chain(&e),
        })?;
        Ok(())
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

    /// Events the kernel dropped because the ring buffer was full, summed
    /// over CPUs, since load.
    pub fn lost(&self) -> u64 {
        self.counter(COUNTER_LOST)
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
        let map = self.bpf.map("exe_by_pid")?;
        let m = BpfHashMap::<&MapData, u32, SfExe>::try_from(map).ok()?;
        let x = m.get(&pid, 0).ok()?;
        exe_string(&x)
    }
}

fn exe_string(x: &SfExe) -> Option<String> {
    if x.len == 0 || x.truncated != 0 {
        return None;
    }
    let n = (x.len as usize).min(EXE_LEN);
    Some(String::from_utf8_lossy(&x.path[..n]).into_owned())
}

fn attach_one(bpf: &mut Ebpf, hook: &Hook, btf: &Btf, cgroup: &File) -> Result<(), String> {
    let prog = bpf
        .program_mut(hook.program)
        .ok_or_else(|| "not in the object".to_string())?;
    match hook.kind {
        HookKind::Cgroup => {
            let p: &mut CgroupSock = prog.try_into().map_err(|e| error_chain(&e))?;
            p.load().map_err(|e| error_chain(&e))?;
            p.attach(cgroup, CgroupAttachMode::Single)
                .map_err(|e| error_chain(&e))?;
        }
        HookKind::Lsm(name) => {
            let p: &mut Lsm = prog.try_into().map_err(|e| error_chain(&e))?;
            p.load(name, btf).map_err(|e| error_chain(&e))?;
            p.attach().map_err(|e| error_chain(&e))?;
        }
        HookKind::SockAddr | HookKind::SockAddrUnlessLsm => {
            let p: &mut CgroupSockAddr = prog.try_into().map_err(|e| error_chain(&e))?;
            p.load().map_err(|e| error_chain(&e))?;
            p.attach(cgroup, CgroupAttachMode::Single)
                .map_err(|e| error_chain(&e))?;
        }
        HookKind::SockOps => {
            let p: &mut SockOps = prog.try_into().map_err(|e| error_chain(&e))?;
            p.load().map_err(|e| error_chain(&e))?;
            p.attach(cgroup, CgroupAttachMode::Single)
                .map_err(|e| error_chain(&e))?;
        }
        HookKind::TpBtf(name) => {
            let p: &mut BtfTracePoint = prog.try_into().map_err(|e| error_chain(&e))?;
            p.load(name, btf).map_err(|e| error_chain(&e))?;
            p.attach().map_err(|e| error_chain(&e))?;
        }
        HookKind::TracePoint(cat, name) => {
            let p: &mut TracePoint = prog.try_into().map_err(|e| error_chain(&e))?;
            p.load().map_err(|e| error_chain(&e))?;
            p.attach(cat, name).map_err(|e| error_chain(&e))?;
        }
    }
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

/// Fills `exe_by_pid` for processes that were running before sockfilter.
fn seed_executables(bpf: &mut Ebpf) {
    let Some(map) = bpf.map_mut("exe_by_pid") else {
        return;
    };
    let Ok(mut m) = BpfHashMap::<&mut MapData, u32, SfExe>::try_from(map) else {
        return;
    };
    for pid in crate::procfs::pids() {
        let Some(path) = crate::procfs::exe(pid) else {
            continue;
        };
        let bytes = path.as_bytes();
        // The file itself, through the /proc link (whatever path led to it).
        let Some((dev, ino)) = crate::enforce::file_identity(&format!("/proc/{pid}/exe")) else {
            continue;
        };
        let mut x = SfExe {
            len: 0,
            truncated: 0,
            ino,
            dev,
            _pad: 0,
            path: [0; EXE_LEN],
        };
        // The kernel keeps at most EXE_LEN - 1 bytes (resolve_path).
        if bytes.len() >= EXE_LEN {
            x.truncated = 1;
        } else {
            x.len = bytes.len() as u32;
            x.path[..bytes.len()].copy_from_slice(bytes);
        }
        // BPF_NOEXIST: an exec seen by the kernel since attach is newer.
        let _ = m.insert(pid, x, 1 /* BPF_NOEXIST */);
    }
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
