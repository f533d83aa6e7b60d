//! What the running kernel offers for each mechanism sockfilter uses, found
//! by trying it: loading (and, where loading proves nothing, attaching or
//! running) a program of a few instructions for each program type and
//! attach point, creating the map types, asking sock_diag, installing a
//! seccomp listener in a child process.
//!
//! A kernel version says little: distributions backport features and turn
//! them off, and a program can load on a kernel where it never runs (an LSM
//! program where `bpf` is not an active LSM). `sockfilter doctor` prints
//! [`probe_all`]; `watch` and `enforce` print [`degraded_line`] at start.

pub(crate) mod bpf;
mod host;
mod probes;

/// A sockfilter command, for what each feature matters to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `sockfilter watch` (and everything built on the event stream).
    Watch,
    /// `sockfilter enforce`.
    Enforce,
    /// `sockfilter supervise`.
    Supervise,
}

/// One mechanism sockfilter uses (or could use) from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// The kernel's own BTF, which every CO-RE program needs.
    Btf,
    /// `tp_btf` programs on the scheduler and TCP-state tracepoints.
    BtfTracepoints,
    /// Classic tracepoint programs on the accept/connect syscall exits.
    SyscallTracepoints,
    /// tracefs, through which syscall tracepoints are attached.
    Tracefs,
    /// `cgroup/sock_create`, `post_bind4/6`, `sock_release`.
    CgroupSockHooks,
    /// `sockops`, whose TCP listen callback reports `listen()`.
    SockOps,
    /// `cgroup/bind4/6`, `connect4/6`, `sendmsg4/6`.
    CgroupAddrHooks,
    /// `sk_lookup`, which refuses inbound connections.
    SkLookup,
    /// `bpf_get_netns_cookie()` in `sk_lookup`: which namespace a
    /// connection is for. Not needed: enforce hands each namespace's cookie
    /// to socket lookup itself ([`crate::netns_tag`]).
    SkLookupNetns,
    /// The BPF ring buffer that carries events.
    RingBuf,
    /// Socket local storage, where each socket's owner is kept.
    SkStorage,
    /// A cgroup v2 hierarchy.
    Cgroup2,
    /// bpffs, where enforce pins its programs and maps.
    Bpffs,
    /// sock_diag's `SOCK_DESTROY`.
    SockDiagDestroy,
    /// BPF iterators over TCP and UDP sockets.
    SocketIterators,
    /// The `bpf_sock_destroy()` kfunc, from a socket iterator.
    SockDestroyKfunc,
    /// BPF LSM: LSM programs attach and `bpf` is an active LSM.
    BpfLsm,
    /// kprobe programs.
    Kprobes,
    /// fentry programs (BPF trampolines).
    Fentry,
    /// seccomp user notification with a listener fd.
    SeccompUserNotif,
    /// `SECCOMP_IOCTL_NOTIF_ADDFD` with `SECCOMP_ADDFD_FLAG_SEND`.
    SeccompAddFdSend,
    /// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`.
    SeccompSyncWakeUp,
    /// User namespaces created without privileges.
    UnprivilegedUserns,
    /// Landlock network rules (ABI 4): supervise's TCP backstop.
    LandlockNet,
}

/// What the probe of a feature found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// It works; the text says what was tried or found.
    Available(String),
    /// It does not; the text says what failed.
    Missing(String),
    /// The probe could not tell (for example: not run as root).
    Unknown(String),
}

impl Status {
    /// Some(true) available, Some(false) missing, None unknown.
    pub fn available(&self) -> Option<bool> {
        match self {
            Status::Available(_) => Some(true),
            Status::Missing(_) => Some(false),
            Status::Unknown(_) => None,
        }
    }

    /// Ok when available, otherwise Err(why), e.g. for
    /// `sockfilter_testkit::require(feature.id(), status.as_result())`.
    pub fn as_result(&self) -> Result<(), String> {
        match self {
            Status::Available(_) => Ok(()),
            Status::Missing(why) => Err(why.clone()),
            Status::Unknown(why) => Err(format!("cannot tell: {why}")),
        }
    }

    /// What the probe found or why it failed.
    pub fn detail(&self) -> &str {
        match self {
            Status::Available(s) | Status::Missing(s) | Status::Unknown(s) => s,
        }
    }
}

/// A feature and what its probe found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The feature.
    pub feature: Feature,
    /// What its probe found.
    pub status: Status,
}

impl Feature {
    /// Every feature, in the order `doctor` prints them.
    pub const ALL: &'static [Feature] = &[
        Feature::Btf,
        Feature::Cgroup2,
        Feature::Tracefs,
        Feature::RingBuf,
        Feature::SkStorage,
        Feature::BtfTracepoints,
        Feature::SyscallTracepoints,
        Feature::CgroupSockHooks,
        Feature::SockOps,
        Feature::CgroupAddrHooks,
        Feature::SkLookup,
        Feature::SkLookupNetns,
        Feature::SockDiagDestroy,
        Feature::SocketIterators,
        Feature::SockDestroyKfunc,
        Feature::BpfLsm,
        Feature::Kprobes,
        Feature::Fentry,
        Feature::Bpffs,
        Feature::SeccompUserNotif,
        Feature::SeccompAddFdSend,
        Feature::SeccompSyncWakeUp,
        Feature::LandlockNet,
        Feature::UnprivilegedUserns,
    ];

    /// A stable identifier, for `--json`.
    pub fn id(self) -> &'static str {
        self.text().0
    }

    /// What the feature is, for people.
    pub fn name(self) -> &'static str {
        self.text().1
    }

    /// What sockfilter does when the kernel lacks the feature.
    pub fn without(self) -> &'static str {
        self.text().2
    }

    /// The commands that cannot start without it.
    pub fn required_by(self) -> &'static [Command] {
        use Command::*;
        use Feature::*;
        match self {
            Btf | BtfTracepoints | SyscallTracepoints | Tracefs | CgroupSockHooks | SockOps
            | RingBuf | SkStorage | Cgroup2 => &[Watch, Enforce],
            CgroupAddrHooks | SkLookup | Bpffs => &[Enforce],
            SeccompUserNotif => &[Supervise],
            _ => &[],
        }
    }

    /// The commands that work less well without it (but still start).
    pub fn degrades(self) -> &'static [Command] {
        use Command::*;
        use Feature::*;
        match self {
            SockDiagDestroy | SocketIterators | SockDestroyKfunc | BpfLsm => &[Enforce],
            SeccompAddFdSend | SeccompSyncWakeUp | LandlockNet => &[Supervise],
            _ => &[],
        }
    }

    /// (id, name, without)
    fn text(self) -> (&'static str, &'static str, &'static str) {
        use Feature::*;
        match self {
            Btf => ("btf", "kernel BTF (/sys/kernel/btf/vmlinux)",
                "watch and enforce cannot start: the BPF programs are CO-RE and need CONFIG_DEBUG_INFO_BTF=y"),
            BtfTracepoints => ("tp_btf", "tp_btf: sched_process_exec, sched_process_fork, inet_sock_set_state",
                "watch and enforce cannot start (process executables and TCP state changes come from these)"),
            SyscallTracepoints => ("syscall_tracepoints", "tracepoints: syscalls sys_exit_accept, sys_exit_accept4, sys_exit_connect",
                "watch and enforce cannot start (accept and connect results come from these; needs CONFIG_FTRACE_SYSCALLS=y)"),
            Tracefs => ("tracefs", "tracefs (mounted or mountable)",
                "watch and enforce cannot attach the syscall tracepoints and do not start"),
            CgroupSockHooks => ("cgroup_sock", "cgroup/sock_create, cgroup/post_bind4, cgroup/post_bind6, cgroup/sock_release",
                "watch and enforce cannot start (socket owners, binds and closes come from these)"),
            SockOps => ("sockops", "sockops (BPF_SOCK_OPS_TCP_LISTEN_CB)",
                "watch and enforce cannot start (listen events come from it)"),
            CgroupAddrHooks => ("cgroup_sock_addr", "cgroup/bind4, bind6, connect4, connect6, sendmsg4, sendmsg6",
                "enforce cannot start (denied bind, connect and UDP sends fail through these); watch is unaffected"),
            SkLookup => ("sk_lookup", "sk_lookup (socket lookup, per network namespace)",
                "enforce cannot start (denied peers and listeners are refused here); watch is unaffected"),
            SkLookupNetns => ("sk_lookup_netns", "bpf_get_netns_cookie() in sk_lookup",
                "nothing changes: enforce tells network namespaces apart in socket lookup with a small program per namespace that hands the namespace's cookie to sf_sk_lookup"),
            RingBuf => ("ringbuf", "BPF ring buffer map",
                "watch and enforce cannot start (events travel through it)"),
            SkStorage => ("sk_storage", "socket local storage map",
                "watch and enforce cannot start (each socket's owner is kept in it)"),
            Cgroup2 => ("cgroup2", "cgroup v2 hierarchy mounted",
                "watch and enforce cannot start: mount one (mount -t cgroup2 none /sys/fs/cgroup/unified)"),
            Bpffs => ("bpffs", "bpffs (mounted or mountable at /sys/fs/bpf)",
                "enforce (and the daemon with a policy) cannot start: its programs and maps are pinned in bpffs so that enforcement outlives a crash"),
            SockDiagDestroy => ("sock_diag_destroy", "SOCK_DESTROY through sock_diag (CONFIG_INET_DIAG_DESTROY, tcp_diag, udp_diag)",
                "enforce still refuses connections to a denied listener (sk_lookup) but cannot close it, nor a denied socket that already exists"),
            SocketIterators => ("bpf_iterators", "BPF socket iterators (iter/tcp, iter/udp)",
                "destroying a socket falls back to sock_diag, which finds it by address (on some kernels not every member of an SO_REUSEPORT group)"),
            SockDestroyKfunc => ("bpf_sock_destroy", "bpf_sock_destroy() kfunc from a socket iterator (Linux 6.5+)",
                "destroying a socket falls back to sock_diag, which finds it by address (on some kernels not every member of an SO_REUSEPORT group)"),
            BpfLsm => ("bpf_lsm", "BPF LSM (lsm/socket_listen attaches and `bpf` is an active LSM)",
                "enforce cannot make listen() fail: a denied listener is refused in socket lookup and destroyed; denied bind() and connect() still fail with EPERM (cgroup hooks)"),
            Kprobes => ("kprobes", "kprobe programs (kprobe PMU)",
                "nothing changes: sockfilter uses tracepoints and cgroup hooks, not kprobes"),
            Fentry => ("fentry", "fentry programs (BPF trampolines)",
                "nothing changes: sockfilter uses tp_btf and tracepoints, not fentry"),
            SeccompUserNotif => ("seccomp_user_notif", "seccomp user notification (SECCOMP_FILTER_FLAG_NEW_LISTENER)",
                "supervise cannot start"),
            SeccompAddFdSend => ("seccomp_addfd_send", "seccomp SECCOMP_IOCTL_NOTIF_ADDFD with SECCOMP_ADDFD_FLAG_SEND (Linux 5.14+)",
                "supervise cannot hand an accepted connection to the program: supervised accept() calls fail"),
            SeccompSyncWakeUp => ("seccomp_sync_wake_up", "seccomp SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (Linux 6.6+)",
                "supervise works, with about twice the latency per held call"),
            LandlockNet => ("landlock_net", "Landlock network rules (ABI 4, Linux 6.7+, landlock in lsm=)",
                "supervise has no kernel backstop for TCP: a multi-threaded program that races dup2() against a call on a non-IP socket can get a TCP bind or connect past the supervisor undecided (docs/security.md)"),
            UnprivilegedUserns => ("unprivileged_userns", "user namespaces without privileges",
                "nothing changes for sockfilter (where available, users can make network namespaces: enforce attaches socket lookup to each one it sees)"),
        }
    }
}

/// Probes every feature.
pub fn probe_all() -> Vec<Report> {
    let mut p = probes::Prober::new();
    Feature::ALL
        .iter()
        .map(|&feature| Report {
            feature,
            status: p.probe(feature),
        })
        .collect()
}

/// Probes one feature.
pub fn probe(feature: Feature) -> Status {
    probes::Prober::new().probe(feature)
}

/// The features that `command` would use but this kernel lacks, probed now
/// (only those, so this is quick).
pub fn degraded(command: Command) -> Vec<Report> {
    let mut p = probes::Prober::new();
    Feature::ALL
        .iter()
        .filter(|f| f.degrades().contains(&command))
        .map(|&feature| Report {
            feature,
            status: p.probe(feature),
        })
        .filter(|r| r.status.available() == Some(false))
        .collect()
}

/// One line naming what `command` cannot do on this kernel, or None when
/// nothing is degraded: "degraded on this kernel: BPF LSM (...) missing: ...".
pub fn degraded_line(command: Command) -> Option<String> {
    let missing = degraded(command);
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|r| format!("{} unavailable, so {}", r.feature.id(), r.feature.without()))
        .collect();
    Some(format!(
        "degraded on this kernel: {} (`sockfilter doctor` tells more)",
        parts.join("; ")
    ))
}
