//! Probes of the host outside BPF: mounts, the active LSMs, seccomp user
//! notification, user namespaces. Each asks the kernel the way sockfilter
//! will use the feature, in a child process where the test changes the
//! caller (seccomp filters and privilege drops cannot be undone).

use std::io;
use std::path::Path;

/// The mount point of the first filesystem of type `fstype`, from
/// /proc/self/mountinfo.
pub(super) fn mount_of(fstype: &str) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == fstype)
            .then(|| left.split_whitespace().nth(4).map(str::to_owned))?
    })
}

/// The active LSMs, in order, from /sys/kernel/security/lsm; securityfs is
/// mounted first if nothing has (as systemd does at boot).
pub(super) fn active_lsms() -> Result<Vec<String>, String> {
    let dir = Path::new("/sys/kernel/security");
    let file = dir.join("lsm");
    if !file.exists() && mount_of("securityfs").is_none() {
        nix::mount::mount(
            Some("securityfs"),
            dir,
            Some("securityfs"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|e| format!("securityfs is not mounted and mounting it failed ({e})"))?;
    }
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    Ok(text
        .trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Where bpffs is mounted, mounting it at /sys/fs/bpf if nothing has (as
/// enforce does before pinning).
pub(super) fn bpffs() -> Result<String, String> {
    if let Some(p) = mount_of("bpf") {
        return Ok(format!("mounted at {p}"));
    }
    nix::mount::mount(
        Some("bpf"),
        "/sys/fs/bpf",
        Some("bpf"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("bpffs is not mounted and mounting it at /sys/fs/bpf failed ({e})"))?;
    Ok("was not mounted; mounted it at /sys/fs/bpf (as enforce does)".into())
}

/// tracefs's events directory, mounting tracefs where the kernel expects it
/// if nothing has (the loader does the same before attaching).
pub(super) fn tracefs_events() -> Result<std::path::PathBuf, String> {
    for d in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        let events = Path::new(d).join("events");
        if events.is_dir() {
            return Ok(events);
        }
    }
    nix::mount::mount(
        Some("tracefs"),
        "/sys/kernel/tracing",
        Some("tracefs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("tracefs is not mounted and mounting it failed ({e})"))?;
    Ok("/sys/kernel/tracing/events".into())
}

/// What the seccomp probe child found, one errno (0 = success) per step.
#[derive(Debug, Clone, Copy)]
pub(super) struct SeccompAnswers {
    /// `seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER)`.
    pub new_listener: i32,
    /// `SECCOMP_IOCTL_NOTIF_ADDFD` with `SECCOMP_ADDFD_FLAG_SEND` for a
    /// notification that does not exist: ENOENT means the flag is known.
    pub addfd_send: i32,
    /// `SECCOMP_IOCTL_NOTIF_SET_FLAGS` with `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`.
    pub sync_wake_up: i32,
}

/// Installs a user-notification filter (allowing everything) in a child
/// process and tries the listener ioctls supervise uses.
pub(super) fn seccomp_answers() -> io::Result<SeccompAnswers> {
    let answers = in_child(|| {
        // SAFETY: system calls on memory valid for each call, in a
        // single-threaded child that exits right after.
        unsafe {
            let mut out = [0i32; 3];
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                out[0] = errno();
                return out;
            }
            let allow = libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            };
            let prog = libc::sock_fprog {
                len: 1,
                filter: &allow as *const libc::sock_filter as *mut libc::sock_filter,
            };
            let fd = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &prog as *const libc::sock_fprog,
            );
            if fd < 0 {
                out[0] = errno();
                return out;
            }
            let fd = fd as i32;
            let add = libc::seccomp_notif_addfd {
                id: 0,
                flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
                srcfd: 0,
                newfd: 0,
                newfd_flags: 0,
            };
            out[1] = if libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_ADDFD, &add) < 0 {
                errno()
            } else {
                0
            };
            const SYNC_WAKE_UP: u64 = 1;
            out[2] = if libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS, SYNC_WAKE_UP) < 0 {
                errno()
            } else {
                0
            };
            out
        }
    })?;
    Ok(SeccompAnswers {
        new_listener: answers[0],
        addfd_send: answers[1],
        sync_wake_up: answers[2],
    })
}

/// Whether a process without privileges can create a user namespace: a
/// child drops to uid/gid 65534 (when root) and calls unshare(CLONE_NEWUSER).
/// Returns the errno of the first failing step, 0 on success.
pub(super) fn unprivileged_userns() -> io::Result<i32> {
    let r = in_child(|| {
        // SAFETY: raw system calls in a single-threaded child (raw, so that
        // libc does not try to change the ids of threads that do not exist).
        unsafe {
            let drop_failed = || {
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                    || libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534) != 0
                    || libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) != 0
            };
            if libc::geteuid() == 0 && drop_failed() {
                return [-errno(), 0, 0];
            }
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return [errno(), 0, 0];
            }
            [0, 0, 0]
        }
    })?;
    Ok(r[0])
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Runs `f` in a forked child and returns the three numbers it reports
/// through a pipe. Only async-signal-safe work belongs in `f`.
fn in_child(f: impl FnOnce() -> [i32; 3]) -> io::Result<[i32; 3]> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let [read_end, write_end] = fds;
    // SAFETY: the child only makes system calls and exits with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: closing our own pipe ends.
        unsafe {
            libc::close(read_end);
            libc::close(write_end);
        }
        return Err(e);
    }
    if pid == 0 {
        let out = f();
        // SAFETY: write to our pipe, then leave without running destructors.
        unsafe {
            libc::write(write_end, out.as_ptr().cast(), 12);
            libc::_exit(0);
        }
    }
    let mut out = [0i32; 3];
    // SAFETY: reading into a 12-byte buffer from our pipe, reaping our child.
    let n = unsafe {
        libc::close(write_end);
        let n = libc::read(read_end, out.as_mut_ptr().cast(), 12);
        libc::close(read_end);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        n
    };
    if n != 12 {
        return Err(io::Error::other("the probe process died without an answer"));
    }
    Ok(out)
}
