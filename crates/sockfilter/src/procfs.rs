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
    socket_fds()
        .into_iter()
        .map(|(ino, fds)| {
            let mut pids: Vec<u32> = fds.into_iter().map(|(pid, _)| pid).collect();
            pids.dedup();
            (ino, pids)
        })
        .collect()
}

/// Socket inode -> every (pid, fd number) that refers to it, sorted by pid
/// then fd.
pub fn socket_fds() -> HashMap<u64, Vec<(u32, i32)>> {
    let mut fds_of: HashMap<u64, Vec<(u32, i32)>> = HashMap::new();
    for pid in pids() {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Some(num) = fd.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
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
            fds_of.entry(ino).or_default().push((pid, num));
        }
    }
    for v in fds_of.values_mut() {
        v.sort_unstable();
    }
    fds_of
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
        ppid: ppid(pid),
        parent_exe: ppid(pid).and_then(exe).map(Into::into),
        cmdline: cmdline(pid).map(Into::into),
    }
}

/// The parent's pid: the 4th field of `/proc/PID/stat` (after the command
/// name, which is in parentheses and may itself hold spaces and
/// parentheses: the last `)` ends it). None for pid 1 (parent 0).
pub fn ppid(pid: u32) -> Option<u32> {
    let s = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.iter().rposition(|&c| c == b')')? + 1..];
    let mut fields = after.split(|&c| c == b' ').filter(|f| !f.is_empty());
    fields.next()?; // state
    let ppid: u32 = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    (ppid != 0).then_some(ppid)
}

/// The bytes of a command line the kernel and sockfilter keep
/// (`SF_ARGS_LEN`): longer ones are cut there.
pub const CMDLINE_MAX: usize = 512;

/// `/proc/PID/cmdline` as arguments (at most [`CMDLINE_MAX`] bytes), or
/// None if it cannot be read or is empty (a kernel thread, a zombie).
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(CMDLINE_MAX);
    std::fs::File::open(format!("/proc/{pid}/cmdline"))
        .ok()?
        .take(CMDLINE_MAX as u64)
        .read_to_end(&mut buf)
        .ok()?;
    split_args(&buf)
}

/// NUL-separated arguments (the final NUL optional) as strings, invalid
/// UTF-8 replaced as for exe paths. None if there are none.
pub fn split_args(buf: &[u8]) -> Option<Vec<String>> {
    if buf.is_empty() {
        return None;
    }
    let body = buf.strip_suffix(&[0]).unwrap_or(buf);
    Some(
        body.split(|&c| c == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_split_at_nul_keeping_empty_ones() {
        assert_eq!(split_args(b""), None);
        assert_eq!(
            split_args(b"python3\0-c\0\0x y\0"),
            Some(vec!["python3".into(), "-c".into(), "".into(), "x y".into()])
        );
        // Cut short: no final NUL.
        assert_eq!(split_args(b"ab\0cd"), Some(vec!["ab".into(), "cd".into()]));
    }

    #[test]
    fn this_process_has_a_parent_and_arguments() {
        let me = std::process::id();
        assert_eq!(ppid(me), Some(std::os::unix::process::parent_id()));
        assert!(cmdline(me).is_some_and(|a| !a.is_empty()));
        assert_eq!(ppid(1), None);
    }
}
