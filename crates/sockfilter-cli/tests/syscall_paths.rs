//! Every way of making a socket operation is reported: io_uring accept
//! (single and multishot), bind, listen and UDP connect; accept and connect
//! of 32-bit (ia32) processes; UDP sends to new destinations batched with
//! sendmmsg; and a denied io_uring bind fails with EPERM under enforce. Each
//! path is driven by a small C program (tests/fixtures/) using the raw
//! system calls, run in its own cgroup under a real `sockfilter watch`.

mod common;

use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};

/// One test of this file at a time: each starts a `sockfilter watch`, and
/// several loading their programs at once on a slow guest (the kernel
/// matrix) can take longer than a test waits for one.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn socket(v: &Value) -> u64 {
    v["socket"].as_u64().unwrap()
}

fn endpoint(v: &Value, side: &str) -> (String, u64) {
    (
        v[side]["ip"].as_str().unwrap_or("").to_string(),
        port_of(v, side),
    )
}

fn loopback(port: u64) -> (String, u64) {
    ("127.0.0.1".to_string(), port)
}

/// A scratch directory for one test's fixture binaries, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("sf-paths-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a fixture with `args` in `cg`; returns it (it waits on stdin,
/// holding its sockets, until dropped) and the numbers of its ready line.
fn start(cg: &TestCgroup, bin: &PathBuf, args: &[&str]) -> (Proc, Vec<i64>) {
    let mut cmd = Command::new(bin);
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped());
    let (p, line, _out) = spawn_ready(cg, cmd);
    // "not supported: FEATURE (WHY)" from the fixture: the kernel lacks the
    // operation (the kernel matrix reports it as such).
    assert!(
        !line.starts_with(sockfilter_testkit::NOT_SUPPORTED),
        "{line}"
    );
    let nums = line
        .split_whitespace()
        .map(|x| {
            x.parse()
                .unwrap_or_else(|_| panic!("{bin:?} printed {line:?}"))
        })
        .collect();
    (p, nums)
}

/// The `accept` events of `pid` from listener `listen` with these peers,
/// each checked for the accepting pid, the listener and both endpoints.
fn expect_accepts(w: &mut Watch, pid: u32, listen: &Value, peers: &[u64]) {
    let port = port_of(listen, "local");
    for &peer in peers {
        let a = w.expect(&format!("accept of peer port {peer}"), |v| {
            is(v, "accept", pid) && port_of(v, "remote") == peer
        });
        assert_eq!(a["listener"], listen["socket"], "{a}");
        assert_eq!(endpoint(&a, "local"), loopback(port), "{a}");
        assert_eq!(endpoint(&a, "remote"), loopback(peer), "{a}");
        assert_eq!(a["proto"], "tcp");
        assert_ne!(socket(&a), socket(listen));
        assert_eq!(a["comm"], "uring_ops", "{a}");
    }
}

#[test]
fn io_uring_accept_is_reported_with_pid_listener_and_endpoints() {
    let _one = serial();
    let dir = Scratch::new("accept");
    let bin = c_fixture(&dir.0, "uring_ops", &[]);
    let cg = TestCgroup::new("paths-uring-accept");
    let mut w = Watch::start(&cg, &["--no-existing"]);
    let (p, n) = start(&cg, &bin, &["accept"]);
    let (port, cport) = (n[0] as u64, n[1] as u64);
    let listen = w.expect("listen", |v| {
        is(v, "listen", p.pid()) && port_of(v, "local") == port
    });
    expect_accepts(&mut w, p.pid(), &listen, &[cport]);
}

#[test]
fn io_uring_multishot_accept_reports_each_connection() {
    let _one = serial();
    let dir = Scratch::new("multishot");
    let bin = c_fixture(&dir.0, "uring_ops", &[]);
    let cg = TestCgroup::new("paths-uring-multishot");
    let mut w = Watch::start(&cg, &["--no-existing"]);
    let (p, n) = start(&cg, &bin, &["multishot", "4"]);
    let port = n[0] as u64;
    let peers: Vec<u64> = n[1..].iter().map(|&x| x as u64).collect();
    assert_eq!(peers.len(), 4);
    let listen = w.expect("listen", |v| {
        is(v, "listen", p.pid()) && port_of(v, "local") == port
    });
    expect_accepts(&mut w, p.pid(), &listen, &peers);
    let accepts = w.expect_count("accepts", 4, |v| is(v, "accept", p.pid()));
    assert_eq!(accepts.len(), 4, "one accept per connection: {accepts:?}");
}

#[test]
fn io_uring_udp_connect_is_reported() {
    let _one = serial();
    let dir = Scratch::new("udpconnect");
    let bin = c_fixture(&dir.0, "uring_ops", &[]);
    let cg = TestCgroup::new("paths-uring-udpconnect");
    let mut w = Watch::start(&cg, &["--no-existing"]);
    let (p, n) = start(&cg, &bin, &["udpconnect", "9"]);
    assert_eq!(n[0], 0, "IORING_OP_CONNECT failed: {n:?}");
    let c = w.expect("udp connect", |v| is(v, "connect", p.pid()));
    assert_eq!(c["proto"], "udp");
    assert_eq!(endpoint(&c, "remote"), loopback(9), "{c}");
    assert_eq!(endpoint(&c, "local"), loopback(n[1] as u64), "{c}");
}

#[test]
fn io_uring_bind_and_listen_are_reported() {
    let _one = serial();
    let dir = Scratch::new("bindlisten");
    let bin = c_fixture(&dir.0, "uring_ops", &[]);
    let cg = TestCgroup::new("paths-uring-bindlisten");
    let mut w = Watch::start(&cg, &["--no-existing"]);
    let (p, n) = start(&cg, &bin, &["bindlisten", "0"]);
    assert_eq!((n[0], n[1]), (0, 0), "IORING_OP_BIND/LISTEN failed: {n:?}");
    let port = n[2] as u64;
    let bind = w.expect("bind", |v| is(v, "bind", p.pid()));
    assert_eq!(endpoint(&bind, "local"), loopback(port), "{bind}");
    assert_eq!(bind["proto"], "tcp");
    let listen = w.expect("listen", |v| is(v, "listen", p.pid()));
    assert_eq!(endpoint(&listen, "local"), loopback(port), "{listen}");
    assert_eq!(listen["backlog"], 9, "{listen}");
    assert_eq!(socket(&listen), socket(&bind));
}

#[test]
fn a_denied_io_uring_bind_fails_with_eperm_under_enforce() {
    let _one = serial();
    let dir = Scratch::new("enforce");
    let bin = c_fixture(&dir.0, "uring_ops", &[]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let policy = dir.0.join("p.toml");
    std::fs::write(
        &policy,
        format!(
            "default = \"allow\"\n[[rule]]\nname = \"no-uring-port\"\naction = \"deny\"\n\
             on = [\"bind\"]\nlocal_port = [{port}]\n"
        ),
    )
    .unwrap();
    let cg = TestCgroup::new("paths-uring-enforce");
    let mut w = Watch::enforce(&cg, &policy);
    let (p, n) = start(&cg, &bin, &["bindlisten", &port.to_string()]);
    assert_eq!(n[0], -(libc::EPERM as i64), "IORING_OP_BIND result: {n:?}");
    let ev = w.expect("denied bind", |v| is(v, "bind", p.pid()));
    assert_eq!(ev["verdict"], "deny", "{ev}");
    assert_eq!(ev["rule"], "no-uring-port", "{ev}");
    assert_eq!(endpoint(&ev, "local"), loopback(port.into()), "{ev}");
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the denied port stays free");
}

#[test]
fn ia32_accept_and_udp_connect_are_reported() {
    let _one = serial();
    let dir = Scratch::new("ia32");
    let bin = c_fixture(&dir.0, "ia32_ops", &["-m32"]);
    let cg = TestCgroup::new("paths-ia32");
    // The hook for 32-bit system calls is attached at start on a kernel
    // that runs them (sockfilter::compat_hook): no 32-bit program ran yet.
    let mut w = Watch::start(&cg, &["--no-existing"]);

    // glibc's i386 accept() and connect() take socketcall (102); the
    // direct ia32 calls accept4 (364) and connect (362) are the others.
    for how in [&[][..], &["direct"][..]] {
        let args = |mode: &'static [&'static str]| [how, mode].concat();
        let (p, n) = start(&cg, &bin, &args(&["accept"]));
        let (port, cport) = (n[0] as u64, n[1] as u64);
        let listen = w.expect("listen", |v| is(v, "listen", p.pid()));
        assert_eq!(port_of(&listen, "local"), port);
        let a = w.expect("32-bit accept", |v| is(v, "accept", p.pid()));
        assert_eq!(a["listener"], listen["socket"], "{how:?} {a}");
        assert_eq!(endpoint(&a, "local"), loopback(port), "{how:?} {a}");
        assert_eq!(endpoint(&a, "remote"), loopback(cport), "{how:?} {a}");
        assert_eq!(a["comm"], "ia32_ops");
        let tcp = w.expect("32-bit tcp connect", |v| {
            is(v, "connect", p.pid()) && v["proto"] == "tcp"
        });
        assert_eq!(endpoint(&tcp, "local"), loopback(cport), "{how:?} {tcp}");
        assert_eq!(endpoint(&tcp, "remote"), loopback(port), "{how:?} {tcp}");

        let (q, n) = start(&cg, &bin, &args(&["udpconnect", "9"]));
        assert_eq!(n[0], 0, "{how:?} connect failed: {n:?}");
        let c = w.expect("32-bit udp connect", |v| is(v, "connect", q.pid()));
        assert_eq!(c["proto"], "udp");
        assert_eq!(endpoint(&c, "remote"), loopback(9), "{how:?} {c}");
        assert_eq!(endpoint(&c, "local"), loopback(n[1] as u64), "{how:?} {c}");
    }
}

/// A 64-bit program can make 32-bit system calls itself (`int $0x80`)
/// without any 32-bit program having run: its accept is reported, also
/// for an unprivileged program. (Before, the hook waited for a 32-bit
/// exec, and this accept went unreported.)
#[test]
fn a_64_bit_programs_int_0x80_accept_is_reported() {
    let _one = serial();
    let dir = Scratch::new("int80");
    let bin = c_fixture(&dir.0, "int80_accept", &[]);
    let cg = TestCgroup::new("paths-int80");
    let mut w = Watch::start(&cg, &["--no-existing"]);
    let (p, n) = start_as_nobody(&cg, &bin, &[]);
    assert!(n[2] >= 0, "the ia32 accept4 failed: {n:?}");
    let a = w.expect("int $0x80 accept", |v| is(v, "accept", p.pid()));
    assert_eq!(a["proto"], "tcp", "{a}");
    assert_eq!(endpoint(&a, "local"), loopback(n[0] as u64), "{a}");
    assert_eq!(endpoint(&a, "remote"), loopback(n[1] as u64), "{a}");
}

/// Persistent enforcement pins the 32-bit hook at start with the rest
/// (where the kernel runs 32-bit system calls), so that it outlives a
/// killed enforcer as the 32-bit programs may; the enforcer that adopts
/// the pins reports a 32-bit accept through it.
#[test]
fn enforcement_pins_the_32_bit_hook_at_start_and_keeps_it_through_a_kill() {
    use std::os::unix::fs::MetadataExt;
    let _one = serial();
    let dir = Scratch::new("ia32-enforce");
    let bin = c_fixture(&dir.0, "ia32_ops", &["-m32"]);
    let policy = dir.0.join("p.toml");
    std::fs::write(
        &policy,
        "default = \"allow\"\n[[rule]]\nname = \"nothing\"\naction = \"deny\"\n\
         on = [\"bind\"]\nlocal_port = [9]\n",
    )
    .unwrap();
    let cg = TestCgroup::new("paths-ia32-enforce");
    let _unload = UnloadOnDrop(cg.path.clone());
    let ino = std::fs::metadata(&cg.path).unwrap().ino();
    let links = PathBuf::from(format!("/sys/fs/bpf/sockfilter/cgroup-{ino}/links"));
    let (status, _) = Watch::enforce(&cg, &policy).stop(libc::SIGKILL);
    assert!(!status.success(), "killed");
    assert!(
        links.join("sf_compat_exit").exists(),
        "the 32-bit hook is pinned at start and outlives the enforcer ({})",
        links.display()
    );
    let mut w = Watch::enforce(&cg, &policy);
    assert!(links.join("sf_compat_exit").exists(), "still pinned");
    let (p, n) = start(&cg, &bin, &["accept"]);
    let a = w.expect("32-bit accept", |v| is(v, "accept", p.pid()));
    assert_eq!(endpoint(&a, "remote"), loopback(n[1] as u64), "{a}");
    assert_eq!(a["verdict"], "allow", "{a}");
}

/// Removes a test's pinned enforcement (`sockfilter unload --cgroup`), also
/// when the test fails after killing its enforcer.
struct UnloadOnDrop(PathBuf);

impl Drop for UnloadOnDrop {
    fn drop(&mut self) {
        let _ = Command::new(sockfilter())
            .arg("unload")
            .arg("--cgroup")
            .arg(&self.0)
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn udp_sendmmsg_to_two_new_destinations_reports_two_connects() {
    let _one = serial();
    let dir = Scratch::new("sendmmsg");
    let bin = c_fixture(&dir.0, "uring_ops", &[]);
    let cg = TestCgroup::new("paths-sendmmsg");
    let mut w = Watch::start(&cg, &["--no-existing"]);
    let (p, n) = start(&cg, &bin, &["sendmmsg", "9", "13"]);
    assert_eq!(n[0], 2, "sendmmsg sent {n:?}");
    let connects = w.expect_count("two udp connects", 2, |v| is(v, "connect", p.pid()));
    let mut remotes: Vec<(String, u64)> = connects.iter().map(|c| endpoint(c, "remote")).collect();
    remotes.sort();
    assert_eq!(remotes, vec![loopback(9), loopback(13)]);
    for c in &connects {
        assert_eq!(c["proto"], "udp");
        assert_eq!(port_of(c, "local"), n[1] as u64, "{c}");
        assert_eq!(c["verdict"], "allow", "{c}");
        assert_eq!(socket(c), socket(&connects[0]), "one socket");
    }
}

/// Like [`start`], as uid 65534 (`setpriv`): an unprivileged attacker.
fn start_as_nobody(cg: &TestCgroup, bin: &std::path::Path, args: &[&str]) -> (Proc, Vec<i64>) {
    let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    let mut full: Vec<&str> = nobody.to_vec();
    let bin = bin.to_str().unwrap();
    full.push(bin);
    full.extend_from_slice(args);
    start(cg, &PathBuf::from("setpriv"), &full)
}

/// One io_uring accept made another way (`uring_ops acceptvia HOW`), by
/// uid 65534 when `nobody`: reported with the ring owner's pid and comm,
/// its listener and both endpoints.
fn accept_via_is_reported(how: &str, nobody: bool) {
    let _one = serial();
    let dir = Scratch::new(&format!("via-{how}"));
    let bin = c_fixture(&dir.0, "uring_ops", &[]);
    let cg = TestCgroup::new(&format!("paths-uring-via-{how}"));
    let mut w = Watch::start(&cg, &["--no-existing"]);
    let args = ["acceptvia", how];
    let (p, n) = if nobody {
        start_as_nobody(&cg, &bin, &args)
    } else {
        start(&cg, &bin, &args)
    };
    let (port, cport) = (n[0] as u64, n[1] as u64);
    let listen = w.expect("listen", |v| {
        is(v, "listen", p.pid()) && port_of(v, "local") == port
    });
    expect_accepts(&mut w, p.pid(), &listen, &[cport]);
    if nobody {
        let a = w.expect("accept", |v| is(v, "accept", p.pid()));
        assert_eq!(a["uid"], 65534, "{a}");
    }
}

/// An accept into a direct descriptor (a fixed-file slot the kernel picks,
/// IORING_FILE_INDEX_ALLOC) never appears in the process's fd table.
#[test]
fn io_uring_accept_into_a_direct_descriptor_is_reported() {
    accept_via_is_reported("direct", false);
}

/// The SQPOLL thread submits and completes the accept: the event names the
/// ring owner's process, not the kernel thread.
#[test]
fn io_uring_accept_by_the_sqpoll_thread_is_reported_as_the_ring_owner() {
    accept_via_is_reported("sqpoll", true);
}

/// IOSQE_ASYNC: the accept runs in an io-wq worker thread.
#[test]
fn io_uring_accept_in_an_io_wq_worker_is_reported_as_the_ring_owner() {
    accept_via_is_reported("async", true);
}

/// The accept's completion finds the CQ ring full and goes to the
/// overflow list (the kernel posts it when the ring is next read).
#[test]
fn attack_io_uring_accept_whose_completion_overflows_is_reported() {
    accept_via_is_reported("overflow", true);
}

/// A second accept with the multishot accept's user_data, failing at once,
/// must not make the multishot accept's connections unreported.
#[test]
fn attack_a_colliding_user_data_does_not_hide_multishot_accepts() {
    let _one = serial();
    let dir = Scratch::new("collide");
    let bin = c_fixture(&dir.0, "uring_ops", &[]);
    let cg = TestCgroup::new("paths-uring-collide");
    let mut w = Watch::start(&cg, &["--no-existing"]);
    let (p, n) = start_as_nobody(&cg, &bin, &["multishotcollide", "3"]);
    let port = n[0] as u64;
    let peers: Vec<u64> = n[1..].iter().map(|&x| x as u64).collect();
    let listen = w.expect("listen", |v| {
        is(v, "listen", p.pid()) && port_of(v, "local") == port
    });
    expect_accepts(&mut w, p.pid(), &listen, &peers);
}

/// A datagram to a new destination through io_uring (IORING_OP_SENDMSG
/// with msg_name; IORING_OP_SEND with a destination, Linux 6.1+).
#[test]
fn io_uring_sendmsg_and_send_to_a_destination_report_a_connect() {
    let _one = serial();
    let dir = Scratch::new("uringsend");
    let bin = c_fixture(&dir.0, "uring_ops", &[]);
    let cg = TestCgroup::new("paths-uring-send");
    let mut w = Watch::start(&cg, &["--no-existing"]);
    for how in ["sendmsg", "send"] {
        let (p, n) = start(&cg, &bin, &["uringsend", how, "9"]);
        assert_eq!(n[0], 1, "{how}: {n:?}");
        let c = w.expect(how, |v| is(v, "connect", p.pid()));
        assert_eq!(c["proto"], "udp", "{how}: {c}");
        assert_eq!(endpoint(&c, "remote"), loopback(9), "{how}: {c}");
        assert_eq!(port_of(&c, "local"), n[1] as u64, "{how}: {c}");
    }
}

/// IOSQE_CQE_SKIP_SUCCESS: a successful io_uring accept or UDP connect
/// posts no completion and no tracepoint marks its end, so it cannot be
/// reported as an accept or connect (docs/events.md). It is not lost
/// silently: each is counted at submission and `watch` says how many at
/// exit. (A TCP connect with the flag is reported by sockops and not
/// counted.)
#[test]
fn io_uring_operations_without_a_completion_are_counted_and_said() {
    let _one = serial();
    let dir = Scratch::new("skipcqe");
    let bin = c_fixture(&dir.0, "uring_ops", &[]);
    let cg = TestCgroup::new("paths-uring-skipcqe");
    let mut w = Watch::start(&cg, &["--no-existing"]);
    let (p, n) = start_as_nobody(&cg, &bin, &["acceptvia", "skipcqe"]);
    let listen = w.expect("listen", |v| {
        is(v, "listen", p.pid()) && port_of(v, "local") == n[0] as u64
    });
    let (q, m) = start_as_nobody(&cg, &bin, &["udpconnectskip", "9"]);
    assert_eq!(m[0], 0, "IORING_OP_CONNECT failed: {m:?}");
    let (_, err) = w.stop(libc::SIGTERM);
    assert!(
        err.iter().any(|l| l
            .contains("io_uring: 2 accepts or UDP connects submitted with IOSQE_CQE_SKIP_SUCCESS")),
        "the exit summary says so: {err:?} (listener {listen})"
    );
    drop((p, q));
}
