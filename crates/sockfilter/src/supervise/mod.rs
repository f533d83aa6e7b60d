//! Supervised mode: seccomp user notification holds a program's socket calls
//! until user space decides.
//!
//! [`Supervisor`] runs a command with a seccomp filter, installed in the child
//! between `fork` and `exec` (with `PR_SET_NO_NEW_PRIVS`, so no privilege is
//! needed), that turns `bind`, `listen`, `connect`, `accept`, `accept4`,
//! `sendto` with a destination, `sendmsg` and `sendmmsg` into
//! `SECCOMP_RET_USER_NOTIF`. Every such call of the command and of all its
//! descendants waits until the supervisor has asked the decision callback
//! (`Fn(&Request) -> Verdict`) and answered.
//!
//! Calls on AF_INET/AF_INET6 sockets are *emulated*: the supervisor takes a
//! duplicate of the socket with `pidfd_getfd(2)`, reads the pointer arguments
//! (the socket address, the payload) exactly once, decides on that copy and
//! performs the call itself on the duplicate with the same copy, so a thread
//! of the program that rewrites the address after the decision changes
//! nothing. The call itself runs on a thread with the caller's credentials
//! (`credentials`, `workers`), so the program borrows none of the
//! supervisor's. Calls on other sockets (AF_UNIX, netlink, ...) carry no
//! decision and continue in the kernel (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`);
//! a Landlock domain (`landlock`) refuses the TCP bind or connect that a
//! `dup2()` race could make of such a call. The guarantees and their limits
//! are in `docs/security.md`.
//!
//! Files: `filter` (the seccomp filter), `child` and `landlock` (installed
//! between fork and exec), `supervisor` and `request` (the public API),
//! `notify` (the notification loop), `call` (one held call), `caller` (who
//! it is), `credentials` and `workers` (performing calls with the caller's
//! credentials), `waiter` (blocked accepts), `socket` and `sockaddr`, and one
//! emulation per system call family: `bind_listen`, `connect_send` (with
//! `message`), `accept`.
//!
//! ```no_run
//! use sockfilter::supervise::{Operation, Supervisor, Verdict};
//! use std::process::Command;
//! let status = Supervisor::new(|req| {
//!     if req.op == Operation::Listen && req.local.map(|e| e.port) == Some(8080) {
//!         Verdict::deny().with_rule("no-8080")
//!     } else {
//!         Verdict::allow()
//!     }
//! })
//! .on_event(|ev| println!("{}", ev.to_json()))
//! .run(&mut Command::new("python3"))
//! .unwrap();
//! # let _ = status;
//! ```

mod accept;
mod bind_listen;
mod call;
mod caller;
mod child;
mod connect_send;
mod credentials;
mod filter;
mod landlock;
mod message;
mod notify;
mod request;
mod sockaddr;
mod socket;
mod supervisor;
mod sys;
mod waiter;
mod workers;

pub use request::{Operation, Request, Syscall, Verdict};
pub use supervisor::{SuperviseError, Supervised, Supervisor};
