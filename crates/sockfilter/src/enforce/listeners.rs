//! Listeners that existed before enforce, in the kernel's listener registry
//! (`bpf/listeners.h`). The kernel registers a listener when it calls
//! `listen()`; one that was already listening when enforce started was never
//! seen doing so, and socket lookup would decide its connections with no
//! owner: a policy that allows accepts per user or per executable would
//! refuse every connection to a server that was running before. So the
//! start-up snapshot's listeners, with the owners /proc gives, are written
//! into the registry, never over an entry the kernel wrote.

use crate::abi::{SfListenKey, SfListener, SfProc, CGROUP_DEPTH, COMM_LEN};
use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::Ebpf;
use sockfilter_model::event::{Event, EventKind, Owner, Proto, Verdict};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Registers every allowed TCP listener of `snapshot` (existing events) that
/// has an owner, under its network namespace's cookie (`cookies`: inode ->
/// cookie of the namespaces socket lookup is attached to; a listener of
/// another namespace is left out); returns how many were written.
pub fn register_existing(
    bpf: &mut Ebpf,
    snapshot: &[Event],
    cookies: &std::collections::HashMap<u64, u64>,
) -> usize {
    let Some(root) = crate::cgroup::cgroup2_mount() else {
        return 0;
    };
    let Some(Ok(mut map)) = bpf
        .map_mut("listeners")
        .map(BpfHashMap::<&mut MapData, SfListenKey, SfListener>::try_from)
    else {
        return 0;
    };
    let mut written = 0;
    for e in snapshot {
        if e.kind != EventKind::Listen || e.proto != Proto::Tcp || e.verdict == Verdict::Deny {
            continue;
        }
        let Some(owner) = &e.owner else {
            continue;
        };
        let Some(&netns) = e.netns.and_then(|ino| cookies.get(&ino)) else {
            continue;
        };
        let key = SfListenKey {
            netns,
            addr: v6_form(e.local.ip),
            port: e.local.port,
            _pad: [0; 3],
        };
        let value = listener(e, owner, &root);
        // BPF_NOEXIST: what the kernel registered since start is newer.
        if map.insert(key, value, 1).is_ok() {
            written += 1;
        }
    }
    written
}

fn listener(e: &Event, owner: &Owner, root: &Path) -> SfListener {
    let mut comm = [0u8; COMM_LEN];
    let n = owner.comm.len().min(COMM_LEN - 1);
    comm[..n].copy_from_slice(&owner.comm.as_bytes()[..n]);
    let mut v = SfListener {
        cookie: e.socket,
        owner: SfProc {
            cgroup_id: 0,
            pid: owner.pid,
            uid: owner.uid,
            comm,
        },
        netns_inum: e.netns.unwrap_or(0) as u32,
        from_snapshot: 1,
        ..Default::default()
    };
    let ids = owner
        .cgroup
        .as_deref()
        .map(|path| cgroup_ancestry(root, path))
        .unwrap_or_default();
    v.owner.cgroup_id = ids.first().copied().unwrap_or(0);
    v.ncgroups = ids.len() as u32;
    v.cgroups[..ids.len()].copy_from_slice(&ids);
    v
}

/// The ids of cgroup `path` and its ancestors, deepest first, at most
/// [`CGROUP_DEPTH`] (as the kernel side walks them).
fn cgroup_ancestry(root: &Path, path: &str) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut dir = root.join(path.trim_start_matches('/'));
    while ids.len() < CGROUP_DEPTH {
        let Ok(m) = std::fs::metadata(&dir) else {
            break;
        };
        ids.push(m.ino());
        if dir == root || !dir.pop() {
            break;
        }
    }
    ids
}

/// An address as the kernel side keys it: IPv6, IPv4 as ::ffff:a.b.c.d.
fn v6_form(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_keyed_in_ipv6_form() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            v6_form(v4),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1]
        );
        assert_eq!(v6_form("::".parse().unwrap()), [0; 16]);
    }
}
