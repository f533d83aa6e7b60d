//! Rust mirror of `bpf/sockfilter.h`: the records the BPF programs write.
//!
//! Keep this file and the header in step; `tests::layout_matches_btf` reads
//! the compiled object's BTF and fails if a size or offset differs.

/// Bytes of `comm` (the kernel's TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;
/// Bytes of the executable path buffer.
pub const EXE_LEN: usize = 256;

/// `sf_event.kind`
pub mod kind {
    /// Explicit bind.
    pub const BIND: u32 = 1;
    /// TCP socket entered LISTEN.
    pub const LISTEN: u32 = 2;
    /// Outbound TCP connect, or UDP connect().
    pub const CONNECT: u32 = 3;
    /// accept() returned a connection.
    pub const ACCEPT: u32 = 4;
    /// Socket closed or released.
    pub const CLOSE: u32 = 5;
}

/// `sf_event.flags`
pub mod flags {
    /// No owner was recorded for this socket.
    pub const OWNER_UNKNOWN: u32 = 1 << 0;
    /// Byte counts are not kept for this socket (UDP).
    pub const BYTES_UNKNOWN: u32 = 1 << 1;
    /// The executable path did not fit in `exe`.
    pub const EXE_TRUNCATED: u32 = 1 << 2;
    /// The socket's start time is unknown.
    pub const DURATION_UNKNOWN: u32 = 1 << 3;
}

/// `sf_event.verdict`
pub mod verdict {
    /// No policy is loaded.
    pub const NONE: u8 = 0;
    /// Allowed by a rule or the default.
    pub const ALLOW: u8 = 1;
    /// Refused.
    pub const DENY: u8 = 2;
    /// Allowed and reported.
    pub const AUDIT: u8 = 3;
}

/// `enum sf_enforced_by`: which mechanism carried out a deny.
pub mod enforced_by {
    /// cgroup bind/connect/sendmsg/post_bind hook: the call failed with EPERM.
    pub const CGROUP: u8 = 1;
    /// Socket lookup refused the connection.
    pub const SK_LOOKUP: u8 = 2;
    /// Refused in socket lookup, then destroyed.
    pub const DESTROY: u8 = 3;
    /// BPF LSM: the system call itself failed with EPERM.
    pub const LSM: u8 = 4;

    /// The name events carry (`enforced_by`), or None.
    pub fn name(code: u8) -> Option<&'static str> {
        match code {
            CGROUP => Some("cgroup"),
            SK_LOOKUP => Some("sk_lookup"),
            DESTROY => Some("destroy"),
            LSM => Some("lsm"),
            _ => None,
        }
    }
}

/// Index of the lost-events counter in the `counters` per-CPU array.
pub const COUNTER_LOST: u32 = 0;
/// Index of the counter of refused-peer events held back by the rate limit.
pub const COUNTER_REFUSED_SUPPRESSED: u32 = 1;
/// Index of the counter of listeners enforce could not register (map full).
pub const COUNTER_LISTENERS_FULL: u32 = 2;
/// Index of the counter of processes whose executable the kernel could not
/// keep (map full).
pub const COUNTER_EXE_FULL: u32 = 3;
/// Index of the counter of accepted sockets whose owner the kernel could not
/// keep (map full).
pub const COUNTER_ACCEPTED_FULL: u32 = 4;
/// Index of the counter of UDP sockets whose endpoints the kernel could not
/// keep (map full).
pub const COUNTER_UDP_FULL: u32 = 5;
/// Index of the counter of io_uring multishot accepts the kernel could not
/// follow (map full): their connections are not reported as accepts.
pub const COUNTER_URING_FULL: u32 = 6;
/// Index of the counter of exec records that did not fit in their ring
/// buffer (`execs`): those execs' command lines and parent executables are
/// then asked of the kernel's per-process record or /proc, while they run.
pub const COUNTER_EXECS_LOST: u32 = 7;
/// Index of the counter of DNS answers the kernel could not report (the
/// ring buffer was full): their names are not learned.
pub const COUNTER_DNS_LOST: u32 = 8;
/// Index of the counter of execs of 32-bit (ia32) programs, which make
/// user space attach the 32-bit system call hook ([`crate::compat_hook`]).
pub const COUNTER_COMPAT_EXECS: u32 = 9;
/// Index of the counter of io_uring accepts and UDP connects submitted with
/// `IOSQE_CQE_SKIP_SUCCESS`: they post no completion when they succeed, so
/// they are not reported (docs/events.md, "Every path").
pub const COUNTER_URING_UNSEEN: u32 = 10;
/// Refused-peer events written per second and listener at most
/// (`SF_REFUSED_PER_SEC`); the rest are counted.
pub const REFUSED_PER_SEC: u32 = 16;

/// `struct sf_event`
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SfEvent {
    /// `bpf_ktime_get_boot_ns()` when the event happened.
    pub ts_ns: u64,
    /// Socket cookie.
    pub cookie: u64,
    /// accept: the listener's cookie.
    pub listener_cookie: u64,
    /// cgroup v2 id of the owner.
    pub cgroup_id: u64,
    /// close: payload bytes acknowledged by the peer.
    pub bytes_sent: u64,
    /// close: payload bytes received.
    pub bytes_received: u64,
    /// close: nanoseconds since creation, listen or connection.
    pub duration_ns: u64,
    /// One of [`kind`].
    pub kind: u32,
    /// Bits of [`flags`].
    pub flags: u32,
    /// Owner's thread-group id.
    pub pid: u32,
    /// Owner's real uid.
    pub uid: u32,
    /// listen: backlog. close: the TCP state the socket left.
    pub backlog: u32,
    /// Inode of the socket's network namespace (0 = unknown).
    pub netns: u32,
    /// AF_INET or AF_INET6.
    pub family: u16,
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub protocol: u16,
    /// Local port, host order.
    pub local_port: u16,
    /// Remote port, host order.
    pub remote_port: u16,
    /// Local address, network order; IPv4 in the first 4 bytes.
    pub local_addr: [u8; 16],
    /// Remote address, network order; IPv4 in the first 4 bytes.
    pub remote_addr: [u8; 16],
    /// Owner's command name, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// Bytes used in `exe`; 0 = unknown.
    pub exe_len: u32,
    /// One of [`verdict`].
    pub verdict: u8,
    /// Which loaded policy decided (enforce).
    pub policy_slot: u8,
    /// A deny: which mechanism carried it out (one of [`enforced_by`]).
    pub enforced_by: u8,
    /// Padding.
    pub _pad: u8,
    /// Index of the deciding rule + 1; 0 = the policy's default.
    pub rule: u32,
    /// A refused accept (cookie 0): refused peers of the same listener not
    /// reported (over the rate limit) since the previous reported one.
    pub suppressed: u32,
    /// The owner's parent (tgid); 0 = unknown.
    pub ppid: u32,
    /// Padding.
    pub _pad2: u32,
    /// The owner's exec (`SfExe::exec_id`); 0 = unknown.
    pub exec_id: u64,
    /// The parent's exec (`SfExe::exec_id`) when the owner last saw it; 0 = unknown.
    pub parent_exec_id: u64,
    /// Executable path (not NUL-terminated; `exe_len` bytes).
    pub exe: [u8; EXE_LEN],
}

/// Bytes of the argument buffer of an exec record (`SF_ARGS_LEN`).
pub const ARGS_LEN: usize = 512;

/// `struct sf_exec`: one exec, from the `execs` ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SfExec {
    /// The exec's id (`SfExe::exec_id`).
    pub exec_id: u64,
    /// The process that exec'd.
    pub pid: u32,
    /// Bytes used in `exe`; 0 = unknown or too long.
    pub exe_len: u32,
    /// Bytes used in `args`.
    pub args_len: u32,
    /// Non-zero if argv was longer than `args`.
    pub args_truncated: u32,
    /// The executable's path (not NUL-terminated).
    pub exe: [u8; EXE_LEN],
    /// argv, NUL-separated, as the process was exec'd with.
    pub args: [u8; ARGS_LEN],
}

impl SfExec {
    /// Reads a record from ring-buffer bytes; None if it is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<SfExec> {
        if bytes.len() < std::mem::size_of::<SfExec>() {
            return None;
        }
        // SAFETY: length checked; plain data, every bit pattern valid.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const SfExec) })
    }
}

/// The bit set in the exec ids user space gives to processes older than
/// sockfilter (the kernel's have it clear).
pub const SEEDED_EXEC_ID: u64 = 1 << 63;

/// `struct sf_exe`: a process's executable, as kept in the `exe_by_pid` map.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SfExe {
    /// Bytes used in `path`; 0 = unknown.
    pub len: u32,
    /// Non-zero if the path did not fit.
    pub truncated: u32,
    /// Inode number of the file.
    pub ino: u64,
    /// Device of the file, as the kernel encodes it (major << 20 | minor).
    pub dev: u32,
    /// The parent (tgid) when last seen; 0 = unknown.
    pub ppid: u32,
    /// Which exec this is: new at every exec, kept by a fork. The kernel's
    /// ids have the top bit clear; [`SEEDED_EXEC_ID`] marks user space's.
    pub exec_id: u64,
    /// The parent's `exec_id` when last seen; 0 = unknown.
    pub parent_exec_id: u64,
    /// The path (not NUL-terminated).
    pub path: [u8; EXE_LEN],
}

// SAFETY: plain old data, every bit pattern valid, no padding holes that
// matter (the kernel copies bytes).
unsafe impl aya::Pod for SfExe {}

/// `struct sf_proc`: a process as the BPF programs record it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SfProc {
    /// cgroup v2 id (inode of the cgroup's directory).
    pub cgroup_id: u64,
    /// Thread-group id.
    pub pid: u32,
    /// Real uid.
    pub uid: u32,
    /// Command name, NUL-padded.
    pub comm: [u8; COMM_LEN],
}

/// Depth of the cgroup ancestry a listener keeps (`SF_CGROUP_DEPTH`).
pub const CGROUP_DEPTH: usize = 16;

/// `struct sf_listen_key`: a listener's place in enforce's registry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SfListenKey {
    /// Network namespace cookie, 0 where socket lookup cannot read it.
    pub netns: u64,
    /// Local address, IPv4 as ::ffff:a.b.c.d.
    pub addr: [u8; 16],
    /// Local port, host order.
    pub port: u16,
    /// Padding.
    pub _pad: [u16; 3],
}

/// `struct sf_listener`: a registered listener and its owner.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SfListener {
    /// The listening socket's cookie.
    pub cookie: u64,
    /// The process that called listen().
    pub owner: SfProc,
    /// The owner's cgroup id and its ancestors', deepest first.
    pub cgroups: [u64; CGROUP_DEPTH],
    /// Entries used in `cgroups`.
    pub ncgroups: u32,
    /// Inode of the network namespace.
    pub netns_inum: u32,
    /// Non-zero: refused by policy.
    pub denied: u32,
    /// Refused-peer events written in the current window.
    pub reported: u32,
    /// Start of the rate-limit window (boot-time ns).
    pub window_ns: u64,
    /// Refused peers not reported since the last reported one.
    pub suppressed: u32,
    /// Non-zero: written by enforce at start for a listener older than it,
    /// whose `owner` is the lowest pid holding it then, not the process
    /// that called listen() (`_pad` in C: the kernel side always writes 0).
    pub from_snapshot: u32,
}

// SAFETY: plain old data; every bit pattern valid.
unsafe impl aya::Pod for SfListenKey {}
// SAFETY: as above.
unsafe impl aya::Pod for SfListener {}

/// One of `sf_owner.udp_dst`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SfUdpDst {
    /// Address, network order, v4-mapped.
    pub addr: [u8; 16],
    /// Port, host order.
    pub port: u16,
    /// Padding.
    pub _pad: u16,
}

/// `struct sf_owner`: a socket's owner, kept in the `sk_owner`
/// socket-local storage.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SfOwner {
    /// The owning process.
    pub proc: SfProc,
    /// Creation, listen or connection time (boot clock); 0 = unknown.
    pub start_ns: u64,
    /// TCP: this side sent the SYN.
    pub active: u32,
    /// enforce: a decision waits to be reported.
    pub pending: u8,
    /// enforce: that decision's verdict.
    pub verdict: u8,
    /// enforce: the policy slot that decided.
    pub slot: u8,
    /// enforce: next `udp_dst` slot to overwrite.
    pub udp_next: u8,
    /// enforce: the deciding rule.
    pub rule: u32,
    /// enforce: the last UDP destinations reported.
    pub udp_dst: [SfUdpDst; 4],
    /// Inode of the socket's network namespace, 0 if unknown.
    pub netns: u32,
}

// SAFETY: plain old data, every bit pattern valid.
unsafe impl aya::Pod for SfOwner {}

/// `struct sf_endpoints` (bpf/sockfilter.bpf.c): a UDP socket's endpoints,
/// kept in `udp_endpoints` by cookie so that its release can be reported.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SfEndpoints {
    /// Local address, network order; IPv4 in the first 4 bytes.
    pub local_addr: [u8; 16],
    /// Remote address, network order; IPv4 in the first 4 bytes.
    pub remote_addr: [u8; 16],
    /// Local port, host order.
    pub local_port: u16,
    /// Remote port, host order (0 = unconnected).
    pub remote_port: u16,
    /// AF_INET or AF_INET6.
    pub family: u16,
    /// Padding.
    pub _pad: u16,
    /// Inode of the socket's network namespace.
    pub netns: u32,
}

// SAFETY: plain old data, every bit pattern valid.
unsafe impl aya::Pod for SfEndpoints {}

/// `SF_DNS_MAGIC`: the first 8 bytes of a [`SfDnsAnswer`] record.
pub const DNS_MAGIC: u64 = 0xf5d0_d25a_6e73_0000;
/// `SF_DNS_ADDRS`
pub const DNS_ADDRS: usize = 8;
/// `SF_DNS_NAME_LEN`
pub const DNS_NAME_LEN: usize = 256;

/// `struct sf_dns_answer` (bpf/dns.h): one DNS answer with addresses, as
/// the kernel saw it arrive.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SfDnsAnswer {
    /// [`DNS_MAGIC`].
    pub magic: u64,
    /// `bpf_ktime_get_boot_ns()`.
    pub ts_ns: u64,
    /// Inode of the receiving socket's network namespace, 0 if unknown.
    pub netns: u32,
    /// Owner of the receiving socket, 0 if unknown.
    pub pid: u32,
    /// Addresses used in `addr`.
    pub naddrs: u16,
    /// Bytes of `name`: the question, wire format, without the root label.
    pub name_len: u16,
    /// Padding.
    pub _pad: u32,
    /// TTL of each address, seconds.
    pub ttl: [u32; DNS_ADDRS],
    /// 4 (A record, v4-mapped in `addr`) or 6 (AAAA).
    pub family: [u8; DNS_ADDRS],
    /// The addresses, network order.
    pub addr: [[u8; 16]; DNS_ADDRS],
    /// The question name, wire format.
    pub name: [u8; DNS_NAME_LEN],
}

impl SfDnsAnswer {
    /// The record, if `bytes` is one (the right size and magic); sf_event
    /// records share the ring buffer and start with a boot-clock time,
    /// never the magic.
    pub fn from_bytes(bytes: &[u8]) -> Option<SfDnsAnswer> {
        if bytes.len() != std::mem::size_of::<SfDnsAnswer>()
            || bytes[..8] != DNS_MAGIC.to_ne_bytes()
        {
            return None;
        }
        // SAFETY: length checked; repr(C) plain data, every bit pattern valid.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const SfDnsAnswer) })
    }
}

/// Why a ring-buffer record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record is shorter than `struct sf_event`.
    #[error("record of {0} bytes is shorter than an event ({size} bytes)", size = std::mem::size_of::<SfEvent>())]
    Short(usize),
    /// The record's kind is not one this build knows.
    #[error("record has unknown kind {0}")]
    UnknownKind(u32),
    /// The record's address family is neither AF_INET nor AF_INET6.
    #[error("record has unknown address family {0}")]
    UnknownFamily(u16),
    /// The record's protocol is neither TCP nor UDP.
    #[error("record has unknown protocol {0}")]
    UnknownProtocol(u16),
}

impl SfEvent {
    /// Reads a record from ring-buffer bytes, checking everything the
    /// decoder relies on. Never panics, whatever the bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<SfEvent, DecodeError> {
        if bytes.len() < std::mem::size_of::<SfEvent>() {
            return Err(DecodeError::Short(bytes.len()));
        }
        // SAFETY: length checked above; SfEvent is repr(C) plain data for
        // which every bit pattern is valid; read_unaligned has no alignment need.
        let ev = unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const SfEvent) };
        if !(kind::BIND..=kind::CLOSE).contains(&ev.kind) {
            return Err(DecodeError::UnknownKind(ev.kind));
        }
        if ev.family != libc::AF_INET as u16 && ev.family != libc::AF_INET6 as u16 {
            return Err(DecodeError::UnknownFamily(ev.family));
        }
        if ev.protocol != libc::IPPROTO_TCP as u16 && ev.protocol != libc::IPPROTO_UDP as u16 {
            return Err(DecodeError::UnknownProtocol(ev.protocol));
        }
        Ok(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Vec<u8> {
        let mut ev: SfEvent = unsafe { std::mem::zeroed() };
        ev.kind = kind::LISTEN;
        ev.family = libc::AF_INET as u16;
        ev.protocol = libc::IPPROTO_TCP as u16;
        let p = &ev as *const SfEvent as *const u8;
        unsafe { std::slice::from_raw_parts(p, std::mem::size_of::<SfEvent>()) }.to_vec()
    }

    #[test]
    fn short_and_unknown_records_are_errors_not_panics() {
        assert!(SfEvent::from_bytes(&valid()).is_ok());
        for n in [0, 1, 8, 100, std::mem::size_of::<SfEvent>() - 1] {
            assert_eq!(
                SfEvent::from_bytes(&valid()[..n]).unwrap_err(),
                DecodeError::Short(n)
            );
        }
        let mut b = valid();
        b[56..60].copy_from_slice(&99u32.to_ne_bytes());
        assert_eq!(
            SfEvent::from_bytes(&b).unwrap_err(),
            DecodeError::UnknownKind(99)
        );
        let mut b = valid();
        b[80..82].copy_from_slice(&1u16.to_ne_bytes());
        assert_eq!(
            SfEvent::from_bytes(&b).unwrap_err(),
            DecodeError::UnknownFamily(1)
        );
        // Arbitrary bytes never panic.
        let mut seed = 0x1234_5678u32;
        for _ in 0..1000 {
            let bytes: Vec<u8> = (0..std::mem::size_of::<SfEvent>())
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = SfEvent::from_bytes(&bytes);
        }
    }
}

/// Policy map records (`bpf/sockfilter.h`, the enforce section).
pub mod policy {
    use super::COMM_LEN;

    /// `SF_MAX_RULES`
    pub const MAX_RULES: usize = 16384;
    /// `SF_WORDS`
    pub const WORDS: usize = MAX_RULES / 64;
    /// `SF_SUMMARY`
    pub const SUMMARY: usize = WORDS / 64;
    /// `SF_DIMS`
    pub const DIMS: usize = 10;

    /// `struct sf_bitmap`
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct SfBitmap {
        /// Bit w set when `words[w]` is non-zero.
        pub summary: [u64; SUMMARY],
        /// Bit r set when rule r is allowed.
        pub words: [u64; WORDS],
    }

    /// `struct sf_bitmap_key`
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct SfBitmapKey {
        /// Policy slot.
        pub slot: u32,
        /// Bitmap id.
        pub id: u32,
    }

    /// `struct sf_policy_meta`
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct SfPolicyMeta {
        /// Words in use.
        pub words: u32,
        /// Rules in the policy.
        pub rules: u32,
        /// `enum sf_verdict` of the default.
        pub default_verdict: u32,
        /// Bit per dimension some rule constrains.
        pub dims_used: u32,
        /// Per dimension, the bitmap for unknown or unlisted values.
        pub wild: [u32; DIMS],
        /// Changes with every policy written to the slot.
        pub generation: u32,
        /// Padding.
        pub _pad: u32,
    }

    /// `SF_HOST_LEN`
    pub const HOST_LEN: usize = 128;

    /// `struct sf_host_key`: a remote_host pattern.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct SfHostKey {
        /// Policy slot.
        pub slot: u32,
        /// 1 for a `*.` pattern.
        pub below: u8,
        /// Bytes of `name` used.
        pub len: u8,
        /// Padding.
        pub _pad: u16,
        /// The name, DNS wire form, lowercase, zero-padded.
        pub name: [u8; HOST_LEN],
    }

    impl SfHostKey {
        /// The key of `pattern` in `slot` (a pattern's wire form is at
        /// most 128 bytes: the parser refuses longer names).
        pub fn of(slot: u32, pattern: &sockfilter_model::policy::HostPattern) -> SfHostKey {
            let wire = pattern.wire();
            let n = wire.len().min(HOST_LEN);
            let mut name = [0u8; HOST_LEN];
            name[..n].copy_from_slice(&wire[..n]);
            SfHostKey {
                slot,
                below: u8::from(pattern.is_below()),
                len: n as u8,
                _pad: 0,
                name,
            }
        }
    }

    /// The data part of `struct sf_ip_key` (aya adds `prefixlen`).
    #[repr(C, packed)]
    #[derive(Clone, Copy)]
    pub struct SfIpKeyData {
        /// Policy slot.
        pub slot: u8,
        /// 4 or 6.
        pub tag: u8,
        /// Address, IPv4 as ::ffff:a.b.c.d.
        pub addr: [u8; 16],
        /// Padding (beyond every prefix).
        pub _pad: [u8; 2],
    }

    /// `struct sf_exe_key`
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct SfExeKey {
        /// Policy slot.
        pub slot: u32,
        /// Device of the rule's file, as the kernel encodes it.
        pub dev: u32,
        /// Inode number of the rule's file.
        pub ino: u64,
    }

    /// `struct sf_comm_key`
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct SfCommKey {
        /// Policy slot.
        pub slot: u32,
        /// comm, NUL-padded.
        pub comm: [u8; COMM_LEN],
    }

    /// `struct sf_u64_key`
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct SfU64Key {
        /// Policy slot.
        pub slot: u32,
        /// Padding.
        pub _pad: u32,
        /// uid or cgroup id.
        pub value: u64,
    }

    /// `struct sf_port_table`
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct SfPortTable {
        /// Bitmap id of each port.
        pub id: [u32; 65536],
    }

    // SAFETY: all plain data; every bit pattern valid.
    unsafe impl aya::Pod for SfBitmap {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SfBitmapKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SfPolicyMeta {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SfHostKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SfDnsAddrKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SfDnsAddr {}

    /// `struct sf_dns_addr_key`: an address learned from a DNS answer.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct SfDnsAddrKey {
        /// Inode of the namespace, 0 unknown.
        pub netns: u32,
        /// The address, IPv4 as ::ffff:a.b.c.d.
        pub addr: [u8; 16],
    }

    /// `struct sf_dns_addr`: what the address's name satisfies, per slot.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct SfDnsAddr {
        /// Until when (boot clock).
        pub expires_ns: u64,
        /// Remote-host bitmap id per slot.
        pub id: [u32; 2],
        /// The slot's policy generation each id was computed for.
        pub generation: [u32; 2],
    }
    // SAFETY: as above.
    unsafe impl aya::Pod for SfIpKeyData {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SfExeKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SfCommKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SfU64Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SfPortTable {}
}

/// A device number as the kernel encodes it in `super_block.s_dev`
/// (`MKDEV`: major << 20 | minor), from a `stat()` `st_dev`.
pub fn kernel_dev(st_dev: u64) -> u32 {
    let major = libc::major(st_dev) as u32;
    let minor = libc::minor(st_dev) as u32;
    (major << 20) | minor
}
