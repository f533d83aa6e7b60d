//! `FlowVerdict::Drop` / `diag::destroy` against the real kernel: a
//! session in the test's own cgroup, real python3 sockets, and what the
//! processes see afterwards.

mod common;

use common::*;
use sockfilter::destroy::{destroy_method, DestroyMethod};
use sockfilter::filter::{DropOutcome, FlowVerdict, SocketFilter};
use sockfilter::model::flow::{Flow, FlowState};
use sockfilter::session::Session;
use std::sync::mpsc;
use std::time::Duration;

/// What the filter saw: a drop and how it went.
#[derive(Debug)]
enum Seen {
    Started,
    Dropped {
        flow: Box<Flow>,
        ok: Result<(), String>,
        latency: Duration,
    },
}

struct Dropper<P> {
    pred: P,
    tx: mpsc::Sender<Seen>,
}

impl<P: FnMut(&Flow) -> bool> SocketFilter for Dropper<P> {
    fn on_start(&mut self) {
        let _ = self.tx.send(Seen::Started);
    }
    fn handle_new_flow(&mut self, flow: &Flow) -> FlowVerdict {
        if (self.pred)(flow) {
            FlowVerdict::Drop
        } else {
            FlowVerdict::Allow
        }
    }
    fn on_drop(&mut self, flow: &Flow, outcome: &DropOutcome) {
        let _ = self.tx.send(Seen::Dropped {
            flow: Box::new(flow.clone()),
            ok: outcome.result.as_ref().map_err(|e| e.to_string()).copied(),
            latency: outcome.latency,
        });
    }
}

/// A session running a dropping filter on its own thread; stopped and
/// joined (programs detached) on drop.
struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub rx: mpsc::Receiver<Seen>,
}

impl Running {
    fn start(
        cg: &TestCgroup,
        existing: bool,
        pred: impl FnMut(&Flow) -> bool + Send + 'static,
    ) -> Running {
        let (tx, rx) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let session = Session::new().cgroup(&cg.path).existing(existing);
        let errtx = tx.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let res = rt.block_on(session.run_filter_until(Dropper { pred, tx }, stopped));
            if let Err(e) = res {
                drop(errtx);
                panic!("session failed: {e}");
            }
        });
        let r = Running {
            stop: Some(stop),
            thread: Some(thread),
            rx,
        };
        recv_until(&r.rx, "session start", |s| matches!(s, Seen::Started));
        r
    }

    fn next_drop(&self, what: &str) -> (Flow, Result<(), String>, Duration) {
        match recv_until(&self.rx, what, |s| matches!(s, Seen::Dropped { .. })) {
            Seen::Dropped { flow, ok, latency } => (*flow, ok, latency),
            Seen::Started => unreachable!(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const ATTEMPT: &str = r#"
import errno
def attempt(f):
    try:
        return "ok:%r" % (f(),)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
"#;

#[test]
fn dropping_an_accepted_connection_resets_the_peer_and_fails_the_owner() {
    let cg = TestCgroup::new("drop-conn");
    let mut p = python(
        &cg,
        None,
        &format!(
            r#"{ATTEMPT}
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
port = s.getsockname()[1]
print(port)
sys.stdin.readline()
c = socket.create_connection(("127.0.0.1", port)); a, _ = s.accept()
print(c.getsockname()[1])
sys.stdin.readline()
c.settimeout(10)
print(attempt(lambda: c.recv(100)), attempt(lambda: a.recv(100)), attempt(lambda: a.send(b"x")))
"#
        ),
    );
    let port: u16 = p.line().parse().unwrap();
    let run = Running::start(&cg, false, move |f| {
        f.listener.is_some() && f.local.port == port
    });
    p.send("go");
    let cport: u16 = p.line().parse().unwrap();
    let (flow, ok, latency) = run.next_drop("drop of the accepted connection");
    assert_eq!(ok, Ok(()), "destroy failed");
    assert_eq!(flow.remote.map(|r| r.port), Some(cport));
    assert_eq!(flow.state, FlowState::Established);
    assert_eq!(flow.owner.as_ref().map(|o| o.pid), Some(p.pid()));
    eprintln!("destroy latency: {latency:?}");
    p.send("go");
    let results = p.line();
    let r: Vec<&str> = results.split_whitespace().collect();
    assert!(
        r[0] == "ECONNRESET" || r[0] == "ok:b''",
        "client sees a reset or EOF: {results}"
    );
    assert_eq!(
        r[1], "ECONNABORTED",
        "the server's next read fails: {results}"
    );
    assert!(
        !r[2].starts_with("ok"),
        "and so does its next write: {results}"
    );
}

#[test]
fn dropping_listeners_makes_connect_fail() {
    let cg = TestCgroup::new("drop-listen");
    let mut p = python(
        &cg,
        None,
        &format!(
            r#"{ATTEMPT}
import socket, sys
old = socket.socket(); old.bind(("127.0.0.1", 0)); old.listen()
print(old.getsockname()[1])
sys.stdin.readline()
new = socket.socket(socket.AF_INET6); new.bind(("::", 0)); new.listen()
print(new.getsockname()[1])
sys.stdin.readline()
r = []
for port in (old.getsockname()[1], new.getsockname()[1]):
    r.append(attempt(lambda: socket.create_connection(("127.0.0.1", port), timeout=10)))
old.settimeout(5)
r.append(attempt(lambda: old.accept()))
print(*r)
"#
        ),
    );
    let old: u16 = p.line().parse().unwrap();
    // Existing listeners go through handle_new_flow too.
    let run = Running::start(&cg, true, |f| f.state == FlowState::Listening);
    let (flow, ok, _) = run.next_drop("drop of the existing listener");
    assert_eq!((flow.local.port, flow.existing, ok), (old, true, Ok(())));
    p.send("go");
    let new: u16 = p.line().parse().unwrap();
    let (flow, ok, _) = run.next_drop("drop of the new listener");
    assert_eq!((flow.local.port, flow.existing, ok), (new, false, Ok(())));
    assert_eq!(flow.family.as_str(), "ipv6");
    p.send("go");
    let results = p.line();
    assert_eq!(
        results, "ECONNREFUSED ECONNREFUSED EINVAL",
        "connect to both dropped listeners is refused; accept fails"
    );
}

#[test]
fn dropping_a_bound_udp_socket_fails_its_next_receive() {
    let cg = TestCgroup::new("drop-udp");
    let mut p = python(
        &cg,
        None,
        &format!(
            r#"{ATTEMPT}
import socket, sys
sys.stdin.readline()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
print(u.getsockname()[1])
sys.stdin.readline()
u.settimeout(10)
print(attempt(lambda: u.recv(100)))
"#
        ),
    );
    let run = Running::start(&cg, false, |f| f.proto.as_str() == "udp");
    p.send("go");
    let port: u16 = p.line().parse().unwrap();
    let (flow, ok, _) = run.next_drop("drop of the UDP socket");
    // The drop can land before the program asks for its port, which then
    // reads 0 (the destroyed socket is unbound).
    assert!(
        port == flow.local.port || port == 0,
        "{port} vs {}",
        flow.local.port
    );
    assert_ne!(flow.local.port, 0);
    assert_eq!((flow.remote, ok), (None, Ok(())));
    p.send("go");
    assert_eq!(p.line(), "ECONNABORTED");
}

#[test]
fn destroy_in_another_network_namespace_and_of_a_closed_socket() {
    let cg = TestCgroup::new("drop-netns");
    let ns = TestNetns::new("drop");
    let mut p = python(
        &cg,
        Some(&ns),
        &format!(
            r#"{ATTEMPT}
import socket, sys
sys.stdin.readline()
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1])
sys.stdin.readline()
print(attempt(lambda: socket.create_connection(("127.0.0.1", s.getsockname()[1]), timeout=10)))
"#
        ),
    );
    let run = Running::start(&cg, false, |f| f.state == FlowState::Listening);
    p.send("go");
    let port: u16 = p.line().parse().unwrap();
    let (flow, ok, _) = run.next_drop("drop of the listener in the namespace");
    assert_eq!((flow.local.port, ok), (port, Ok(())));
    assert_ne!(
        flow.netns,
        sockfilter::procfs::netns_inode(std::process::id())
    );
    p.send("go");
    assert_eq!(p.line(), "ECONNREFUSED");
    // The same socket again: it no longer exists.
    let again = sockfilter::diag::destroy(&(&flow).into());
    assert!(
        matches!(again, Err(sockfilter::diag::DestroyError::NotFound { .. })),
        "{again:?}"
    );
}

/// Latency from the kernel timestamp of the event that opened a flow to the
/// completed destroy, over many connections opened one after another (each
/// waits, blocked in recv(), for its destroy). Printed (run with
/// `--nocapture` to see it) and bounded loosely.
#[test]
fn destroy_latency() {
    const N: usize = 300;
    let cg = TestCgroup::new("drop-latency");
    let mut p = python(
        &cg,
        None,
        &format!(
            r#"
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1024)
print(s.getsockname()[1])
sys.stdin.readline()
bad = 0
for i in range({N}):
    c = socket.create_connection(("127.0.0.1", s.getsockname()[1])); a, _ = s.accept()
    a.settimeout(10)
    # One at a time: the blocked recv() fails when the socket is destroyed.
    try:
        a.recv(1); bad += 1
    except ConnectionAbortedError:
        pass
    c.close(); a.close()
print("done", bad)
sys.stdin.readline()
"#
        ),
    );
    let port: u16 = p.line().parse().unwrap();
    let run = Running::start(&cg, false, move |f| {
        f.listener.is_some() && f.local.port == port
    });
    p.send("go");
    let mut lat: Vec<Duration> = (0..N)
        .map(|_| {
            let (_, ok, l) = run.next_drop("a drop");
            assert_eq!(ok, Ok(()));
            l
        })
        .collect();
    assert_eq!(p.line(), "done 0", "every recv() was failed by the destroy");
    lat.sort();
    let p50 = lat[N / 2];
    let p99 = lat[N * 99 / 100];
    let max = lat[N - 1];
    eprintln!("destroy latency over {N} accepted connections: p50 {p50:?} p99 {p99:?} max {max:?}");
    assert!(p50 < Duration::from_millis(50), "p50 {p50:?}");
}

#[test]
fn this_kernel_supports_destroy() {
    // CONFIG_INET_DIAG_DESTROY=y, or the bpf_sock_destroy() kfunc; as root.
    sockfilter::diag::destroy_supported().expect("destroy usable");
}

/// Kernels with BPF socket iterators and bpf_sock_destroy() (6.5+) destroy
/// by cookie; the method says so, and says why when it is not available.
#[test]
fn destroy_uses_the_bpf_iterator_where_the_kernel_has_the_kfunc() {
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").expect("kernel BTF");
    let has_kfunc = btf.windows(17).any(|w| w == b"bpf_sock_destroy\0");
    match destroy_method() {
        DestroyMethod::BpfIterator => assert!(has_kfunc),
        DestroyMethod::SockDiag { why } if !has_kfunc => {
            panic!("not supported: bpf_sock_destroy() kfunc (Linux 6.5+): {why}")
        }
        DestroyMethod::SockDiag { why } => panic!("the kernel has bpf_sock_destroy() but {why}"),
    }
}

/// An SO_REUSEPORT group: every member shares the address, so only a
/// destroy by cookie reaches each one (sock_diag's lookup by address picks
/// one member per peer: `ss -K` reaches one). Both members, TCP and UDP, are
/// destroyed, each by its own cookie, whichever mechanism the kernel has.
#[test]
fn destroying_each_member_of_a_reuseport_group() {
    let cg = TestCgroup::new("drop-reuse");
    let mut p = python(
        &cg,
        None,
        &format!(
            r#"{ATTEMPT}
import socket, sys
def pair(kind):
    a = socket.socket(socket.AF_INET, kind)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    a.bind(("127.0.0.1", 0))
    b = socket.socket(socket.AF_INET, kind)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    b.bind(a.getsockname())
    return a, b
t1, t2 = pair(socket.SOCK_STREAM); t1.listen(); t2.listen()
u1, u2 = pair(socket.SOCK_DGRAM)
print(t1.getsockname()[1], u1.getsockname()[1])
sys.stdin.readline()
print(attempt(lambda: socket.create_connection(t1.getsockname(), timeout=10)))
"#
        ),
    );
    let ports: Vec<u16> = p
        .line()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let run = Running::start(&cg, true, |f| f.remote.is_none());
    let mut dropped = Vec::new();
    for i in 0..4 {
        let (flow, ok, _) = run.next_drop(&format!("drop {i} of 4"));
        assert_eq!(ok, Ok(()), "{flow:?} through {}", destroy_method());
        dropped.push((flow.proto.as_str(), flow.local.port, flow.id));
    }
    dropped.sort();
    assert_eq!(
        dropped.iter().map(|d| (d.0, d.1)).collect::<Vec<_>>(),
        [
            ("tcp", ports[0]),
            ("tcp", ports[0]),
            ("udp", ports[1]),
            ("udp", ports[1])
        ]
    );
    p.send("go");
    assert_eq!(p.line(), "ECONNREFUSED", "no member of the group is left");
}

/// The sock_diag path (kernels without bpf_sock_destroy(), e.g. Debian 12's
/// 6.1) reaches every member of an SO_REUSEPORT group too: the kernel's
/// lookup picks a member by a hash of the peer, so asking with other peer
/// ports reaches the others (`ss -K` reaches one). Run on every kernel.
#[test]
fn sock_diag_reaches_each_member_of_a_reuseport_group() {
    use sockfilter::destroy::{destroy_through_sock_diag, DestroyTarget};
    use sockfilter::model::{Endpoint, Family, Proto};
    use std::net::{IpAddr, Ipv4Addr};
    let cg = TestCgroup::new("diag-reuse");
    let mut p = python(
        &cg,
        None,
        &format!(
            r#"{ATTEMPT}
import socket, sys
SO_COOKIE = 57
def group(kind, n):
    socks = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(socks[0].getsockname() if socks else ("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM: s.listen()
        socks.append(s)
    return socks
tcp = group(socket.SOCK_STREAM, 4); udp = group(socket.SOCK_DGRAM, 4)
for s in tcp + udp:
    print(s.getsockname()[1], int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), "little"))
sys.stdout.flush()
sys.stdin.readline()
print(attempt(lambda: socket.create_connection(tcp[0].getsockname(), timeout=10)))
for u in udp: u.settimeout(10)
print(" ".join(attempt(lambda: u.recv(1)) for u in udp))
"#
        ),
    );
    let local = |port| Endpoint::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    for i in 0..8 {
        let line = p.line();
        let (port, cookie) = line.split_once(' ').expect("PORT COOKIE");
        let target = DestroyTarget {
            family: Family::Ipv4,
            proto: if i < 4 { Proto::Tcp } else { Proto::Udp },
            local: local(port.parse().unwrap()),
            remote: None,
            cookie: cookie.parse().unwrap(),
            netns: None,
            pid: None,
        };
        assert_eq!(
            destroy_through_sock_diag(&target).map_err(|e| e.to_string()),
            Ok(()),
            "member {i}: {target:?}"
        );
    }
    p.send("go");
    assert_eq!(
        p.line(),
        "ECONNREFUSED",
        "no TCP member of the group is left"
    );
    assert_eq!(
        p.line(),
        "ECONNABORTED ECONNABORTED ECONNABORTED ECONNABORTED",
        "every UDP member was destroyed"
    );
}
