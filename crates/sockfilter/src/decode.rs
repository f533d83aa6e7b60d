//! Turning raw ring-buffer records into [`Event`]s: addresses, wall-clock
//! time, executable and cgroup names.

use crate::abi::verdict;
use crate::abi::{flags, kind, SfEvent, COMM_LEN, EXE_LEN};
use crate::cgroup::CgroupNames;
use crate::enforce::RuleNames;
use sockfilter_model::event::{Details, Endpoint, Event, EventKind, Family, Owner, Proto, Verdict};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Decodes records; holds what decoding needs beyond the record itself.
pub struct Decoder {
    /// Wall-clock nanoseconds minus boot-clock nanoseconds, taken at start.
    boot_to_wall_ns: i128,
    cgroups: CgroupNames,
    rule_names: Option<Arc<RwLock<RuleNames>>>,
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Now on the boot clock (`bpf_ktime_get_boot_ns()`'s), nanoseconds.
pub fn boot_clock_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME).max(0) as u64
}

impl Decoder {
    /// A decoder naming cgroups below `cgroup_root` (the cgroup2 mount).
    pub fn new(cgroup_root: std::path::PathBuf) -> Self {
        Decoder {
            boot_to_wall_ns: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_BOOTTIME),
            cgroups: CgroupNames::new(cgroup_root),
            rule_names: None,
        }
    }

    /// Names the rules in verdicts (enforce).
    pub fn set_rule_names(&mut self, names: Arc<RwLock<RuleNames>>) {
        self.rule_names = Some(names);
    }

    /// The wall-clock time of a `bpf_ktime_get_boot_ns()` stamp.
    pub fn wall_time(&self, boot_ns: u64) -> SystemTime {
        let ns = (boot_ns as i128 + self.boot_to_wall_ns).max(0) as u128;
        UNIX_EPOCH + Duration::from_nanos(ns.min(u64::MAX as u128) as u64)
    }

    /// The path of a cgroup id.
    pub fn cgroup_name(&self, id: u64) -> Option<String> {
        self.cgroups.name(id)
    }

    /// Builds the event. `raw` has been validated by [`SfEvent::from_bytes`].
    pub fn decode(&self, raw: &SfEvent) -> Event {
        let event_kind = match raw.kind {
            kind::BIND => EventKind::Bind,
            kind::LISTEN => EventKind::Listen,
            kind::CONNECT => EventKind::Connect,
            kind::ACCEPT => EventKind::Accept,
            _ => EventKind::Close,
        };
        let family = if raw.family == libc::AF_INET6 as u16 {
            Family::Ipv6
        } else {
            Family::Ipv4
        };
        let proto = if raw.protocol == libc::IPPROTO_UDP as u16 {
            Proto::Udp
        } else {
            Proto::Tcp
        };
        let local = Endpoint::new(ip(family, &raw.local_addr), raw.local_port);
        let remote = (raw.remote_port != 0)
            .then(|| Endpoint::new(ip(family, &raw.remote_addr), raw.remote_port));
        let owner = (raw.flags & flags::OWNER_UNKNOWN == 0).then(|| Owner {
            pid: raw.pid,
            uid: raw.uid,
            comm: c_string(&raw.comm[..COMM_LEN]),
            exe: exe(raw),
            cgroup: self.cgroups.name(raw.cgroup_id),
            // parent_exe and cmdline are named by crate::ancestry, from
            // the exec ids, outside the decoder.
            ppid: (raw.ppid != 0).then_some(raw.ppid),
            ..Default::default()
        });
        let bytes_known = raw.flags & flags::BYTES_UNKNOWN == 0;
        let details = match event_kind {
            EventKind::Listen => Details {
                backlog: Some(raw.backlog),
                ..Default::default()
            },
            EventKind::Accept => Details {
                // A refused connection (no socket) names its listener only
                // when one was registered.
                listener: (raw.cookie != 0 || raw.listener_cookie != 0)
                    .then_some(raw.listener_cookie),
                // Only a connection refused in socket lookup has no socket.
                suppressed: (raw.cookie == 0).then_some(raw.suppressed),
                ..Default::default()
            },
            EventKind::Close => Details {
                bytes_sent: bytes_known.then_some(raw.bytes_sent),
                bytes_received: bytes_known.then_some(raw.bytes_received),
                duration_ns: duration_known(raw).then_some(raw.duration_ns),
                ..Default::default()
            },
            _ => Details::default(),
        };
        let mut details = details;
        details.enforced_by = crate::abi::enforced_by::name(raw.enforced_by);
        Event {
            kind: event_kind,
            time: self.wall_time(raw.ts_ns),
            verdict: match raw.verdict {
                verdict::DENY => Verdict::Deny,
                verdict::AUDIT => Verdict::Audit,
                _ => Verdict::Allow,
            },
            rule: self.rule_names.as_ref().and_then(|n| {
                n.read()
                    .unwrap_or_else(|e| e.into_inner())
                    .name(raw.policy_slot, raw.rule)
            }),
            owner,
            proto,
            family,
            local,
            remote: match event_kind {
                // A listener or a bind has no peer, whatever the record holds.
                EventKind::Listen | EventKind::Bind => None,
                _ => remote,
            },
            socket: raw.cookie,
            existing: false,
            netns: (raw.netns != 0).then_some(raw.netns as u64),
            remote_host: None, // filled by the watcher's host-name table
            details,
        }
    }
}

/// Whether a close's duration is real. A socket older than the watch has
/// its owner written by user space with start time 0 (unknown: the kernel
/// keeps no creation time), and then duration = now - 0 = the close's own
/// timestamp, which no real socket can have (nothing starts at boot time 0).
fn duration_known(raw: &SfEvent) -> bool {
    raw.flags & flags::DURATION_UNKNOWN == 0 && raw.duration_ns != raw.ts_ns
}

fn ip(family: Family, raw: &[u8; 16]) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(*raw)),
    }
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The executable the kernel recorded; when it did not (process older than
/// sockfilter and missed by the seed, or a path too long), ask /proc.
fn exe(raw: &SfEvent) -> Option<String> {
    let n = raw.exe_len as usize;
    if n > 0 && n <= EXE_LEN && raw.flags & flags::EXE_TRUNCATED == 0 {
        return Some(String::from_utf8_lossy(&raw.exe[..n]).into_owned());
    }
    crate::procfs::exe(raw.pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(k: u32) -> SfEvent {
        // SAFETY: SfEvent is plain data; all-zero is valid.
        let mut r: SfEvent = unsafe { std::mem::zeroed() };
        r.kind = k;
        r.family = libc::AF_INET6 as u16;
        r.protocol = libc::IPPROTO_TCP as u16;
        r
    }

    #[test]
    fn decodes_addresses_owner_and_details() {
        let d = Decoder::new("/nonexistent".into());
        let mut r = raw(kind::ACCEPT);
        r.local_addr[15] = 1;
        r.local_port = 80;
        r.remote_addr[10] = 0xff;
        r.remote_addr[11] = 0xff;
        r.remote_addr[12..16].copy_from_slice(&[10, 0, 0, 2]);
        r.remote_port = 5555;
        r.listener_cookie = 77;
        r.pid = 42;
        r.comm[..3].copy_from_slice(b"nc\0");
        r.exe[..8].copy_from_slice(b"/bin/nc!");
        r.exe_len = 7;
        let e = d.decode(&r);
        assert_eq!(e.kind, EventKind::Accept);
        assert_eq!(e.local.to_string(), "[::1]:80");
        assert_eq!(e.remote.unwrap().to_string(), "[::ffff:10.0.0.2]:5555");
        assert_eq!(e.details.listener, Some(77));
        let o = e.owner.unwrap();
        assert_eq!(
            (o.pid, o.comm.as_str(), o.exe.as_deref()),
            (42, "nc", Some("/bin/nc"))
        );
    }

    #[test]
    fn unknown_owner_and_udp_bytes_are_none() {
        let d = Decoder::new("/nonexistent".into());
        let mut r = raw(kind::CLOSE);
        r.flags = flags::OWNER_UNKNOWN | flags::BYTES_UNKNOWN;
        r.ts_ns = 5;
        let e = d.decode(&r);
        assert!(e.owner.is_none());
        assert_eq!(e.details.bytes_sent, None);
        assert_eq!(e.details.duration_ns, Some(0));
        // Start time 0 (a socket older than the watch): duration unknown.
        r.duration_ns = 5;
        assert_eq!(d.decode(&r).details.duration_ns, None);
        // An exe length beyond the buffer never panics.
        let mut r = raw(kind::BIND);
        r.exe_len = 100_000;
        let _ = d.decode(&r);
    }
}
