//! Destroying a live TCP or UDP socket from user space, by its cookie.
//!
//! Two mechanisms, chosen once per process ([`destroy_method`]):
//! - `iter`: a BPF socket iterator calling the `bpf_sock_destroy()` kfunc
//!   (Linux >= 6.5): matches the cookie on every socket of the namespace, so
//!   each member of an SO_REUSEPORT group is reachable.
//! - `sock_diag`: netlink `SOCK_DESTROY`, as `ss -K` does, on kernels
//!   without the kfunc; it finds the socket by a lookup on its address, which
//!   picks one SO_REUSEPORT member by a hash of the peer: other members are
//!   reached by asking again with other (made-up) peer ports.

mod iter;
mod sock_diag;

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

/// Which socket [`destroy`] closes, and where it lives: exactly what an
/// [`Event`](sockfilter_model::Event) (or a [`Flow`](sockfilter_model::flow::Flow))
/// carries.
///
/// ```
/// use sockfilter::diag::DestroyTarget;
/// use sockfilter::model::event::*;
/// use std::net::{IpAddr, Ipv4Addr};
/// let ep = |port| Endpoint::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
/// let accept = Event {
///     kind: EventKind::Accept,
///     time: std::time::UNIX_EPOCH,
///     verdict: Verdict::Allow,
///     rule: None,
///     owner: Some(Owner { pid: 42, ..Default::default() }),
///     proto: Proto::Tcp,
///     family: Family::Ipv4,
///     local: ep(8080),
///     remote: Some(ep(40000)),
///     socket: 0x1234,
///     existing: false,
///     netns: Some(4026531840),
///     remote_host: None,
///     details: Details::default(),
/// };
/// let target = DestroyTarget::from(&accept);
/// assert_eq!((target.cookie, target.pid), (0x1234, Some(42)));
/// // sockfilter::diag::destroy(&target)?; // as root: the peer gets a reset
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DestroyTarget {
    /// The socket's address family.
    pub family: sockfilter_model::Family,
    /// TCP or UDP.
    pub proto: sockfilter_model::Proto,
    /// The socket's local endpoint.
    pub local: sockfilter_model::Endpoint,
    /// The peer; None for listeners and unconnected UDP sockets.
    pub remote: Option<sockfilter_model::Endpoint>,
    /// The socket cookie (the event's `socket`): only the socket with this
    /// cookie is destroyed, never another one that took its address.
    pub cookie: u64,
    /// Inode of the socket's network namespace (the event's `netns`). None:
    /// the namespace of `pid`, or the caller's when `pid` is None too.
    pub netns: Option<u64>,
    /// A process in the socket's namespace, normally its owner: the
    /// namespace is entered through `/proc/PID/ns/net`. When it has exited,
    /// any process in namespace `netns` is used.
    pub pid: Option<u32>,
}

impl From<&sockfilter_model::Event> for DestroyTarget {
    fn from(e: &sockfilter_model::Event) -> DestroyTarget {
        DestroyTarget {
            family: e.family,
            proto: e.proto,
            local: e.local,
            remote: e.remote,
            cookie: e.socket,
            netns: e.netns,
            pid: e.owner.as_ref().map(|o| o.pid),
        }
    }
}

impl From<&sockfilter_model::flow::Flow> for DestroyTarget {
    fn from(f: &sockfilter_model::flow::Flow) -> DestroyTarget {
        DestroyTarget {
            family: f.family,
            proto: f.proto,
            local: f.local,
            remote: f.remote,
            cookie: f.id,
            netns: f.netns,
            pid: f.owner.as_ref().map(|o| o.pid),
        }
    }
}

/// Why [`destroy`] did not close the socket.
#[derive(Debug, thiserror::Error)]
pub enum DestroyError {
    /// The kernel has no SOCK_DESTROY for this protocol.
    #[error("this kernel cannot destroy sockets from user space (SOCK_DESTROY answered EOPNOTSUPP): it needs CONFIG_INET_DIAG_DESTROY=y and the inet_diag, tcp_diag and udp_diag modules")]
    Unsupported,
    /// The caller lacks CAP_NET_ADMIN over the socket's namespace.
    #[error(
        "destroying a socket needs CAP_NET_ADMIN in the socket's network namespace (run as root)"
    )]
    PermissionDenied,
    /// No socket with this cookie at these endpoints: it already closed.
    #[error("socket {cookie:#x} no longer exists (already closed)")]
    NotFound {
        /// The cookie asked for.
        cookie: u64,
    },
    /// The socket's namespace has no process left to enter it through.
    #[error("network namespace {netns} has no process to enter it through")]
    NoNamespace {
        /// The namespace inode.
        netns: u64,
    },
    /// Any other failure of the netlink exchange or of entering the namespace.
    #[error("SOCK_DESTROY failed: {0}")]
    Io(#[from] io::Error),
}

/// Which mechanism [`destroy`] uses in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestroyMethod {
    /// BPF socket iterators and the `bpf_sock_destroy()` kfunc.
    BpfIterator,
    /// sock_diag `SOCK_DESTROY`; `why` says why the iterators are not used.
    SockDiag {
        /// Why the BPF iterators could not be loaded.
        why: String,
    },
}

impl std::fmt::Display for DestroyMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DestroyMethod::BpfIterator => f.write_str("BPF socket iterator + bpf_sock_destroy()"),
            DestroyMethod::SockDiag { why } => {
                write!(f, "sock_diag SOCK_DESTROY (no BPF iterator destroy: {why})")
            }
        }
    }
}

/// The iterators, loaded on first use; Err: why they cannot be.
static ITERATORS: Mutex<Option<Result<iter::Iterators, String>>> = Mutex::new(None);

/// Runs `f` with the iterators, loading them on first use; None when this
/// kernel or process cannot have them.
fn with_iterators<T>(f: impl FnOnce(&mut iter::Iterators) -> T) -> Result<T, String> {
    let mut guard = ITERATORS.lock().unwrap_or_else(|e| e.into_inner());
    match guard.get_or_insert_with(iter::Iterators::load) {
        Ok(it) => Ok(f(it)),
        Err(why) => Err(why.clone()),
    }
}

/// Which mechanism [`destroy`] uses here (loading the BPF iterators if that
/// has not happened yet).
pub fn destroy_method() -> DestroyMethod {
    match with_iterators(|_| ()) {
        Ok(()) => DestroyMethod::BpfIterator,
        Err(why) => DestroyMethod::SockDiag { why },
    }
}

/// Destroys `t` in the calling thread's network namespace.
fn destroy_here(t: &DestroyTarget) -> Result<(), DestroyError> {
    if t.cookie == 0 {
        // Not a socket's cookie: the kernel gives cookies from 1, and 0
        // stands for every socket that has not been given one yet.
        return Err(DestroyError::NotFound { cookie: 0 });
    }
    match with_iterators(|it| it.destroy_here(t)) {
        Ok(result) => result,
        Err(_) => sock_diag::destroy_here(t),
    }
}

/// Destroys `t` through sock_diag's `SOCK_DESTROY`, in the calling thread's
/// namespace, whatever [`destroy_method`] says: the path of kernels without
/// `bpf_sock_destroy()`, public so that its tests run on every kernel.
#[doc(hidden)]
pub fn destroy_through_sock_diag(t: &DestroyTarget) -> Result<(), DestroyError> {
    sock_diag::destroy_here(t)
}

/// Opens `/proc/PID/ns/net` of a process in namespace `netns`: `pid` when it
/// is still there, otherwise any process in it.
fn namespace_file(netns: u64, pid: Option<u32>) -> Result<std::fs::File, DestroyError> {
    use std::os::unix::fs::MetadataExt;
    let open = |pid: u32| {
        let f = std::fs::File::open(format!("/proc/{pid}/ns/net")).ok()?;
        (f.metadata().ok()?.ino() == netns).then_some(f)
    };
    pid.and_then(open)
        .or_else(|| crate::procfs::pids().into_iter().find_map(open))
        .ok_or(DestroyError::NoNamespace { netns })
}

/// Destroys one live TCP or UDP socket, by cookie, in the socket's own
/// network namespace ([`destroy_method`] says which mechanism).
///
/// - A TCP connection is aborted: the peer receives a reset (its next
///   `recv()` fails with `ECONNRESET`, or sees end of file), the owner's next
///   call on the socket fails with `ECONNABORTED`.
/// - A TCP listener stops listening: connections in its accept queue are
///   reset, new `connect()`s to it are refused, its owner's `accept()` fails.
/// - A UDP socket is disconnected and its owner's next call fails with
///   `ECONNABORTED`; it is unhashed (receives nothing more) only if its port
///   was chosen by the kernel: one bound to an explicit port stays bound
///   and goes on receiving (enforce also gives it a locked drop-all filter,
///   [`crate::enforce::deafen`]).
///
/// The socket is named by its endpoints *and* its cookie, so a socket that
/// has since closed is reported as [`DestroyError::NotFound`], never
/// confused with one that reused its address. Link-local IPv6 addresses
/// bound to a specific interface are looked up with interface 0 (the event
/// does not carry the interface).
///
/// This acts after the fact: the kernel has no way to hold a `listen()`,
/// `connect()` or `accept()` while user space decides, so whatever the socket
/// did between its event and this call (the handshake, a first request) has
/// happened. Measured on a 2-core VM (release build) from the event's
/// kernel timestamp to the completed destroy, through
/// [`Session::run_filter`](crate::session::Session::run_filter): p50 about
/// 70 µs, p99 about 140 µs, max 250 µs (`docs/porting-from-macos.md`). For a
/// synchronous verdict use `sockfilter supervise`, which blocks the calling
/// process in the system call until it is answered.
///
/// Needs CAP_NET_ADMIN ([`DestroyError::PermissionDenied`]) and a kernel
/// with `CONFIG_INET_DIAG_DESTROY=y` ([`DestroyError::Unsupported`]).
/// Blocks the calling thread for the netlink round trip (tens of
/// microseconds; a short-lived thread is started when the socket lives in
/// another network namespace).
pub fn destroy(target: &DestroyTarget) -> Result<(), DestroyError> {
    let mine = crate::procfs::netns_inode(std::process::id());
    let netns = match (target.netns, target.pid) {
        (Some(ns), _) => Some(ns),
        (None, Some(pid)) => crate::procfs::netns_inode(pid),
        (None, None) => None,
    };
    match netns {
        None => destroy_here(target),
        Some(ns) if Some(ns) == mine => destroy_here(target),
        Some(ns) => {
            let file = namespace_file(ns, target.pid)?;
            let target = *target;
            std::thread::spawn(move || -> Result<(), DestroyError> {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)?;
                destroy_here(&target)
            })
            .join()
            .map_err(|_| io::Error::other("namespace thread panicked"))?
        }
    }
}

/// Destroys many sockets, like [`destroy`] for each, but with one walk of
/// the BPF iterators per network namespace and protocol instead of one per
/// socket (a walk visits every socket of the namespace): what judging the
/// sockets that exist at start needs on a host with thousands. Results in
/// the order of `targets`.
pub fn destroy_all(targets: &[DestroyTarget]) -> Vec<Result<(), DestroyError>> {
    let mine = crate::procfs::netns_inode(std::process::id());
    let mut by_netns: std::collections::BTreeMap<Option<u64>, Vec<usize>> = Default::default();
    for (i, t) in targets.iter().enumerate() {
        let netns = match (t.netns, t.pid) {
            (Some(ns), _) => Some(ns),
            (None, Some(pid)) => crate::procfs::netns_inode(pid),
            (None, None) => None,
        };
        by_netns
            .entry(netns.filter(|&ns| Some(ns) != mine))
            .or_default()
            .push(i);
    }
    let mut results: Vec<Option<Result<(), DestroyError>>> = targets.iter().map(|_| None).collect();
    for (netns, indexes) in by_netns {
        let group: Vec<DestroyTarget> = indexes.iter().map(|&i| targets[i]).collect();
        let outcome = match netns {
            None => destroy_many_here(&group),
            Some(ns) => match namespace_file(ns, group[0].pid) {
                Err(e) => {
                    let why = e.to_string();
                    group
                        .iter()
                        .map(|_| Err(io::Error::other(why.clone()).into()))
                        .collect()
                }
                Ok(file) => std::thread::spawn(move || {
                    match nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET) {
                        Ok(()) => destroy_many_here(&group),
                        Err(e) => group
                            .iter()
                            .map(|_| Err(io::Error::from(e).into()))
                            .collect(),
                    }
                })
                .join()
                .unwrap_or_else(|_| {
                    indexes
                        .iter()
                        .map(|_| Err(io::Error::other("namespace thread panicked").into()))
                        .collect()
                }),
            },
        };
        for (&i, r) in indexes.iter().zip(outcome) {
            results[i] = Some(r);
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(DestroyError::NotFound { cookie: 0 })))
        .collect()
}

/// [`destroy_all`] in the calling thread's namespace.
fn destroy_many_here(targets: &[DestroyTarget]) -> Vec<Result<(), DestroyError>> {
    let (zero, real): (Vec<usize>, Vec<usize>) =
        (0..targets.len()).partition(|&i| targets[i].cookie == 0);
    let real_targets: Vec<DestroyTarget> = real.iter().map(|&i| targets[i]).collect();
    let outcome = match with_iterators(|it| it.destroy_many_here(&real_targets)) {
        Ok(results) => results,
        Err(_) => real_targets.iter().map(sock_diag::destroy_here).collect(),
    };
    let mut results: Vec<Option<Result<(), DestroyError>>> = targets.iter().map(|_| None).collect();
    for i in zero {
        results[i] = Some(Err(DestroyError::NotFound { cookie: 0 }));
    }
    for (&i, r) in real.iter().zip(outcome) {
        results[i] = Some(r);
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(DestroyError::NotFound { cookie: 0 })))
        .collect()
}

/// Checks, without touching any socket, that [`destroy`] can work here: the
/// caller has CAP_NET_ADMIN and the kernel can destroy TCP and UDP sockets,
/// through the BPF iterators or else `SOCK_DESTROY` (asked to destroy a
/// socket that cannot exist, it must answer "not found"). Call it at start
/// to fail early with a clear error.
pub fn destroy_supported() -> Result<(), DestroyError> {
    /// Bit of CAP_NET_ADMIN in the capability sets (linux/capability.h).
    const CAP_NET_ADMIN: u32 = 12;
    let cap_eff = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    if cap_eff & (1 << CAP_NET_ADMIN) == 0 {
        return Err(DestroyError::PermissionDenied);
    }
    if destroy_method() == DestroyMethod::BpfIterator {
        return Ok(()); // loaded and verified: nothing more to ask the kernel
    }
    sock_diag_supported()
}

/// Whether sock_diag implements `SOCK_DESTROY` for TCP and UDP here, whichever
/// mechanism [`destroy`] uses: asked to destroy a socket that cannot exist,
/// it must answer "not found" (`sockfilter doctor` reports it).
pub fn sock_diag_supported() -> Result<(), DestroyError> {
    for proto in [sockfilter_model::Proto::Tcp, sockfilter_model::Proto::Udp] {
        let target = DestroyTarget {
            family: sockfilter_model::Family::Ipv4,
            proto,
            local: sockfilter_model::Endpoint::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            remote: Some(sockfilter_model::Endpoint::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                0,
            )),
            cookie: 0,
            netns: None,
            pid: None,
        };
        match sock_diag::destroy_here(&target) {
            Err(DestroyError::NotFound { .. }) | Ok(()) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
