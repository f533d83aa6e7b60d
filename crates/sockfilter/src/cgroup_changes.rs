//! Noticing that cgroups were created or removed anywhere in the hierarchy
//! (inotify on every cgroup directory), so that what depends on the whole
//! tree (the cgroups where units and containers start) is recomputed only
//! when it changed, instead of walking thousands of cgroups every tick.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Changes below a cgroup2 mount since the last look.
pub struct CgroupChanges {
    root: PathBuf,
    inotify: OwnedFd,
    /// Every directory is watched; when one could not be (the inotify
    /// watch limit), every look reports a change, as if nothing watched.
    complete: bool,
}

impl CgroupChanges {
    /// Watches every cgroup below `root`; None when inotify is unavailable.
    pub fn new(root: &Path) -> Option<CgroupChanges> {
        // SAFETY: a plain syscall; the descriptor is owned at once.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        let mut me = CgroupChanges {
            root: root.to_owned(),
            // SAFETY: inotify_init1 returned a new descriptor nothing else owns.
            inotify: unsafe { OwnedFd::from_raw_fd(fd) },
            complete: true,
        };
        me.watch_all();
        Some(me)
    }

    /// Adds a watch to every directory of the hierarchy (one already
    /// watched keeps its watch).
    fn watch_all(&mut self) {
        self.complete = true;
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            let mask = libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_TO | libc::IN_ONLYDIR;
            // SAFETY: a valid descriptor and NUL-terminated path.
            let wd = unsafe { libc::inotify_add_watch(self.inotify.as_raw_fd(), c.as_ptr(), mask) };
            if wd < 0 && dir.exists() {
                // Out of watches (not merely gone meanwhile): look every time.
                self.complete = false;
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                stack.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
    }

    /// Whether a cgroup was created or removed since the last call (or
    /// since [`CgroupChanges::new`]); new directories are watched from now on.
    pub fn changed(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        let mut any = false;
        loop {
            // SAFETY: reading into a buffer we own, of its length.
            let n =
                unsafe { libc::read(self.inotify.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break; // EAGAIN: drained
            }
            any = true;
        }
        if any {
            self.watch_all();
        }
        any || !self.complete
    }
}
