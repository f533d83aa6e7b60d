//! What `/proc` tells about processes: executables, names, and which
//! processes hold which sockets.

use std::collections::HashMap;
use std::path::PathBuf;

/// Every numeric entry of /proc: the live processes.
pub fn pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// `/proc/PID/exe`, resolved.
pub fn exe(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p: PathBuf| p.to_string_lossy().into_owned())
}

/// `/proc/PID/comm` without the newline.
pub fn comm(pid: u32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(s.trim_end_matches('\n').to_owned())
}

/// The real uid of a process (first field of `Uid:` in /proc/PID/status).
pub fn uid(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Socket inode -> the pids holding a descriptor for it (several when a
/// socket is shared by fork, fd passing or inheritance), sorted.
pub fn socket_owners() -> HashMap<u64, Vec<u32>> {
    let mut owners: HashMap<u64, Vec<u32>> = HashMap::new();
    for pid in pids() {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(ino) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            let v = owners.entry(ino).or_default();
            if !v.contains(&pid) {
                v.push(pid);
            }
        }
    }
    for v in owners.values_mut() {
        v.sort_unstable();
    }
    owners
}

/// Inode of a process's network namespace.
pub fn netns_inode(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// Who a process is, from /proc: for sockets found by sock_diag, whose
/// owner the kernel side never saw.
pub fn owner(pid: u32) -> sockfilter_model::Owner {
    sockfilter_model::Owner {
        pid,
        uid: uid(pid).unwrap_or(0),
        comm: comm(pid).unwrap_or_default(),
        exe: exe(pid),
        cgroup: crate::cgroup::cgroup_of_pid(pid),
    }
}
