//! Which network namespace a socket lookup is for. The listener registry
//! (`bpf/listeners.h`) is keyed by network namespace, so that a listener in
//! one namespace never stands for another's on the same address and port;
//! but no kernel up to 6.18 lets an `sk_lookup` program learn its namespace
//! (`bpf_get_netns_cookie()` is not among its helpers, nor is any way to
//! the namespace). So each namespace gets, attached just ahead of
//! `sf_sk_lookup`, a program of a few instructions loaded for that
//! namespace alone, with the namespace's cookie as a constant: it stores the
//! cookie in the per-CPU map `lookup_netns`, where `sf_sk_lookup`, run next
//! on the same CPU, takes it.
//!
//! The program is built here rather than compiled from C: it must be loaded
//! once per namespace with its own constant and must use the main object's
//! map, which aya can only share through a bpffs pin (and enforce is not
//! always pinned); twelve instructions verify in microseconds.
//!
//! The namespace is named by its cookie (`SO_NETNS_COOKIE`, the
//! `net_cookie` the BPF side reads from a socket), which the kernel never
//! gives to another namespace while it runs; an inode number is reused as
//! soon as its namespace is gone.

use crate::features::bpf::{self, Insn, ProgSpec};
use aya_obj::generated::{bpf_attach_type, bpf_prog_type};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The name the kernel shows for the tag programs (`bpftool prog`).
pub const PROGRAM_NAME: &str = "sf_netns_tag";

/// Socket lookup attached to one network namespace: the namespace's inode
/// and cookie, and its links (the tag program's, held also to tell whether
/// the namespace still lives; `sf_sk_lookup`'s when this process attached
/// it). Dropping it closes them: unless they are pinned, that detaches
/// them, and the kernel frees the tag program.
#[derive(Debug)]
pub struct NetnsAttachment {
    /// The namespace's inode number (`/proc/PID/ns/net`).
    pub ino: u64,
    /// The namespace's cookie.
    pub cookie: u64,
    link: OwnedFd,
    main: Option<aya::programs::links::FdLink>,
}

impl NetnsAttachment {
    /// An attachment whose tag program's link is `link`, and
    /// `sf_sk_lookup`'s `main` (None: only pinned, by an enforcer whose
    /// state was adopted).
    pub fn new(
        ino: u64,
        cookie: u64,
        link: OwnedFd,
        main: Option<aya::programs::links::FdLink>,
    ) -> NetnsAttachment {
        NetnsAttachment {
            ino,
            cookie,
            link,
            main,
        }
    }

    /// Pins both links in `scope` (they were attached unpinned, next to
    /// another build's enforcement that this one replaces).
    pub fn pin_in(&mut self, scope: &crate::pinned::PinnedScope) -> io::Result<()> {
        let main = self
            .main
            .take()
            .ok_or_else(|| io::Error::other("sf_sk_lookup's link is not held"))?;
        self.main = Some(scope.pin_sk_lookup(main, &self.link, self.ino, self.cookie)?);
        Ok(())
    }

    /// The tag program's link.
    pub fn link(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }

    /// Whether the namespace is the one attached to and still lives: the
    /// kernel detaches a namespace's links when it dies (their namespace
    /// inode then reads 0), and only then may its inode number be reused.
    pub fn is_live(&self) -> bool {
        crate::bpf_syscall::link_netns(self.link.as_fd()) == Some(self.ino as u32)
    }
}

/// The cookie of network namespace `netns` (an open `/proc/PID/ns/net`):
/// asked of a socket made inside it, on a thread that enters it.
pub fn cookie(netns: &File) -> io::Result<u64> {
    std::thread::scope(|s| {
        s.spawn(|| -> io::Result<u64> {
            nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)?;
            // SAFETY: plain syscall; the descriptor is owned on success.
            let fd =
                unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a new descriptor we own.
            let sock = unsafe { OwnedFd::from_raw_fd(fd) };
            let mut value = 0u64;
            let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
            // SAFETY: value and len are valid for the option's size.
            let r = unsafe {
                libc::getsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_NETNS_COOKIE,
                    (&mut value as *mut u64).cast(),
                    &mut len,
                )
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(value)
        })
        .join()
        .map_err(|_| io::Error::other("namespace thread panicked"))?
    })
}

/// The tag program of namespace `cookie`, for map `lookup_netns`:
///
/// ```c
/// __u32 zero = 0;
/// __u64 *tag = bpf_map_lookup_elem(&lookup_netns, &zero);
/// if (tag)
///         *tag = COOKIE;
/// return SK_PASS; /* selects no socket: decides nothing */
/// ```
fn program(map: BorrowedFd<'_>, cookie: u64) -> Vec<Insn> {
    /// BPF_FUNC_map_lookup_elem.
    const MAP_LOOKUP_ELEM: i32 = 1;
    /// SK_PASS.
    const PASS: i32 = 1;
    let mut p = vec![Insn::store_imm_u32(10, -4, 0)];
    p.extend(Insn::load_map_fd(1, map.as_raw_fd()));
    p.push(Insn::mov(2, 10));
    p.push(Insn::add_imm(2, -4));
    p.push(Insn::call_helper(MAP_LOOKUP_ELEM));
    p.push(Insn::jump_if_eq(0, 0, 3)); // NULL: over the next three
    p.extend(Insn::load_imm64(1, cookie));
    p.push(Insn::store_u64(0, 1, 0));
    p.push(Insn::ret_imm(PASS));
    p.push(Insn::exit());
    p
}

/// Loads the tag program of namespace `cookie` (writing into `map`,
/// `lookup_netns`) and attaches it to socket lookup in `netns`. Attach it
/// before `sf_sk_lookup`: programs of one namespace run in attach order.
/// The link lives as long as the returned descriptor, or a pin of it.
pub fn attach(map: BorrowedFd<'_>, netns: &File, cookie: u64) -> Result<OwnedFd, String> {
    let insns = program(map, cookie);
    let prog = bpf::load_named(
        &ProgSpec {
            prog_type: bpf_prog_type::BPF_PROG_TYPE_SK_LOOKUP,
            attach: Some(bpf_attach_type::BPF_SK_LOOKUP),
            attach_btf_id: 0,
            insns: &insns,
        },
        PROGRAM_NAME,
    )?;
    bpf::link_create(&prog, netns.as_fd(), bpf_attach_type::BPF_SK_LOOKUP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_has_one_cookie_and_never_zero() {
        let ns = File::open("/proc/self/ns/net").unwrap();
        let a = cookie(&ns).unwrap();
        assert_ne!(a, 0);
        assert_eq!(cookie(&ns).unwrap(), a, "stable");
    }
}
