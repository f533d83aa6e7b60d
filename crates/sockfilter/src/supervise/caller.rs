//! Who the caller is: pid, uid, comm, exe and cgroup, from its pidfd and /proc.

use super::call::Call;
use super::sys::{pidfd_open, Errno, PIDFD_THREAD};
use std::os::fd::{AsRawFd, OwnedFd};

/// `struct pidfd_info` (Linux 6.13), version 0.
#[repr(C)]
#[derive(Default)]
pub(super) struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    exit_code: i32,
}

/// `_IOWR(PIDFS_IOCTL_MAGIC, 11, struct pidfd_info)`.
pub(super) const PIDFD_GET_INFO: libc::c_ulong = (3 << 30) | (64 << 16) | (0xFF << 8) | 11;
pub(super) const PIDFD_INFO_PID: u64 = 1;
pub(super) const PIDFD_INFO_CREDS: u64 = 2;
pub(super) const PIDFD_INFO_CGROUPID: u64 = 4;

pub(super) fn pidfd_info(pidfd: &OwnedFd) -> Option<PidfdInfo> {
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_PID | PIDFD_INFO_CREDS | PIDFD_INFO_CGROUPID,
        ..Default::default()
    };
    // SAFETY: valid pointer to a pidfd_info of the size encoded in the request.
    let r = unsafe { libc::ioctl(pidfd.as_raw_fd(), PIDFD_GET_INFO, &mut info) };
    if r < 0 || info.mask & (PIDFD_INFO_PID | PIDFD_INFO_CREDS) != PIDFD_INFO_PID | PIDFD_INFO_CREDS
    {
        return None;
    }
    Some(info)
}

/// Thread-group id and real uid from /proc/TID/status.
pub(super) fn proc_status(tid: u32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u32>().ok())
    };
    (
        field("Tgid:").unwrap_or(tid),
        field("Uid:").unwrap_or(u32::MAX),
    )
}

pub(super) fn proc_cgroup(tid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{tid}/cgroup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        })
}

impl Call {
    /// Thread-group id, real uid and cgroup id (0 when unknown) of the
    /// caller: from its pidfd (Linux 6.13), else from /proc.
    pub(super) fn who_ids(&self) -> (u32, u32, u64) {
        if let Some(info) = self.pidfd.as_deref().and_then(pidfd_info) {
            let cg = if info.mask & PIDFD_INFO_CGROUPID != 0 {
                info.cgroupid
            } else {
                0
            };
            return (info.tgid, info.ruid, cg);
        }
        let (pid, uid) = proc_status(self.tid);
        (pid, uid, 0)
    }

    /// Who the caller is: pid, uid, comm, exe, cgroup.
    pub(super) fn who(&self) -> (u32, u32, String, Option<String>, Option<String>) {
        let tid = self.tid;
        let (pid, uid, cgid) = self.who_ids();
        let comm = std::fs::read_to_string(format!("/proc/{tid}/comm"))
            .map(|s| s.trim_end_matches('\n').to_string())
            .unwrap_or_default();
        let exe = std::fs::read_link(format!("/proc/{tid}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        let cgroup = if cgid == 0 {
            proc_cgroup(tid)
        } else {
            let cached = self.core.cgroups.lock().unwrap().get(&cgid).cloned();
            match cached {
                Some(path) => Some(path),
                None => {
                    let path = proc_cgroup(tid);
                    if let Some(p) = &path {
                        let mut map = self.core.cgroups.lock().unwrap();
                        if map.len() > 4096 {
                            map.clear();
                        }
                        map.insert(cgid, p.clone());
                    }
                    path
                }
            }
        };
        (pid, uid, comm, exe, cgroup)
    }
}

pub(super) fn open_pidfd(tid: u32) -> Result<OwnedFd, Errno> {
    match pidfd_open(tid as i32, PIDFD_THREAD) {
        Ok(fd) => Ok(fd),
        // Before Linux 6.9: only thread-group leaders have pidfds.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let pid = proc_status(tid).0;
            pidfd_open(pid as i32, 0).map_err(|e| e.raw_os_error().unwrap_or(libc::ESRCH))
        }
        Err(e) => Err(e.raw_os_error().unwrap_or(libc::ESRCH)),
    }
}
