//! The hooks sockfilter attaches: which program goes where, and how each
//! kind of attachment is made (cgroup, sock_ops, LSM, tracepoints).

use super::{error_chain, last_line, Globals, LoadError, OBJECT};
use aya::programs::links::FdLink;
use aya::programs::{
    BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr,
    Lsm, SockOps, TracePoint,
};
use aya::{Btf, Ebpf, EbpfLoader};
use std::fs::File;
use std::path::Path;

/// One program and the hook it is attached to.
pub(super) struct Hook {
    pub(super) program: &'static str,
    pub(super) kind: HookKind,
    pub(super) what: &'static str,
}

/// Where and how a program is attached.
pub(super) enum HookKind {
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

pub(super) const HOOKS: &[Hook] = &[
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
pub(super) const URING_HOOKS: &[&[Hook]] = &[
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
    &[Hook {
        program: "sf_uring_overflow",
        kind: HookKind::TpBtf("io_uring_cqe_overflow"),
        what: "tp_btf/io_uring_cqe_overflow",
    }],
];

/// Hooks of one architecture: 32-bit system calls on x86_64 (bpf/compat.h).
#[cfg(target_arch = "x86_64")]
pub(super) const ARCH_HOOKS: &[Hook] = &[Hook {
    program: "sf_compat_exit",
    kind: HookKind::TpBtf("sys_exit"),
    what: "tp_btf/sys_exit (32-bit system calls)",
}];
#[cfg(not(target_arch = "x86_64"))]
pub(super) const ARCH_HOOKS: &[Hook] = &[];

/// [`load_only`] for a hook attached later (the 32-bit hook), its refusal
/// as a [`LoadError`].
pub(super) fn load_for_later(bpf: &mut Ebpf, hook: &Hook, btf: &Btf) -> Result<(), LoadError> {
    load_only(bpf, hook, btf).map_err(|reason| LoadError::Program {
        program: hook.program,
        hook: hook.what,
        reason,
    })
}

/// Loads a `tp_btf` hook's program without attaching it.
pub(super) fn load_only(bpf: &mut Ebpf, hook: &Hook, btf: &Btf) -> Result<(), String> {
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
pub(super) fn attach_loaded(bpf: &mut Ebpf, hook: &Hook) -> Result<FdLink, String> {
    let p: &mut BtfTracePoint = bpf
        .program_mut(hook.program)
        .ok_or_else(|| "not in the object".to_string())?
        .try_into()
        .map_err(|x| error_chain(&x))?;
    let id = p.attach().map_err(|x| error_chain(&x))?;
    Ok(FdLink::from(p.take_link(id).map_err(|x| error_chain(&x))?))
}

pub(super) fn attach_one(
    bpf: &mut Ebpf,
    hook: &Hook,
    btf: &Btf,
    cgroup: &File,
) -> Result<FdLink, String> {
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
pub(super) fn attach_first<'h>(
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
pub(super) fn lsm_programs_load(btf: &Btf, globals: &Globals) -> Result<(), String> {
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

/// Syscall tracepoints are attached by their tracefs id, so tracefs must be
/// mounted; mount it where the kernel expects it if nothing has (as perf does).
pub(super) fn ensure_tracefs() -> Result<(), LoadError> {
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
