//! `sockfilter watch` against the real kernel: real sockets in real
//! processes, each test in its own cgroup (and network namespace where it
//! matters), asserting the exact fields of the JSON contract.

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;

fn ip(v: &Value, side: &str) -> String {
    v[side]["ip"].as_str().unwrap_or("").to_string()
}

fn socket(v: &Value) -> u64 {
    v["socket"].as_u64().unwrap()
}

#[test]
fn lifecycle_of_a_tcp_connection_has_exact_fields() {
    let cg = TestCgroup::new("lifecycle");
    let mut w = Watch::start(&cg, &["--no-existing"]);
    let (p, ready, mut out) = python(
        &cg,
        r#"
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(7)
port = s.getsockname()[1]
print(port)
c = socket.create_connection(("127.0.0.1", port)); a, _ = s.accept()
c.sendall(b"x" * 100000)
got = 0
while got < 100000: got += len(a.recv(65536))
a.sendall(b"y" * 1234)
got = 0
while got < 1234: got += len(c.recv(65536))
cport = c.getsockname()[1]
c.close(); a.close(); s.close()
print(cport)
sys.stdin.readline()
"#,
    );
    let port: u64 = ready.parse().unwrap();
    let cport: u64 = read_line(&mut out).parse().unwrap();
    let pid = p.pid();
    let exe = python_exe();

    let bind = w.expect("bind", |v| is(v, "bind", pid));
    for (field, want) in [
        ("comm", Value::from("python3")),
        ("exe", Value::from(exe.as_str())),
        ("cgroup", Value::from(cg.name())),
        ("proto", Value::from("tcp")),
        ("family", Value::from("ipv4")),
        ("verdict", Value::from("allow")),
        ("existing", Value::from(false)),
        ("remote", Value::Null),
    ] {
        assert_eq!(bind[field], want, "bind.{field}: {bind}");
    }
    assert_eq!(
        (ip(&bind, "local").as_str(), port_of(&bind, "local")),
        ("127.0.0.1", port)
    );
    assert_eq!(bind["uid"], 0);
    assert!(bind["time"].as_str().unwrap().ends_with('Z'));

    let listen = w.expect("listen", |v| is(v, "listen", pid));
    assert_eq!(listen["backlog"], 7);
    assert_eq!(socket(&listen), socket(&bind));
    assert_eq!(port_of(&listen, "local"), port);
    assert_eq!(listen["remote"], Value::Null);
    assert_eq!(listen["exe"], exe.as_str());

    let connect = w.expect("connect", |v| is(v, "connect", pid));
    assert_eq!(
        port_of(&connect, "local"),
        cport,
        "connect reports the ephemeral port"
    );
    assert_eq!(
        (ip(&connect, "remote").as_str(), port_of(&connect, "remote")),
        ("127.0.0.1", port)
    );
    assert_eq!(connect["proto"], "tcp");

    let accept = w.expect("accept", |v| is(v, "accept", pid));
    assert_eq!(accept["listener"], listen["socket"]);
    assert_eq!(port_of(&accept, "local"), port);
    assert_eq!(port_of(&accept, "remote"), cport);
    assert_ne!(socket(&accept), socket(&listen));

    let cs = socket(&connect);
    let client_close = w.expect("client close", |v| v["event"] == "close" && socket(v) == cs);
    assert_eq!(client_close["bytes_sent"], 100000, "{client_close}");
    assert_eq!(client_close["bytes_received"], 1234, "{client_close}");
    assert_eq!(client_close["pid"], pid);
    assert!(client_close["duration_ns"].as_u64().unwrap() > 0);
    let asock = socket(&accept);
    let server_close = w.expect("server close", |v| {
        v["event"] == "close" && socket(v) == asock
    });
    assert_eq!(server_close["bytes_sent"], 1234, "{server_close}");
    assert_eq!(server_close["bytes_received"], 100000, "{server_close}");
    let ls = socket(&listen);
    let listener_close = w.expect("listener close", |v| {
        v["event"] == "close" && socket(v) == ls
    });
    assert_eq!(port_of(&listener_close, "local"), port);
    assert_eq!(listener_close["remote"], Value::Null);
}

#[test]
fn listen_on_unbound_socket_then_close_within_a_millisecond() {
    let cg = TestCgroup::new("fastlisten");
    let mut w = Watch::start(&cg, &["--no-existing"]);
    // Repeat until one listener lived under a millisecond (a loaded machine
    // can stretch one), then check that this one was reported.
    let (p, ready, _out) = python(
        &cg,
        r#"
import socket, time
for _ in range(500):
    t = time.perf_counter()
    s = socket.socket(); s.listen(3); port = s.getsockname()[1]; s.close()
    took = time.perf_counter() - t
    if took < 0.001: break
print(port, took)
"#,
    );
    let mut parts = ready.split_whitespace();
    let port: u64 = parts.next().unwrap().parse().unwrap();
    let took: f64 = parts.next().unwrap().parse().unwrap();
    assert!(
        took < 0.001,
        "no listen+close under a millisecond in 500 tries"
    );
    let listen = w.expect("listen", |v| {
        is(v, "listen", p.pid()) && port_of(v, "local") == port
    });
    assert_eq!(
        ip(&listen, "local"),
        "0.0.0.0",
        "the kernel picked the address and port"
    );
    assert!(
        !w.seen.iter().any(|v| is(v, "bind", p.pid())),
        "no explicit bind happened"
    );
    let s = socket(&listen);
    w.expect("close", |v| v["event"] == "close" && socket(v) == s);
}

#[test]
fn ipv6_and_dual_stack() {
    let cg = TestCgroup::new("ipv6");
    let mut w = Watch::start(&cg, &["--no-existing"]);
    let (p, ready, _out) = python(
        &cg,
        r#"
import socket, sys
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 0)); s.listen()
port = s.getsockname()[1]
c4 = socket.create_connection(("127.0.0.1", port)); a4, _ = s.accept()
c6 = socket.create_connection(("::1", port)); a6, _ = s.accept()
print(port, c4.getsockname()[1], c6.getsockname()[1])
sys.stdin.readline()
"#,
    );
    let nums: Vec<u64> = ready
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let (port, p4, p6) = (nums[0], nums[1], nums[2]);
    let pid = p.pid();
    let listen = w.expect("listen", |v| is(v, "listen", pid));
    assert_eq!(
        (listen["family"].as_str(), ip(&listen, "local")),
        (Some("ipv6"), "::".into())
    );
    let acc4 = w.expect("v4 accept", |v| {
        is(v, "accept", pid) && port_of(v, "remote") == p4
    });
    assert_eq!(acc4["family"], "ipv6");
    assert_eq!(
        ip(&acc4, "remote"),
        "::ffff:127.0.0.1",
        "dual-stack peer is v4-mapped"
    );
    let acc6 = w.expect("v6 accept", |v| {
        is(v, "accept", pid) && port_of(v, "remote") == p6
    });
    assert_eq!(ip(&acc6, "remote"), "::1");
    assert_eq!(acc6["listener"], listen["socket"]);
    let con4 = w.expect("v4 connect", |v| {
        is(v, "connect", pid) && port_of(v, "local") == p4
    });
    assert_eq!(
        (con4["family"].as_str(), port_of(&con4, "remote")),
        (Some("ipv4"), port)
    );
    let con6 = w.expect("v6 connect", |v| {
        is(v, "connect", pid) && port_of(v, "local") == p6
    });
    assert_eq!(
        (con6["family"].as_str(), ip(&con6, "remote")),
        (Some("ipv6"), "::1".into())
    );
}

#[test]
fn udp_bind_connect_and_close() {
    let cg = TestCgroup::new("udp");
    let mut w = Watch::start(&cg, &["--no-existing"]);
    let (p, ready, _out) = python(
        &cg,
        r#"
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
port = u.getsockname()[1]
k = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); k.connect(("127.0.0.1", port))
kport = k.getsockname()[1]
u.close(); k.close()
print(port, kport)
"#,
    );
    let nums: Vec<u64> = ready
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let pid = p.pid();
    let bind = w.expect("udp bind", |v| is(v, "bind", pid));
    assert_eq!(
        (bind["proto"].as_str(), port_of(&bind, "local")),
        (Some("udp"), nums[0])
    );
    let connect = w.expect("udp connect", |v| is(v, "connect", pid));
    assert_eq!(connect["proto"], "udp");
    assert_eq!(
        (port_of(&connect, "local"), port_of(&connect, "remote")),
        (nums[1], nums[0])
    );
    let bs = socket(&bind);
    let close = w.expect("udp close", |v| v["event"] == "close" && socket(v) == bs);
    assert_eq!(
        (close["proto"].as_str(), port_of(&close, "local")),
        (Some("udp"), nums[0])
    );
    assert_eq!(close["pid"], pid);
    assert!(close.get("bytes_sent").is_some());
    let ks = socket(&connect);
    let kclose = w.expect("connected udp close", |v| {
        v["event"] == "close" && socket(v) == ks
    });
    assert_eq!(port_of(&kclose, "remote"), nums[0]);
}

#[test]
fn listener_in_another_network_namespace() {
    let cg = TestCgroup::new("netns");
    let ns = TestNetns::new("watch");
    let mut w = Watch::start(&cg, &["--no-existing"]);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, "python3", "-u", "-c"])
        .arg("import socket,sys\ns=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\nprint(s.getsockname()[1])\nsys.stdin.readline()")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let (p, ready, _out) = spawn_ready(&cg, cmd);
    let port: u64 = ready.parse().unwrap();
    let listen = w.expect("listen in netns", |v| is(v, "listen", p.pid()));
    assert_eq!(port_of(&listen, "local"), port);
    assert_eq!(listen["netns"], ns.inode(), "{listen}");
}

#[test]
fn sockets_that_existed_before_start_are_reported_as_existing() {
    let cg = TestCgroup::new("existing");
    let (p, ready, _out) = python(
        &cg,
        r#"
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
c = socket.create_connection(s.getsockname()); a, _ = s.accept()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
print(s.getsockname()[1], c.getsockname()[1], u.getsockname()[1])
sys.stdin.readline()
"#,
    );
    let nums: Vec<u64> = ready
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let pid = p.pid();
    let mut w = Watch::start(&cg, &[]);
    let listen = w.expect("existing listener", |v| {
        is(v, "listen", pid) && v["existing"] == true
    });
    assert_eq!(port_of(&listen, "local"), nums[0]);
    assert_eq!(listen["backlog"], Value::Null);
    assert_eq!(listen["exe"], python_exe().as_str());
    let acc = w.expect("existing accepted", |v| {
        is(v, "accept", pid) && v["existing"] == true
    });
    assert_eq!(acc["listener"], listen["socket"]);
    assert_eq!(port_of(&acc, "remote"), nums[1]);
    let con = w.expect("existing connected", |v| {
        is(v, "connect", pid) && v["existing"] == true
    });
    assert_eq!(port_of(&con, "local"), nums[1]);
    let udp = w.expect("existing udp", |v| {
        is(v, "bind", pid) && v["existing"] == true
    });
    assert_eq!(
        (udp["proto"].as_str(), port_of(&udp, "local")),
        (Some("udp"), nums[2])
    );
    // Exactly once each.
    let n = w
        .seen
        .iter()
        .filter(|v| v["socket"] == listen["socket"])
        .count();
    assert_eq!(n, 1);
}

#[test]
fn closes_of_sockets_older_than_the_watch_carry_the_snapshots_owner() {
    let cg = TestCgroup::new("older-close");
    // An unprivileged owner, so that a uid of 0 cannot pass by accident;
    // Debian's python3, which uid 65534 can run (a pyenv under /root it cannot).
    let python = std::fs::canonicalize("/usr/bin/python3").expect("/usr/bin/python3");
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--",
    ])
    .arg("/usr/bin/python3")
    .args([
        "-u",
        "-c",
        r#"
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
c = socket.create_connection(s.getsockname()); a, _ = s.accept()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
sys.stdin.readline()
c.close(); a.close(); s.close(); u.close()
print("closed")
sys.stdin.readline()
"#,
    ])
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped());
    let (mut p, _ready, mut out) = spawn_ready(&cg, cmd);
    let pid = p.pid();
    let mut w = Watch::start(&cg, &[]);
    let existing: Vec<Value> = w.expect_count("existing sockets", 4, |v| {
        is(v, "listen", pid) || is(v, "accept", pid) || is(v, "connect", pid) || is(v, "bind", pid)
    });
    use std::io::Write;
    writeln!(p.0.stdin.as_mut().unwrap()).unwrap();
    assert_eq!(read_line(&mut out), "closed");
    for e in &existing {
        assert_eq!(e["existing"], true, "{e}");
        let sock = e["socket"].clone();
        let close = w.expect(&format!("close of existing {e}"), |v| {
            v["event"] == "close" && v["socket"] == sock
        });
        assert_eq!(close["pid"], pid, "{close}");
        assert_eq!(close["uid"], 65534, "{close}");
        assert_eq!(close["comm"], "python3", "{close}");
        assert_eq!(close["exe"], python.to_str().unwrap(), "{close}");
        assert_eq!(close["cgroup"], cg.name(), "{close}");
        assert_eq!(close["proto"], e["proto"], "{close}");
        assert_eq!(close["local"], e["local"], "{close}");
        // The kernel keeps no creation time for a socket it saw before.
        assert_eq!(close["duration_ns"], Value::Null, "{close}");
    }
    let client = existing.iter().find(|v| v["event"] == "connect").unwrap();
    let sock = client["socket"].clone();
    let close = w.expect("client close", |v| {
        v["event"] == "close" && v["socket"] == sock
    });
    assert_eq!(close["bytes_sent"], 0, "no SYN counted as payload: {close}");
}

#[test]
fn a_burst_of_1000_listeners_arrives_complete() {
    let cg = TestCgroup::new("burst");
    let mut w = Watch::start(&cg, &["--no-existing"]);
    let (p, ready, _out) = python(
        &cg,
        r#"
import socket, resource
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
socks = []
for i in range(1000):
    s = socket.socket(); s.listen(1); socks.append(s)
ports = sorted(s.getsockname()[1] for s in socks)
for s in socks: s.close()
print(len(set(ports)))
"#,
    );
    assert_eq!(ready, "1000");
    let pid = p.pid();
    let listens = w.expect_count("listen", 1000, |v| is(v, "listen", pid));
    let distinct: std::collections::HashSet<u64> = listens.iter().map(socket).collect();
    assert_eq!(distinct.len(), 1000);
    w.expect_count("close", 1000, |v| is(v, "close", pid));
    assert!(
        !w.seen.iter().any(|v| v["event"] == "lost"),
        "the kernel dropped events"
    );
}

/// A stop signal does not swallow what happened before it: events still in
/// the ring buffer when SIGTERM arrives are written out before the summary.
#[test]
fn events_before_a_stop_signal_are_all_written() {
    let cg = TestCgroup::new("stop-drain");
    let w = Watch::start(&cg, &["--no-existing"]);
    let (p, ready, _out) = python(
        &cg,
        r#"
import socket
for i in range(2000):
    s = socket.socket(); s.listen(1); s.close()
print("done")
"#,
    );
    assert_eq!(ready, "done");
    let pid = p.pid();
    // Signalled the moment the program is done: most of its events are
    // still in the ring buffer or on their way to stdout.
    let (status, stderr, events) = w.stop_collect(libc::SIGTERM);
    assert!(status.success(), "{stderr:?}");
    let listens = events.iter().filter(|v| is(v, "listen", pid)).count();
    let closes = events.iter().filter(|v| is(v, "close", pid)).count();
    assert!(
        !events.iter().any(|v| v["event"] == "lost"),
        "the kernel dropped events"
    );
    assert_eq!(
        (listens, closes),
        (2000, 2000),
        "every event before SIGTERM is written: {stderr:?}"
    );
}

#[test]
fn accept_is_attributed_to_the_forked_child_that_accepts() {
    let cg = TestCgroup::new("fork");
    let mut w = Watch::start(&cg, &["--no-existing"]);
    let (p, ready, _out) = python(
        &cg,
        r#"
import socket, os, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
port = s.getsockname()[1]
child = os.fork()
if child == 0:
    a, _ = s.accept(); a.recv(10); os._exit(0)
print(port, child)
c = socket.create_connection(("127.0.0.1", port)); c.sendall(b"hi")
os.waitpid(child, 0)
sys.stdin.readline()
"#,
    );
    let nums: Vec<u32> = ready
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let (parent, child) = (p.pid(), nums[1]);
    let listen = w.expect("listen", |v| is(v, "listen", parent));
    let accept = w.expect("accept by the child", |v| v["event"] == "accept");
    assert_eq!(accept["pid"], child, "{accept}");
    assert_eq!(accept["listener"], listen["socket"]);
    assert_eq!(
        accept["exe"],
        python_exe().as_str(),
        "a forked child keeps its parent's exe"
    );
    let s = socket(&accept);
    let close = w.expect("close", |v| v["event"] == "close" && socket(v) == s);
    assert_eq!(
        close["pid"], child,
        "a close is attributed to the socket's last owner"
    );
}

#[test]
fn a_process_that_execs_and_binds_at_once_has_the_right_exe() {
    let cg = TestCgroup::new("exec");
    let dir = std::env::temp_dir().join(format!("sf-exec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = fastbind(&dir);
    let link = dir.join("link-to-fastbind");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&bin, &link).unwrap();

    let mut w = Watch::start(&cg, &["--no-existing"]);
    let mut cmd = Command::new(&link);
    cg.enter(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    let bind = w.expect("bind by fastbind", |v| is(v, "bind", pid));
    assert_eq!(bind["comm"], "link-to-fastbin");
    let real = std::fs::canonicalize(&bin).unwrap();
    assert_eq!(
        bind["exe"],
        real.to_str().unwrap(),
        "exe is the resolved binary, not the symlink"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The ids of BPF programs and links a process holds, from /proc/PID/fdinfo.
fn bpf_objects_of(pid: u32) -> (Vec<u64>, Vec<u64>) {
    let (mut progs, mut links) = (Vec::new(), Vec::new());
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(fd.path()) else {
            continue;
        };
        let link = text.lines().find_map(|l| l.strip_prefix("link_id:"));
        let prog = text.lines().find_map(|l| l.strip_prefix("prog_id:"));
        match (link, prog) {
            (Some(id), _) => links.push(id.trim().parse().unwrap()),
            (None, Some(id)) => progs.push(id.trim().parse().unwrap()),
            _ => {}
        }
    }
    (progs, links)
}

fn exists(kind: &str, id: u64) -> bool {
    Command::new("bpftool")
        .args([kind, "show", "id", &id.to_string()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn detaches_everything_on(sig: i32) {
    let cg = TestCgroup::new(&format!("detach{sig}"));
    let w = Watch::start(&cg, &["--no-existing"]);
    let (progs, links) = bpf_objects_of(w.child.id());
    assert!(
        progs.len() >= 11,
        "expected every program loaded, got {progs:?}"
    );
    assert!(
        links.len() >= 11,
        "expected every program attached, got {links:?}"
    );
    assert!(progs.iter().all(|&id| exists("prog", id)));
    let attached = Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(&cg.path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&attached.stdout).contains("sf_sockops"));

    let (status, stderr) = w.stop(sig);
    assert!(status.success(), "watch exits 0 on signal {sig}: {status}");
    let summary = stderr
        .iter()
        .find(|l| l.contains("stopped"))
        .expect("a summary line");
    assert!(summary.contains("dropped by the kernel: 0"), "{summary}");
    // The kernel frees released programs from a work queue: poll, bounded.
    let gone = |kind: &str, ids: &[u64]| ids.iter().all(|&id| !exists(kind, id));
    let deadline = std::time::Instant::now() + WAIT;
    while !(gone("prog", &progs) && gone("link", &links)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for id in &progs {
        assert!(!exists("prog", *id), "program {id} still loaded after exit");
    }
    for id in &links {
        assert!(!exists("link", *id), "link {id} still attached after exit");
    }
    let after = Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(&cg.path)
        .output()
        .unwrap();
    assert!(after.status.success());
    assert_eq!(
        String::from_utf8_lossy(&after.stdout).trim(),
        "",
        "cgroup still has programs"
    );
}

#[test]
fn sigint_detaches_every_program_and_link() {
    detaches_everything_on(libc::SIGINT);
}

#[test]
fn sigterm_detaches_every_program_and_link() {
    detaches_everything_on(libc::SIGTERM);
}

#[test]
fn bad_arguments_are_clear_errors() {
    let out = Command::new(sockfilter())
        .args(["watch", "--cgroup", "/nonexistent/cgroup"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/cgroup"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let out = Command::new(sockfilter())
        .args(["watch", "--event", "lisen"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown event kind"));
}

#[test]
fn without_root_it_says_so_and_exits_non_zero() {
    // A copy nobody can reach, wherever the build directory is.
    let dir = std::env::temp_dir().join(format!("sf-noroot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("sockfilter");
    std::fs::copy(sockfilter(), &bin).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .args(["watch", "--no-existing"])
        .output()
        .expect("setpriv (util-linux)");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs root"), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
