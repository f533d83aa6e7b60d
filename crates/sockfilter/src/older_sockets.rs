//! Sockets older than the watch. The BPF programs learn a socket's owner
//! when it binds, listens, connects or is accepted; a socket that did all
//! that before sockfilter started has no owner in the kernel, so its close
//! would be reported without one (and under `--cgroup`, where the close
//! program keeps only sockets with an owner, not at all).
//!
//! At start the snapshot finds each socket's owner in /proc. This module
//! writes that owner into the kernel's socket-local storage (`sk_owner`,
//! keyed by a duplicate of the owner's descriptor taken with
//! `pidfd_getfd`), and a UDP socket's endpoints into `udp_endpoints` (its
//! release is reported only from there). The start time is left 0 =
//! unknown: the kernel keeps no creation time for a socket, so such a
//! close has `duration_ns: null`. The snapshot's owners are also kept in
//! user space by cookie, bounded, to fill in what the close lacks (a socket
//! closed before it could be written, an owner whose executable is gone);
//! sockets beyond the bound are counted, not hidden.

use crate::abi::{SfEndpoints, SfOwner, SfProc, COMM_LEN};
use aya::maps::{HashMap as BpfHashMap, MapData, SkStorage};
use aya::Ebpf;
use sockfilter_model::event::{Event, EventKind, Family, Owner, Proto};
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// At most this many snapshot owners are kept in user space.
pub const MAX_KEPT: usize = 65_536;

/// At most this many UDP sockets of the snapshot get their endpoints
/// written: half of `udp_endpoints`, an LRU map of 65,536, so that the
/// endpoints of sockets bound since start are not pushed out.
pub const MAX_UDP_WRITTEN: usize = 32_768;

/// `BPF_NOEXIST`: never overwrite what a hook already recorded, which is newer.
const BPF_NOEXIST: u64 = 1;

/// One socket of the start-up snapshot: its event and where its owner
/// holds it.
pub struct SnapshotSocket {
    /// The `existing` event.
    pub event: Event,
    /// The socket's inode.
    pub inode: u64,
    /// The owner's descriptor for it, when the owner is known.
    pub fd: Option<i32>,
}

/// The owners of the sockets that existed at start, by cookie.
#[derive(Default)]
pub struct OlderSockets {
    owners: HashMap<u64, Owner>,
    not_kept: u64,
    written: u64,
    not_written: u64,
}

impl OlderSockets {
    /// Writes the owners (and UDP endpoints) of `snapshot` into the kernel
    /// and keeps them, up to [`MAX_KEPT`], for [`OlderSockets::fill`].
    pub fn record(bpf: &mut Ebpf, cgroup_root: &Path, snapshot: &[SnapshotSocket]) -> Self {
        let mut me = OlderSockets::default();
        let owned = || {
            snapshot
                .iter()
                .filter_map(|s| Some((s, s.event.owner.as_ref()?)))
        };
        let storage = bpf
            .map_mut("sk_owner")
            .and_then(|m| SkStorage::<_, SfOwner>::try_from(m).ok());
        if let Some(mut storage) = storage {
            let mut borrower = Borrower::new(cgroup_root);
            for (s, owner) in owned() {
                match write_owner(&mut storage, &mut borrower, s, owner) {
                    Ok(()) => me.written += 1,
                    Err(_) => me.not_written += 1,
                }
            }
        } else {
            me.not_written += owned().count() as u64;
        }
        let udp = bpf
            .map_mut("udp_endpoints")
            .and_then(|m| BpfHashMap::<_, u64, SfEndpoints>::try_from(m).ok());
        if let Some(mut udp) = udp {
            for (i, s) in snapshot
                .iter()
                .filter(|s| s.event.proto == Proto::Udp)
                .enumerate()
            {
                if i < MAX_UDP_WRITTEN {
                    let _ = udp.insert(s.event.socket, endpoints(&s.event), BPF_NOEXIST);
                } else {
                    me.not_kept += 1;
                }
            }
        }
        for (s, owner) in owned() {
            if me.owners.len() < MAX_KEPT {
                me.owners.insert(s.event.socket, owner.clone());
            } else {
                me.not_kept += 1;
            }
        }
        me
    }

    /// Completes a close of a socket that existed at start with what the
    /// snapshot found: the whole owner when the kernel had none, else the
    /// executable and cgroup when the kernel's owner is the same process
    /// and they could not be named any more.
    pub fn fill(&mut self, e: &mut Event) {
        if e.kind != EventKind::Close || self.owners.is_empty() {
            return;
        }
        let Some(found) = self.owners.remove(&e.socket) else {
            return;
        };
        match &mut e.owner {
            None => e.owner = Some(found),
            Some(o) if o.pid == found.pid => {
                if o.exe.is_none() {
                    o.exe = found.exe;
                }
                if o.cgroup.is_none() {
                    o.cgroup = found.cgroup;
                }
            }
            Some(_) => {}
        }
    }

    /// Snapshot sockets beyond what is kept for their close: owners beyond
    /// [`MAX_KEPT`] (a close the kernel cannot attribute either is reported
    /// without an owner) and UDP sockets beyond [`MAX_UDP_WRITTEN`] (their
    /// release is not reported).
    pub fn not_kept(&self) -> u64 {
        self.not_kept
    }

    /// Owners written into the kernel, and owners that could not be (the
    /// socket or process went away meanwhile, or the kernel refused).
    pub fn written(&self) -> (u64, u64) {
        (self.written, self.not_written)
    }
}

/// Writes the owner of one snapshot socket into its socket-local storage.
fn write_owner(
    storage: &mut SkStorage<&mut MapData, SfOwner>,
    borrower: &mut Borrower,
    s: &SnapshotSocket,
    owner: &Owner,
) -> std::io::Result<()> {
    let fd =
        s.fd.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
    let sock = borrower.borrow(owner.pid, fd, s.inode)?;
    let value = SfOwner {
        proc: borrower.sf_proc(owner),
        start_ns: 0, // unknown: the kernel keeps no creation time
        // An outbound TCP connection's SYN counts in bytes_acked.
        active: u32::from(s.event.kind == EventKind::Connect && s.event.proto == Proto::Tcp),
        netns: s.event.netns.unwrap_or(0) as u32,
        ..Default::default()
    };
    storage
        .insert(&sock, value, BPF_NOEXIST)
        .map_err(std::io::Error::other)
}

fn endpoints(e: &Event) -> SfEndpoints {
    let addr = |ip: IpAddr| -> [u8; 16] {
        let mut a = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => a[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => a = v6.octets(),
        }
        a
    };
    SfEndpoints {
        local_addr: addr(e.local.ip),
        remote_addr: e.remote.map_or([0; 16], |r| addr(r.ip)),
        local_port: e.local.port,
        remote_port: e.remote.map_or(0, |r| r.port),
        family: if e.family == Family::Ipv6 {
            libc::AF_INET6 as u16
        } else {
            libc::AF_INET as u16
        },
        _pad: 0,
        netns: e.netns.unwrap_or(0) as u32,
    }
}

/// Duplicates descriptors of other processes (one pidfd per process) and
/// names their cgroups by id (one lookup per cgroup): a host with many
/// sockets per process pays per process, not per socket.
struct Borrower<'a> {
    cgroup_root: &'a Path,
    pidfds: HashMap<u32, Option<OwnedFd>>,
    cgroup_ids: HashMap<String, u64>,
}

impl<'a> Borrower<'a> {
    fn new(cgroup_root: &'a Path) -> Self {
        Borrower {
            cgroup_root,
            pidfds: HashMap::new(),
            cgroup_ids: HashMap::new(),
        }
    }

    /// A duplicate of descriptor `fd` of process `pid` (`pidfd_getfd`), if
    /// it still refers to the socket with inode `inode` (the process may
    /// have closed it and reused the number since the snapshot).
    fn borrow(&mut self, pid: u32, fd: i32, inode: u64) -> std::io::Result<OwnedFd> {
        use std::os::unix::fs::MetadataExt;
        let pidfd = self.pidfds.entry(pid).or_insert_with(|| {
            // SAFETY: a plain syscall; the descriptor is owned at once.
            let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
            // SAFETY: pidfd_open returned a new descriptor nothing else owns.
            (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw as i32) })
        });
        let Some(pidfd) = pidfd else {
            return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        };
        // SAFETY: a plain syscall; the descriptor is owned at once.
        let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
        if dup < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: pidfd_getfd returned a new descriptor nothing else owns.
        let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(dup as i32) });
        if file.metadata()?.ino() != inode {
            return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        }
        Ok(file.into())
    }

    /// The owner as the BPF programs record a process.
    fn sf_proc(&mut self, owner: &Owner) -> SfProc {
        use std::os::unix::fs::MetadataExt;
        let mut comm = [0u8; COMM_LEN];
        let b = owner.comm.as_bytes();
        let n = b.len().min(COMM_LEN - 1);
        comm[..n].copy_from_slice(&b[..n]);
        // A cgroup's id is the inode number of its directory.
        let root = self.cgroup_root;
        let cgroup_id = owner.cgroup.as_ref().map_or(0, |c| {
            *self.cgroup_ids.entry(c.clone()).or_insert_with(|| {
                std::fs::metadata(root.join(c.trim_start_matches('/'))).map_or(0, |m| m.ino())
            })
        });
        SfProc {
            cgroup_id,
            pid: owner.pid,
            uid: owner.uid,
            comm,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockfilter_model::event::{Details, Endpoint, Verdict};
    use std::net::Ipv4Addr;

    fn close(socket: u64, owner: Option<Owner>) -> Event {
        Event {
            kind: EventKind::Close,
            time: std::time::UNIX_EPOCH,
            verdict: Verdict::Allow,
            rule: None,
            owner,
            proto: Proto::Tcp,
            family: Family::Ipv4,
            local: Endpoint::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1),
            remote: None,
            socket,
            existing: false,
            netns: None,
            remote_host: None,
            details: Details::default(),
        }
    }

    fn owner(pid: u32, exe: Option<&str>) -> Owner {
        Owner {
            pid,
            uid: 7,
            comm: "srv".into(),
            exe: exe.map(Into::into),
            cgroup: Some("/x".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_close_without_owner_gets_the_snapshots_once() {
        let mut o = OlderSockets::default();
        o.owners.insert(5, owner(10, Some("/bin/srv")));
        let mut e = close(5, None);
        o.fill(&mut e);
        assert_eq!(e.owner, Some(owner(10, Some("/bin/srv"))));
        let mut again = close(5, None);
        o.fill(&mut again);
        assert_eq!(again.owner, None, "forgotten after its close");
    }

    #[test]
    fn the_kernels_owner_wins_and_only_gaps_are_filled() {
        let mut o = OlderSockets::default();
        o.owners.insert(5, owner(10, Some("/bin/srv")));
        o.owners.insert(6, owner(10, Some("/bin/srv")));
        let mut same = close(5, Some(owner(10, None)));
        o.fill(&mut same);
        assert_eq!(same.owner.unwrap().exe.as_deref(), Some("/bin/srv"));
        let mut other = close(6, Some(owner(11, None)));
        o.fill(&mut other);
        assert_eq!(other.owner, Some(owner(11, None)));
    }
}
