//! The kernel backstop for TCP: a Landlock domain, installed in the child
//! with the seccomp filter, in which the program itself can neither bind
//! nor connect a TCP socket (Landlock ABI 4, Linux 6.7).
//!
//! Every allowed TCP `bind` and `connect` of the program is performed by
//! the supervisor, which is outside the domain. What the kernel runs in the
//! program itself is a call that the supervisor let *continue* because the
//! socket was not an IP socket when it looked: if another thread of the
//! program `dup2()`s a TCP socket onto that file descriptor number in
//! between, the call reaches a TCP socket undecided — and Landlock refuses
//! it with `EACCES`.

/// `struct landlock_ruleset_attr` as of ABI 4.
#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
}

const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
const LANDLOCK_ACCESS_NET_BIND_TCP: u64 = 1;
const LANDLOCK_ACCESS_NET_CONNECT_TCP: u64 = 2;

/// Restricts the calling process (in the child, after `PR_SET_NO_NEW_PRIVS`)
/// so that it cannot bind or connect TCP sockets itself. Returns 0 when the
/// domain is in place, else the errno why not (`EOPNOTSUPP`: Landlock is
/// disabled, `ENOSYS`: not built, `EINVAL`: ABI below 4).
/// Async-signal-safe: raw system calls only.
pub(super) fn restrict_tcp() -> i32 {
    // SAFETY: raw system calls with valid pointers (or null as documented).
    unsafe {
        let abi = libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        );
        if abi < 0 {
            return *libc::__errno_location();
        }
        if abi < 4 {
            return libc::EINVAL;
        }
        let attr = RulesetAttr {
            handled_access_fs: 0,
            handled_access_net: LANDLOCK_ACCESS_NET_BIND_TCP | LANDLOCK_ACCESS_NET_CONNECT_TCP,
        };
        let fd = libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        );
        if fd < 0 {
            return *libc::__errno_location();
        }
        let r = libc::syscall(libc::SYS_landlock_restrict_self, fd as i32, 0u32);
        let err = *libc::__errno_location();
        libc::close(fd as i32);
        if r < 0 {
            return err;
        }
    }
    0
}
