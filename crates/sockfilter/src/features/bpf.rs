//! The bpf(2) calls behind the probes: load a program of a few instructions,
//! attach it the way sockfilter would, and report the kernel's answer.
//!
//! aya loads programs from ELF objects; a probe needs a program of a given
//! type, expected attach type and BTF target, which is one `BPF_PROG_LOAD`.
//! The per-namespace tag program of socket lookup ([`crate::netns_tag`]) is
//! built and loaded the same way. The system call itself is
//! [`crate::bpf_syscall`]'s.

use crate::bpf_syscall::{bpf_fd, zeroed_attr};
use aya_obj::generated::{bpf_attach_type, bpf_cmd, bpf_prog_type};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// One BPF instruction, encoded as the kernel reads it (`struct bpf_insn`).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct Insn([u8; 8]);

impl Insn {
    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        let mut b = [0u8; 8];
        b[0] = code;
        // dst_reg:4 and src_reg:4 share one byte; the bit-field order
        // follows the byte order.
        b[1] = if cfg!(target_endian = "little") {
            (src << 4) | (dst & 0xf)
        } else {
            (dst << 4) | (src & 0xf)
        };
        b[2..4].copy_from_slice(&off.to_ne_bytes());
        b[4..8].copy_from_slice(&imm.to_ne_bytes());
        Insn(b)
    }

    /// `r0 = imm`
    pub(crate) fn ret_imm(imm: i32) -> Insn {
        Insn::new(0xb7, 0, 0, 0, imm) // BPF_ALU64 | BPF_MOV | BPF_K
    }

    /// `exit`
    pub(crate) fn exit() -> Insn {
        Insn::new(0x95, 0, 0, 0, 0)
    }

    /// `dst = *(u64 *)(src + off)`
    pub(crate) fn load_u64(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(0x79, dst, src, off, 0) // BPF_LDX | BPF_MEM | BPF_DW
    }

    /// `if dst == imm goto +off`
    pub(crate) fn jump_if_eq(dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(0x15, dst, 0, off, imm) // BPF_JMP | BPF_JEQ | BPF_K
    }

    /// `dst = src`
    pub(crate) fn mov(dst: u8, src: u8) -> Insn {
        Insn::new(0xbf, dst, src, 0, 0) // BPF_ALU64 | BPF_MOV | BPF_X
    }

    /// `*(u32 *)(dst + off) = imm`
    pub(crate) fn store_imm_u32(dst: u8, off: i16, imm: i32) -> Insn {
        Insn::new(0x62, dst, 0, off, imm) // BPF_ST | BPF_MEM | BPF_W
    }

    /// `*(u64 *)(dst + off) = src`
    pub(crate) fn store_u64(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(0x7b, dst, src, off, 0) // BPF_STX | BPF_MEM | BPF_DW
    }

    /// `dst += imm`
    pub(crate) fn add_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(0x07, dst, 0, 0, imm) // BPF_ALU64 | BPF_ADD | BPF_K
    }

    /// `dst = imm` for a 64-bit constant (two instructions).
    pub(crate) fn load_imm64(dst: u8, imm: u64) -> [Insn; 2] {
        Insn::ld_imm64(dst, 0, imm)
    }

    /// `dst = the map whose descriptor is fd` (two instructions).
    pub(crate) fn load_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
        Insn::ld_imm64(dst, 1, fd as u32 as u64) // src_reg = BPF_PSEUDO_MAP_FD
    }

    fn ld_imm64(dst: u8, src: u8, imm: u64) -> [Insn; 2] {
        [
            Insn::new(0x18, dst, src, 0, imm as u32 as i32), // BPF_LD | BPF_IMM | BPF_DW
            Insn::new(0, 0, 0, 0, (imm >> 32) as u32 as i32),
        ]
    }

    /// Call of BPF helper number `id`.
    pub(crate) fn call_helper(id: i32) -> Insn {
        Insn::new(0x85, 0, 0, 0, id) // BPF_JMP | BPF_CALL
    }

    /// Call of the kernel function with this id in vmlinux's BTF.
    pub(crate) fn call_kfunc(btf_id: u32) -> Insn {
        // BPF_JMP | BPF_CALL, src_reg = BPF_PSEUDO_KFUNC_CALL
        Insn::new(0x85, 0, 2, 0, btf_id as i32)
    }
}

/// The trivial program: `return imm`.
pub(super) fn returning(imm: i32) -> [Insn; 2] {
    [Insn::ret_imm(imm), Insn::exit()]
}

/// What a program load is for.
pub(crate) struct ProgSpec<'a> {
    pub prog_type: bpf_prog_type,
    pub attach: Option<bpf_attach_type>,
    /// The BTF id of the attach target in vmlinux (0: none).
    pub attach_btf_id: u32,
    pub insns: &'a [Insn],
}

/// Loads a program; on failure the error carries the verifier's last words.
pub(super) fn load(spec: &ProgSpec) -> Result<OwnedFd, String> {
    load_named(spec, "sf_probe")
}

/// Loads a program named `name` (at most 15 bytes: `bpftool prog` shows it);
/// on failure the error carries the verifier's last words.
pub(crate) fn load_named(spec: &ProgSpec, name: &str) -> Result<OwnedFd, String> {
    const LICENSE: &[u8] = b"GPL\0";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = zeroed_attr();
    // SAFETY: writing the BPF_PROG_LOAD member of the union.
    let u = unsafe { &mut attr.__bindgen_anon_3 };
    u.prog_type = spec.prog_type as u32;
    u.insn_cnt = spec.insns.len() as u32;
    u.insns = spec.insns.as_ptr() as u64;
    u.license = LICENSE.as_ptr() as u64;
    u.expected_attach_type = spec.attach.map_or(0, |a| a as u32);
    u.attach_btf_id = spec.attach_btf_id;
    for (d, s) in u.prog_name.iter_mut().take(15).zip(name.as_bytes()) {
        *d = *s as libc::c_char;
    }
    u.log_level = 1;
    u.log_size = log.len() as u32;
    u.log_buf = log.as_mut_ptr() as u64;
    // SAFETY: insns, LICENSE and log outlive the call, log for the size
    // given; BPF_PROG_LOAD returns a new descriptor.
    unsafe { bpf_fd(bpf_cmd::BPF_PROG_LOAD, &mut attr) }.map_err(|e| {
        let text = String::from_utf8_lossy(&log);
        let last = text
            .trim_end_matches('\0')
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty() && !l.starts_with("processed "))
            .unwrap_or("")
            .to_string();
        if last.is_empty() {
            format!("the kernel refused to load it: {e}")
        } else {
            format!("the kernel refused to load it: {e} (verifier: {last})")
        }
    })
}

/// Attaches a tracing or LSM program to its BTF target
/// (`BPF_RAW_TRACEPOINT_OPEN` with no name). The link lives as long as the fd.
pub(super) fn attach_btf_target(prog: &OwnedFd) -> Result<OwnedFd, String> {
    let mut attr = zeroed_attr();
    // SAFETY: writing the BPF_RAW_TRACEPOINT_OPEN member of the union.
    let u = unsafe { &mut attr.raw_tracepoint };
    u.name = 0;
    u.prog_fd = prog.as_raw_fd() as u32;
    // SAFETY: no pointer set (no name: the BTF target); the command returns
    // a new descriptor.
    unsafe { bpf_fd(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN, &mut attr) }.map_err(attach_error)
}

/// `BPF_LINK_CREATE` of an iterator program.
pub(super) fn iterator_link(prog: &OwnedFd) -> Result<OwnedFd, String> {
    let mut attr = zeroed_attr();
    // SAFETY: writing the BPF_LINK_CREATE member of the union.
    let u = unsafe { &mut attr.link_create };
    u.__bindgen_anon_1.prog_fd = prog.as_raw_fd() as u32;
    u.attach_type = bpf_attach_type::BPF_TRACE_ITER as u32;
    // SAFETY: descriptors only, no pointer; BPF_LINK_CREATE returns a new
    // descriptor.
    unsafe { bpf_fd(bpf_cmd::BPF_LINK_CREATE, &mut attr) }.map_err(attach_error)
}

/// `BPF_LINK_CREATE` of `prog` on `target` (a network namespace for
/// socket lookup). The link lives as long as the fd, or a pin of it.
pub(crate) fn link_create(
    prog: &OwnedFd,
    target: std::os::fd::BorrowedFd<'_>,
    attach: bpf_attach_type,
) -> Result<OwnedFd, String> {
    let mut attr = zeroed_attr();
    // SAFETY: writing the BPF_LINK_CREATE member of the union.
    let u = unsafe { &mut attr.link_create };
    u.__bindgen_anon_1.prog_fd = prog.as_raw_fd() as u32;
    u.__bindgen_anon_2.target_fd = target.as_raw_fd() as u32;
    u.attach_type = attach as u32;
    // SAFETY: descriptors only, no pointer; BPF_LINK_CREATE returns a new
    // descriptor.
    unsafe { bpf_fd(bpf_cmd::BPF_LINK_CREATE, &mut attr) }.map_err(attach_error)
}

/// Runs an iterator to its end (`BPF_ITER_CREATE`, then read until EOF).
pub(super) fn run_iterator(link: &OwnedFd) -> Result<(), String> {
    let mut attr = zeroed_attr();
    attr.iter_create.link_fd = link.as_raw_fd() as u32;
    // SAFETY: the link's descriptor only, no pointer; BPF_ITER_CREATE
    // returns a new descriptor.
    let fd = unsafe { bpf_fd(bpf_cmd::BPF_ITER_CREATE, &mut attr) }
        .map_err(|e| format!("creating the iterator failed: {e}"))?;
    let mut f = std::fs::File::from(fd);
    let mut sink = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut sink)
        .map_err(|e| format!("reading the iterator failed: {e}"))?;
    Ok(())
}

/// Attaches a tracepoint or kprobe program to a perf event
/// (`perf_event_open` + `PERF_EVENT_IOC_SET_BPF`).
pub(super) fn attach_perf_event(
    prog: &OwnedFd,
    pmu_type: u32,
    config: u64,
    kprobe_func: Option<&std::ffi::CStr>,
) -> Result<OwnedFd, String> {
    // struct perf_event_attr, as far as it is needed (PERF_ATTR_SIZE_VER5).
    #[repr(C)]
    #[derive(Default)]
    struct PerfEventAttr {
        type_: u32,
        size: u32,
        config: u64,
        sample_period: u64,
        sample_type: u64,
        read_format: u64,
        flags: u64,
        wakeup_events: u32,
        bp_type: u32,
        config1: u64,
        config2: u64,
        branch_sample_type: u64,
        sample_regs_user: u64,
        sample_stack_user: u32,
        clockid: i32,
        sample_regs_intr: u64,
        aux_watermark: u32,
        sample_max_stack: u16,
        reserved: u16,
    }
    let mut pa = PerfEventAttr {
        type_: pmu_type,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config,
        sample_period: 1,
        wakeup_events: 1,
        ..Default::default()
    };
    if let Some(func) = kprobe_func {
        pa.config1 = func.as_ptr() as u64; // kprobe_func
    }
    // SAFETY: pa is a valid perf_event_attr; pid -1, cpu 0: all processes.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &pa as *const PerfEventAttr,
            -1,
            0,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(format!(
            "perf_event_open failed: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: a new fd we own.
    let event = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
    // SAFETY: ioctl on our perf event fd with a program fd by value.
    if unsafe { libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd()) } < 0 {
        return Err(format!(
            "attaching to the perf event failed: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(event)
}

/// `PERF_TYPE_TRACEPOINT` (linux/perf_event.h).
pub(super) const PERF_TYPE_TRACEPOINT: u32 = 2;
/// `PERF_FLAG_FD_CLOEXEC` (linux/perf_event.h).
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

fn attach_error(e: io::Error) -> String {
    // ENOTSUPP (524) is the kernel-internal "not supported" that leaks out
    // of trampoline attachment; name it.
    if e.raw_os_error() == Some(524) {
        "loaded, but the kernel cannot attach it (ENOTSUPP: no BPF trampoline here)".into()
    } else {
        format!("loaded, but attaching failed: {e}")
    }
}
