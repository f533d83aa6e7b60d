//! One probe per [`Feature`]: each tries the mechanism the way sockfilter
//! uses it and turns the kernel's answer into a [`Status`].

use super::bpf::{self, Insn, ProgSpec};
use super::host;
use super::{Feature, Status};
use aya::maps::MapType;
use aya::Btf;
use aya_obj::btf::BtfKind;
use aya_obj::generated::{bpf_attach_type as At, bpf_prog_type as Pt};

/// Probes features, parsing the kernel's BTF at most once.
pub(super) struct Prober {
    btf: Option<Result<Btf, String>>,
}

impl Prober {
    pub(super) fn new() -> Prober {
        Prober { btf: None }
    }

    fn btf(&mut self) -> Result<&Btf, String> {
        self.btf
            .get_or_insert_with(|| {
                Btf::from_sys_fs().map_err(|e| format!("/sys/kernel/btf/vmlinux: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The BTF id of `name` (of `kind`) in vmlinux.
    fn btf_id(&mut self, name: &str, kind: BtfKind) -> Result<u32, String> {
        self.btf()?
            .id_by_type_name_kind(name, kind)
            .map_err(|_| format!("{name} is not in the kernel's BTF"))
    }

    pub(super) fn probe(&mut self, feature: Feature) -> Status {
        use Feature::*;
        let bpf_needs_root = !matches!(
            feature,
            Btf | Cgroup2
                | Bpffs
                | SeccompUserNotif
                | SeccompAddFdSend
                | SeccompSyncWakeUp
                | LandlockNet
                | UnprivilegedUserns
        );
        if bpf_needs_root && !nix::unistd::geteuid().is_root() {
            return Status::Unknown("cannot tell without root (probing loads BPF)".into());
        }
        match feature {
            LandlockNet => landlock_net(),
            Btf => match self.btf() {
                Ok(_) => Status::Available("/sys/kernel/btf/vmlinux parsed".into()),
                Err(e) => Status::Missing(e),
            },
            Cgroup2 => match crate::cgroup::cgroup2_mount() {
                Some(p) => Status::Available(format!("mounted at {}", p.display())),
                None => Status::Missing("no cgroup2 mount in /proc/self/mountinfo".into()),
            },
            Bpffs => match host::bpffs() {
                Ok(s) => Status::Available(s),
                Err(e) => Status::Missing(e),
            },
            Tracefs => match host::tracefs_events() {
                Ok(p) => Status::Available(format!("{}", p.display())),
                Err(e) => Status::Missing(e),
            },
            RingBuf => map_status(MapType::RingBuf),
            SkStorage => map_status(MapType::SkStorage),
            BtfTracepoints => self.btf_tracepoints(),
            SyscallTracepoints => syscall_tracepoints(),
            CgroupSockHooks => loads_with(
                Pt::BPF_PROG_TYPE_CGROUP_SOCK,
                &[
                    ("sock_create", At::BPF_CGROUP_INET_SOCK_CREATE),
                    ("post_bind4", At::BPF_CGROUP_INET4_POST_BIND),
                    ("post_bind6", At::BPF_CGROUP_INET6_POST_BIND),
                    ("sock_release", At::BPF_CGROUP_INET_SOCK_RELEASE),
                ],
                1,
            ),
            SockOps => loads_with(
                Pt::BPF_PROG_TYPE_SOCK_OPS,
                &[("sockops", At::BPF_CGROUP_SOCK_OPS)],
                1,
            ),
            CgroupAddrHooks => loads_with(
                Pt::BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
                &[
                    ("bind4", At::BPF_CGROUP_INET4_BIND),
                    ("bind6", At::BPF_CGROUP_INET6_BIND),
                    ("connect4", At::BPF_CGROUP_INET4_CONNECT),
                    ("connect6", At::BPF_CGROUP_INET6_CONNECT),
                    ("sendmsg4", At::BPF_CGROUP_UDP4_SENDMSG),
                    ("sendmsg6", At::BPF_CGROUP_UDP6_SENDMSG),
                ],
                1,
            ),
            SkLookup => loads_with(
                Pt::BPF_PROG_TYPE_SK_LOOKUP,
                &[("sk_lookup", At::BPF_SK_LOOKUP)],
                1, // SK_PASS
            ),
            SkLookupNetns => sk_lookup_netns(),
            SockDiagDestroy => match crate::destroy::sock_diag_supported() {
                Ok(()) => Status::Available(
                    "asked to destroy a TCP and a UDP socket that cannot exist: \"not found\""
                        .into(),
                ),
                Err(e) => Status::Missing(e.to_string()),
            },
            SocketIterators => self.socket_iterators(),
            SockDestroyKfunc => self.sock_destroy_kfunc(),
            BpfLsm => self.bpf_lsm(),
            Kprobes => kprobes(),
            Fentry => self.attaches_to(
                Pt::BPF_PROG_TYPE_TRACING,
                At::BPF_TRACE_FENTRY,
                "bpf_fentry_test1",
                BtfKind::Func,
            ),
            SeccompUserNotif | SeccompAddFdSend | SeccompSyncWakeUp => seccomp(feature),
            UnprivilegedUserns => userns(),
        }
    }

    fn btf_tracepoints(&mut self) -> Status {
        let mut done = Vec::new();
        for tp in [
            "sched_process_exec",
            "sched_process_fork",
            "inet_sock_set_state",
        ] {
            let typedef = format!("btf_trace_{tp}");
            match self.attaches_to(
                Pt::BPF_PROG_TYPE_TRACING,
                At::BPF_TRACE_RAW_TP,
                &typedef,
                BtfKind::Typedef,
            ) {
                Status::Available(_) => done.push(tp),
                other => return prefixed(tp, other),
            }
        }
        Status::Available(format!("loaded and attached: {}", done.join(", ")))
    }

    /// Loads a tracing/LSM program for the BTF target `name` and attaches
    /// it (for a moment: the program returns 0 and changes nothing).
    fn attaches_to(&mut self, pt: Pt, at: At, name: &str, kind: BtfKind) -> Status {
        let id = match self.btf_id(name, kind) {
            Ok(id) => id,
            Err(e) => return Status::Missing(e),
        };
        let insns = bpf::returning(0);
        let prog = match bpf::load(&ProgSpec {
            prog_type: pt,
            attach: Some(at),
            attach_btf_id: id,
            insns: &insns,
        }) {
            Ok(p) => p,
            Err(e) => return Status::Missing(e),
        };
        match bpf::attach_btf_target(&prog) {
            Ok(_link) => Status::Available(format!("loaded and attached to {name}")),
            Err(e) => Status::Missing(e),
        }
    }

    fn socket_iterators(&mut self) -> Status {
        for target in ["tcp", "udp"] {
            let id = match self.btf_id(&format!("bpf_iter_{target}"), BtfKind::Func) {
                Ok(id) => id,
                Err(e) => return Status::Missing(e),
            };
            let insns = bpf::returning(0);
            let run = bpf::load(&ProgSpec {
                prog_type: Pt::BPF_PROG_TYPE_TRACING,
                attach: Some(At::BPF_TRACE_ITER),
                attach_btf_id: id,
                insns: &insns,
            })
            .and_then(|prog| bpf::iterator_link(&prog))
            .and_then(|link| bpf::run_iterator(&link));
            if let Err(e) = run {
                return Status::Missing(format!("iter/{target}: {e}"));
            }
        }
        Status::Available("iter/tcp and iter/udp loaded, linked and run".into())
    }

    /// An iter/tcp program that calls bpf_sock_destroy() on each socket it
    /// is given; loaded (the verifier checks the call), never run.
    fn sock_destroy_kfunc(&mut self) -> Status {
        let (iter, kfunc) = match (
            self.btf_id("bpf_iter_tcp", BtfKind::Func),
            self.btf_id("bpf_sock_destroy", BtfKind::Func),
        ) {
            (Ok(i), Ok(k)) => (i, k),
            (Err(e), _) | (_, Err(e)) => return Status::Missing(e),
        };
        let insns = [
            // r2 = ctx->sk_common (struct bpf_iter__tcp: meta, sk_common, uid)
            Insn::load_u64(2, 1, 8),
            Insn::jump_if_eq(2, 0, 2),
            Insn::mov(1, 2),
            Insn::call_kfunc(kfunc),
            Insn::ret_imm(0),
            Insn::exit(),
        ];
        match bpf::load(&ProgSpec {
            prog_type: Pt::BPF_PROG_TYPE_TRACING,
            attach: Some(At::BPF_TRACE_ITER),
            attach_btf_id: iter,
            insns: &insns,
        }) {
            Ok(_) => Status::Available(
                "an iter/tcp program calling bpf_sock_destroy() passed the verifier".into(),
            ),
            Err(e) => Status::Missing(e),
        }
    }

    fn bpf_lsm(&mut self) -> Status {
        let lsms = host::active_lsms();
        let attach = self.attaches_to(
            Pt::BPF_PROG_TYPE_LSM,
            At::BPF_LSM_MAC,
            "bpf_lsm_socket_listen",
            BtfKind::Func,
        );
        let list = match &lsms {
            Ok(l) => format!("active LSMs: {}", l.join(",")),
            Err(e) => e.clone(),
        };
        let active = lsms.as_ref().is_ok_and(|l| l.iter().any(|s| s == "bpf"));
        match (attach, active) {
            (Status::Available(_), true) => Status::Available(format!(
                "lsm/socket_listen loaded and attached; {list}"
            )),
            (Status::Available(_), false) => Status::Missing(format!(
                "LSM programs load and attach but never run: `bpf` is not an active LSM ({list}; add it to the kernel's lsm= parameter)"
            )),
            (other, _) => Status::Missing(format!("{}; {list}", other.detail())),
        }
    }
}

fn prefixed(what: &str, s: Status) -> Status {
    match s {
        Status::Available(d) => Status::Available(format!("{what}: {d}")),
        Status::Missing(d) => Status::Missing(format!("{what}: {d}")),
        Status::Unknown(d) => Status::Unknown(format!("{what}: {d}")),
    }
}

fn map_status(t: MapType) -> Status {
    match aya::sys::is_map_supported(t) {
        Ok(true) => Status::Available("map created".into()),
        Ok(false) => Status::Missing("the kernel does not know this map type".into()),
        Err(e) => Status::Missing(format!("creating the map failed: {e}")),
    }
}

/// Loads a program of type `pt` once per expected attach type (the kernel
/// checks the pair at load time), returning `ret`.
fn loads_with(pt: Pt, hooks: &[(&str, At)], ret: i32) -> Status {
    let insns = bpf::returning(ret);
    for (name, at) in hooks {
        if let Err(e) = bpf::load(&ProgSpec {
            prog_type: pt,
            attach: Some(*at),
            attach_btf_id: 0,
            insns: &insns,
        }) {
            return Status::Missing(format!("{name}: {e}"));
        }
    }
    let names: Vec<&str> = hooks.iter().map(|h| h.0).collect();
    Status::Available(format!("loaded: {}", names.join(", ")))
}

/// An sk_lookup program that calls bpf_get_netns_cookie(ctx) (helper 122).
fn sk_lookup_netns() -> Status {
    /// BPF_FUNC_get_netns_cookie.
    const GET_NETNS_COOKIE: i32 = 122;
    let insns = [
        bpf::Insn::call_helper(GET_NETNS_COOKIE), // r1 is still the context
        bpf::Insn::ret_imm(1),                    // SK_PASS
        bpf::Insn::exit(),
    ];
    match bpf::load(&ProgSpec {
        prog_type: Pt::BPF_PROG_TYPE_SK_LOOKUP,
        attach: Some(At::BPF_SK_LOOKUP),
        attach_btf_id: 0,
        insns: &insns,
    }) {
        Ok(_) => Status::Available("an sk_lookup program calling it loaded".into()),
        Err(e) => Status::Missing(e),
    }
}

fn syscall_tracepoints() -> Status {
    let events = match host::tracefs_events() {
        Ok(e) => e,
        Err(e) => return Status::Missing(e),
    };
    let insns = bpf::returning(0);
    for tp in ["sys_exit_accept", "sys_exit_accept4", "sys_exit_connect"] {
        let id_file = events.join("syscalls").join(tp).join("id");
        let id = match std::fs::read_to_string(&id_file)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        {
            Some(id) => id,
            None => {
                return Status::Missing(format!(
                    "{} is missing (kernel without CONFIG_FTRACE_SYSCALLS?)",
                    id_file.display()
                ))
            }
        };
        let attached = bpf::load(&ProgSpec {
            prog_type: Pt::BPF_PROG_TYPE_TRACEPOINT,
            attach: None,
            attach_btf_id: 0,
            insns: &insns,
        })
        .and_then(|prog| bpf::attach_perf_event(&prog, bpf::PERF_TYPE_TRACEPOINT, id, None));
        if let Err(e) = attached {
            return Status::Missing(format!("{tp}: {e}"));
        }
    }
    Status::Available(
        "loaded and attached: sys_exit_accept, sys_exit_accept4, sys_exit_connect".into(),
    )
}

fn kprobes() -> Status {
    let pmu = "/sys/bus/event_source/devices/kprobe/type";
    let Some(pmu_type) = std::fs::read_to_string(pmu)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return Status::Missing(format!(
            "no kprobe PMU ({pmu} is missing: kernel without CONFIG_KPROBES or kprobe events)"
        ));
    };
    let insns = bpf::returning(0);
    let func = c"tcp_v4_connect";
    let attached = bpf::load(&ProgSpec {
        prog_type: Pt::BPF_PROG_TYPE_KPROBE,
        attach: None,
        attach_btf_id: 0,
        insns: &insns,
    })
    .and_then(|prog| bpf::attach_perf_event(&prog, pmu_type, 0, Some(func)));
    match attached {
        Ok(_) => Status::Available("loaded and attached to tcp_v4_connect".into()),
        Err(e) => Status::Missing(e),
    }
}

fn seccomp(feature: Feature) -> Status {
    let a = match host::seccomp_answers() {
        Ok(a) => a,
        Err(e) => return Status::Unknown(format!("the probe process failed: {e}")),
    };
    let err = |n: i32| std::io::Error::from_raw_os_error(n).to_string();
    if a.new_listener != 0 {
        return Status::Missing(format!(
            "installing a filter with SECCOMP_FILTER_FLAG_NEW_LISTENER failed: {}",
            err(a.new_listener)
        ));
    }
    match feature {
        Feature::SeccompAddFdSend => match a.addfd_send {
            libc::ENOENT => Status::Available(
                "the kernel knows the flag (ENOENT for a notification that does not exist)".into(),
            ),
            n => Status::Missing(format!("ADDFD with FLAG_SEND: {}", err(n))),
        },
        Feature::SeccompSyncWakeUp => match a.sync_wake_up {
            0 => Status::Available("set on a listener".into()),
            n => Status::Missing(format!("SET_FLAGS: {}", err(n))),
        },
        _ => Status::Available("a listener was installed in a child process".into()),
    }
}

fn userns() -> Status {
    let sysctl = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|v| format!("{p} = {}", v.trim()))
    };
    let notes: Vec<String> = [
        "/proc/sys/kernel/unprivileged_userns_clone",
        "/proc/sys/user/max_user_namespaces",
    ]
    .iter()
    .filter_map(|p| sysctl(p))
    .collect();
    let notes = notes.join(", ");
    match host::unprivileged_userns() {
        Ok(0) => Status::Available(format!("uid 65534 created one ({notes})")),
        Ok(n) if n < 0 => Status::Unknown(format!(
            "could not drop to uid 65534 to try: {}",
            std::io::Error::from_raw_os_error(-n)
        )),
        Ok(n) => Status::Missing(format!(
            "unshare(CLONE_NEWUSER) as uid 65534: {} ({notes})",
            std::io::Error::from_raw_os_error(n)
        )),
        Err(e) => Status::Unknown(format!("the probe process failed: {e}")),
    }
}

/// The Landlock ABI version, which says whether network rules exist (4+).
fn landlock_net() -> Status {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
    // only returns the ABI version.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    if abi < 0 {
        let e = std::io::Error::last_os_error();
        return Status::Missing(format!("landlock_create_ruleset: {e}"));
    }
    if abi < 4 {
        return Status::Missing(format!("Landlock ABI {abi}: network rules need 4"));
    }
    Status::Available(format!("Landlock ABI {abi}"))
}
