//! Credentials: the emulated call runs with the caller's, never the
//! supervisor's.
//!
//! The kernel checks a socket call against the credentials of the task that
//! makes it: binding a port below `ip_unprivileged_port_start` needs
//! `CAP_NET_BIND_SERVICE`, a `SO_MARK` control message `CAP_NET_RAW` or
//! `CAP_NET_ADMIN`, and an accepted socket takes its owner (`sk_uid`, the
//! file's credentials that `xt_owner` and `ss -e` see) from the accepting
//! task. A root supervisor that performed the calls with its own credentials
//! would lend them to the program. So each call is performed on a thread
//! that first took the caller's exact credentials — real, effective, saved
//! and filesystem user and group ids, supplementary groups and capability
//! sets — with the raw system calls, which change the calling thread only
//! (the libc wrappers would change every thread of the supervisor).
//!
//! Capabilities are relative to a user namespace. A caller in another user
//! namespace than the supervisor's (`unshare -U`) gets no capability on the
//! thread: the thread's effective user id then owns the caller's namespace,
//! which gives it, as the kernel defines ownership, the capabilities the
//! caller has there and none in the supervisor's namespace.

use std::io;

/// The credentials a socket call is checked against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Creds {
    /// Real, effective, saved and filesystem user ids (as the supervisor's
    /// user namespace sees them).
    pub(super) uids: [u32; 4],
    /// Real, effective, saved and filesystem group ids.
    pub(super) gids: [u32; 4],
    /// Supplementary groups, sorted.
    pub(super) groups: Vec<u32>,
    /// Effective, permitted and inheritable capabilities.
    pub(super) caps: [u64; 3],
}

impl Creds {
    /// The credentials of task `tid`, from `/proc/TID/status`; None when it
    /// is gone.
    pub(super) fn of(tid: u32) -> Option<Creds> {
        let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
        let mut creds = Creds::parse(&status)?;
        if !same_user_namespace(&format!("/proc/{tid}/ns/user")) {
            creds.caps = [0; 3];
        }
        Some(creds)
    }

    /// The credentials of the calling thread.
    pub(super) fn current() -> Option<Creds> {
        Creds::parse(&std::fs::read_to_string("/proc/thread-self/status").ok()?)
    }

    fn parse(status: &str) -> Option<Creds> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::split_whitespace)
        };
        let ids = |name: &str| -> Option<[u32; 4]> {
            let v: Vec<u32> = field(name)?
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            v.try_into().ok()
        };
        let cap = |name: &str| {
            field(name)
                .and_then(|mut it| it.next())
                .and_then(|x| u64::from_str_radix(x, 16).ok())
        };
        let mut groups: Vec<u32> = field("Groups:")?
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        groups.sort_unstable();
        groups.dedup();
        Some(Creds {
            uids: ids("Uid:")?,
            gids: ids("Gid:")?,
            groups,
            caps: [cap("CapEff:")?, cap("CapPrm:")?, cap("CapInh:")?],
        })
    }

    /// Makes the calling thread's credentials exactly these, with raw system
    /// calls that change this thread only; checks the result. The thread
    /// cannot get its former credentials back.
    pub(super) fn assume(&self) -> io::Result<()> {
        let [ruid, euid, suid, fsuid] = self.uids;
        let [rgid, egid, sgid, fsgid] = self.gids;
        // Keep the permitted set across the change of user id, to set the
        // caller's capabilities afterwards (and to set its fsuid first).
        sys(libc::SYS_prctl, [libc::PR_SET_KEEPCAPS as u64, 1, 0])?;
        sys(
            libc::SYS_setgroups,
            [self.groups.len() as u64, self.groups.as_ptr() as u64, 0],
        )?;
        sys(libc::SYS_setresgid, [rgid.into(), egid.into(), sgid.into()])?;
        sys(libc::SYS_setfsgid, [fsgid.into(), 0, 0])?;
        sys(libc::SYS_setresuid, [ruid.into(), euid.into(), suid.into()])?;
        if fsuid != euid {
            let permitted = Creds::current().map_or(0, |c| c.caps[1]);
            capset([permitted, permitted, 0])?;
            sys(libc::SYS_setfsuid, [fsuid.into(), 0, 0])?;
        }
        capset(self.caps)?;
        sys(libc::SYS_prctl, [libc::PR_SET_KEEPCAPS as u64, 0, 0])?;
        match Creds::current() {
            Some(now) if now == *self => Ok(()),
            now => Err(io::Error::other(format!(
                "the thread has {now:?} instead of the caller's {self:?}"
            ))),
        }
    }
}

/// True when `ns` (a `/proc/.../ns/user` link) is the supervisor's user
/// namespace.
fn same_user_namespace(ns: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(ns),
        std::fs::metadata("/proc/self/ns/user"),
    ) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// A raw system call of up to three arguments (never the libc wrapper,
/// which would apply a credential change to every thread).
fn sys(nr: libc::c_long, a: [u64; 3]) -> io::Result<()> {
    // SAFETY: the callers pass valid pointers for the call's arguments.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2]) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `capset(2)`, version 3: `[effective, permitted, inheritable]` of the
/// calling thread.
fn capset(caps: [u64; 3]) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let half = |v: u64, hi: bool| if hi { (v >> 32) as u32 } else { v as u32 };
    let data: [Data; 2] = [false, true].map(|hi| Data {
        effective: half(caps[0], hi),
        permitted: half(caps[1], hi),
        inheritable: half(caps[2], hi),
    });
    sys(
        libc::SYS_capset,
        [&header as *const Header as u64, data.as_ptr() as u64, 0],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let status = "Name:\tx\nUid:\t1000\t1001\t1002\t1003\nGid:\t5\t6\t7\t8\nGroups:\t27 4 27 \n\
                      CapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t0000000000000400\n";
        let c = Creds::parse(status).unwrap();
        assert_eq!(c.uids, [1000, 1001, 1002, 1003]);
        assert_eq!(c.gids, [5, 6, 7, 8]);
        assert_eq!(c.groups, vec![4, 27]);
        assert_eq!(c.caps, [0x400, 0x1ff_ffff_ffff, 0]);
        assert!(Creds::current().is_some());
    }
}
