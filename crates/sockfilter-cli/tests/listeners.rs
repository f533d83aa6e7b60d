//! `sockfilter listeners` against real servers — python3 http.server,
//! socat, a forking server, an SO_REUSEPORT pair, UDP servers — in the
//! test's own cgroup and network namespace, compared with what `ss` reports
//! for the same ports.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Instant;

/// (proto, port, pid, cookie) as `ss -l?npeH` shows them, for `ports` only.
fn ss_rows(
    ns: &TestNetns,
    flags: &str,
    proto: &str,
    ports: &[u16],
) -> BTreeSet<(String, u16, u32, u64)> {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "ss", flags])
        .output()
        .unwrap();
    assert!(out.status.success(), "ss {flags} failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut rows = BTreeSet::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let Some(port) = cols
            .get(3)
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.parse::<u16>().ok())
        else {
            continue;
        };
        if !ports.contains(&port) {
            continue;
        }
        let cookie = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("sk:"))
            .map(|h| u64::from_str_radix(h, 16).unwrap())
            .unwrap_or_else(|| panic!("no sk: in {line:?}"));
        for part in line.split("pid=").skip(1) {
            let pid: u32 = part.split(',').next().unwrap().parse().unwrap();
            rows.insert((proto.to_string(), port, pid, cookie));
        }
    }
    rows
}

fn listeners_json() -> Vec<Value> {
    let out = Command::new(sockfilter())
        .args(["listeners", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "listeners failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("a JSON array");
    v.as_array().expect("a JSON array").clone()
}

/// Waits (bounded) until `ss` in the namespace lists `n` sockets for `port`.
fn wait_ss(ns: &TestNetns, flags: &str, port: u16, n: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "ss",
                flags,
                &format!("sport = :{port}"),
            ])
            .stderr(Stdio::null())
            .output()
            .unwrap();
        let got = String::from_utf8_lossy(&out.stdout).lines().count();
        if got >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "port {port} not listening within {WAIT:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn in_netns(ns: &TestNetns, program: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &ns.name, program]).args(args);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    c
}

/// The pids in an entry's `owners`, in the order listed.
fn owner_pids(v: &Value) -> Vec<u32> {
    v["owners"]
        .as_array()
        .unwrap_or_else(|| panic!("no owners in {v}"))
        .iter()
        .map(|o| o["pid"].as_u64().unwrap() as u32)
        .collect()
}

fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap()
        .trim()
        .to_string()
}

fn readlink_exe(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn listeners_match_ss_for_real_servers() {
    let cg = TestCgroup::new("listeners");
    let ns = TestNetns::new("listeners");

    // python3 -m http.server on a kernel-chosen port (dual stack).
    let (http, line, _o1) = spawn_ready(
        &cg,
        in_netns(&ns, "python3", &["-u", "-m", "http.server", "0"]),
    );
    let http_port: u16 = line
        .split("port ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));

    // socat, TCP (forking) and UDP; the namespace is fresh, so fixed ports are free.
    let (socat_tcp_port, socat_udp_port) = (18081u16, 18082u16);
    let mut c = in_netns(
        &ns,
        "socat",
        &[
            &format!("TCP-LISTEN:{socat_tcp_port},fork,reuseaddr"),
            "EXEC:/bin/cat",
        ],
    );
    cg.enter(&mut c);
    let socat_tcp = Proc(c.spawn().unwrap());
    let mut c = in_netns(
        &ns,
        "socat",
        &[
            "-u",
            &format!("UDP-RECV:{socat_udp_port}"),
            "OPEN:/dev/null",
        ],
    );
    cg.enter(&mut c);
    let socat_udp = Proc(c.spawn().unwrap());

    // A forking server: the listener is shared by the parent and two children.
    let (fork, line, _o2) = spawn_ready(
        &cg,
        in_netns(
            &ns,
            "python3",
            &[
                "-u",
                "-c",
                r#"
import os, socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
kids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        sys.stdin.readline(); os._exit(0)
    kids.append(pid)
print(s.getsockname()[1], *kids)
sys.stdin.readline()
"#,
            ],
        ),
    );
    let nums: Vec<u32> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let fork_port = nums[0] as u16;
    let fork_pids: BTreeSet<u32> = [fork.pid(), nums[1], nums[2]].into();

    // An SO_REUSEPORT pair: two processes, two sockets, one port.
    let reuse = r#"
import socket, sys
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("::", int(sys.argv[1]))); s.listen()
print(s.getsockname()[1])
sys.stdin.readline()
"#;
    let (reuse1, line, _o3) = spawn_ready(&cg, in_netns(&ns, "python3", &["-u", "-c", reuse, "0"]));
    let reuse_port: u16 = line.parse().unwrap();
    let (reuse2, _, _o4) = spawn_ready(
        &cg,
        in_netns(
            &ns,
            "python3",
            &["-u", "-c", reuse, &reuse_port.to_string()],
        ),
    );

    // A UDP server.
    let (udp, line, _o5) = spawn_ready(
        &cg,
        in_netns(
            &ns,
            "python3",
            &[
                "-u",
                "-c",
                r#"
import socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 0))
print(u.getsockname()[1])
sys.stdin.readline()
"#,
            ],
        ),
    );
    let udp_port: u16 = line.parse().unwrap();

    wait_ss(&ns, "-ltnH", socat_tcp_port, 1);
    wait_ss(&ns, "-lunH", socat_udp_port, 1);

    let tcp_ports = [http_port, socat_tcp_port, fork_port, reuse_port];
    let udp_ports = [socat_udp_port, udp_port];
    let mut want = ss_rows(&ns, "-ltnpeH", "tcp", &tcp_ports);
    want.extend(ss_rows(&ns, "-lunpeH", "udp", &udp_ports));

    let netns = ns.inode();
    let all = listeners_json();
    let ours: Vec<&Value> = all
        .iter()
        .filter(|v| v["netns"] == netns)
        .filter(|v| {
            let port = port_of(v, "local") as u16;
            match v["proto"].as_str() {
                Some("tcp") => tcp_ports.contains(&port),
                Some("udp") => udp_ports.contains(&port),
                _ => false,
            }
        })
        .collect();
    // One entry per socket; every process holding it is in `owners`.
    let cookies_listed: BTreeSet<u64> =
        ours.iter().map(|v| v["socket"].as_u64().unwrap()).collect();
    assert_eq!(cookies_listed.len(), ours.len(), "one entry per socket");
    let got: BTreeSet<(String, u16, u32, u64)> = ours
        .iter()
        .flat_map(|v| {
            owner_pids(v).into_iter().map(move |pid| {
                (
                    v["proto"].as_str().unwrap().to_string(),
                    port_of(v, "local") as u16,
                    pid,
                    v["socket"].as_u64().unwrap(),
                )
            })
        })
        .collect();
    assert_eq!(
        got, want,
        "listeners --json owners vs ss (proto, port, pid, cookie)"
    );

    // Who is expected where, independently of ss.
    let pids_on =
        |port: u16| -> BTreeSet<u32> { got.iter().filter(|r| r.1 == port).map(|r| r.2).collect() };
    assert_eq!(pids_on(http_port), [http.pid()].into());
    assert_eq!(pids_on(socat_tcp_port), [socat_tcp.pid()].into());
    assert_eq!(pids_on(socat_udp_port), [socat_udp.pid()].into());
    assert_eq!(
        pids_on(fork_port),
        fork_pids,
        "every process sharing the listener"
    );
    assert_eq!(pids_on(reuse_port), [reuse1.pid(), reuse2.pid()].into());
    assert_eq!(pids_on(udp_port), [udp.pid()].into());
    let entries = |port: u16| -> Vec<&&Value> {
        ours.iter()
            .filter(|v| port_of(v, "local") as u16 == port)
            .collect()
    };
    let fork_entry = entries(fork_port);
    assert_eq!(fork_entry.len(), 1, "one entry for the shared socket");
    assert_eq!(
        fork_entry[0]["pid"],
        fork.pid(),
        "the parent, which called listen() (the lowest pid): {}",
        fork_entry[0]
    );
    assert_eq!(entries(reuse_port).len(), 2, "two SO_REUSEPORT sockets");

    for v in ours {
        let pid = v["pid"].as_u64().unwrap() as u32;
        assert_eq!(Some(&pid), owner_pids(v).first(), "the lowest pid: {v}");
        let udp = v["proto"] == "udp";
        assert_eq!(v["event"], if udp { "bind" } else { "listen" }, "{v}");
        assert_eq!(v["exe"], readlink_exe(pid), "{v}");
        assert_eq!(v["comm"], comm_of(pid), "{v}");
        for o in v["owners"].as_array().unwrap() {
            let p = o["pid"].as_u64().unwrap() as u32;
            assert_eq!(o["exe"], readlink_exe(p), "{v}");
            assert_eq!(o["comm"], comm_of(p), "{v}");
        }
        assert_eq!(v["cgroup"], cg.name(), "{v}");
        assert_eq!(v["uid"], 0, "{v}");
        assert_eq!(v["existing"], true, "{v}");
        assert_eq!(v["remote"], Value::Null, "{v}");
        assert_eq!(v["verdict"], "allow", "{v}");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
    }
    let http_row = all
        .iter()
        .find(|v| port_of(v, "local") as u16 == http_port && v["netns"] == netns)
        .unwrap();
    assert_eq!(http_row["exe"], python_exe());
    assert!(
        ["0.0.0.0", "::"].contains(&http_row["local"]["ip"].as_str().unwrap()),
        "{http_row}"
    );
}

#[test]
fn default_output_is_an_aligned_table() {
    let cg = TestCgroup::new("listeners-table");
    // A listener shared with two forked children: one row, `PID+2`.
    let (p, line, _o) = python(
        &cg,
        r#"
import os, socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
for _ in range(2):
    if os.fork() == 0:
        sys.stdin.readline(); os._exit(0)
print(s.getsockname()[1])
sys.stdin.readline()
"#,
    );
    let out = Command::new(sockfilter())
        .arg("listeners")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("PROTO"), "{header}");
    let col = header.find("PID").unwrap();
    let rows: Vec<&str> = lines
        .filter(|l| l.contains(&format!("127.0.0.1:{line} ")))
        .collect();
    assert_eq!(rows.len(), 1, "one row per socket:\n{text}");
    let row = rows[0];
    assert!(row.starts_with("tcp4"), "{row}");
    assert_eq!(
        row[col..].split_whitespace().next(),
        Some(format!("{}+2", p.pid()).as_str()),
        "the PID column lines up with its header:\n{header}\n{row}"
    );
    assert!(row.contains(&python_exe()), "{row}");
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The pids `ss -ltnpH` lists for `port` in the namespace.
fn ss_pids(ns: &TestNetns, port: u16) -> BTreeSet<u32> {
    ss_rows(ns, "-ltnpeH", "tcp", &[port])
        .into_iter()
        .map(|r| r.2)
        .collect()
}

#[test]
fn nginx_master_and_workers_are_one_entry_with_every_owner() {
    let cg = TestCgroup::new("listeners-nginx");
    let ns = TestNetns::new("lnginx");
    let dir = TempDir(std::env::temp_dir().join(format!("sf-nginx-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir(&dir.0).unwrap();
    let d = dir.0.display();
    // The namespace is fresh, so a fixed port is free.
    let port = 18090u16;
    let conf = dir.0.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 16; }}\n\
             http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             server {{ listen 127.0.0.1:{port}; return 204; }} }}\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, "nginx", "-e"])
        .arg(dir.0.join("error.log"))
        .arg("-p")
        .arg(&dir.0)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cg.enter(&mut cmd);
    let master = Proc(cmd.spawn().expect("nginx (Debian package nginx)"));

    // Ready when the master and both workers hold the listener.
    let deadline = Instant::now() + WAIT;
    let holders = loop {
        let pids = ss_pids(&ns, port);
        if pids.len() >= 3 {
            break pids;
        }
        assert!(
            Instant::now() < deadline,
            "nginx: master and 2 workers not listening on {port} within {WAIT:?} (have {pids:?})"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(holders.contains(&master.pid()), "{holders:?}");

    let netns = ns.inode();
    let entries: Vec<Value> = listeners_json()
        .into_iter()
        .filter(|v| v["netns"] == netns && port_of(v, "local") == u64::from(port))
        .collect();
    assert_eq!(
        entries.len(),
        1,
        "one entry for nginx's listener: {entries:?}"
    );
    let e = &entries[0];
    assert_eq!(e["pid"], master.pid(), "the master called listen(): {e}");
    assert_eq!(e["comm"], "nginx", "{e}");
    assert_eq!(e["exe"], readlink_exe(master.pid()), "{e}");
    assert_eq!(
        owner_pids(e).into_iter().collect::<BTreeSet<u32>>(),
        holders,
        "owners = every process holding the socket: {e}"
    );
    for o in e["owners"].as_array().unwrap() {
        assert_eq!(o["comm"], "nginx", "{e}");
        assert_eq!(o["exe"], e["exe"], "{e}");
    }
    drop(master);
}

/// The entry of `listeners --json` for 127.0.0.1:`port`.
fn entry_for(port: &str) -> Value {
    let all = listeners_json();
    let mine: Vec<&Value> = all
        .iter()
        .filter(|v| {
            v["local"]["port"].as_u64() == port.parse().ok() && v["local"]["ip"] == "127.0.0.1"
        })
        .collect();
    assert_eq!(mine.len(), 1, "one entry for port {port}: {all:?}");
    mine[0].clone()
}

/// Issue 10 item 6: `pid` names the process that called listen(), as the
/// kernel's listener registry of a running `sockfilter enforce` recorded
/// it, even when a process with a lower pid holds the socket too and when
/// the caller has exited; `owner_source` says `listen`. A listener older
/// than enforce (nobody saw its listen()) is owned by its lowest holder,
/// and `owner_source` says `lowest_holder`.
#[test]
fn the_owner_is_the_process_that_called_listen() {
    let cg = TestCgroup::new("listeners-caller");
    let dir =
        TempDir(std::env::temp_dir().join(format!("sf-listeners-caller-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let policy = dir.0.join("allow.toml");
    std::fs::write(&policy, "default = \"allow\"\n").unwrap();
    // Made before enforce: a parent that forks a holder after listen().
    let (old, old_port, _o1) = python(
        &cg,
        r#"
import os, socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
if os.fork() == 0:
    sys.stdin.readline(); os._exit(0)
print(s.getsockname()[1])
sys.stdin.readline()
"#,
    );
    let args: Vec<std::ffi::OsString> = vec![
        "enforce".into(),
        policy.clone().into(),
        "--json".into(),
        "--cgroup".into(),
        cg.path.clone().into(),
    ];
    let _enforce = Watch::spawn(&args, "enforcing");

    // A makes the socket and forks B; both hold it, and the one with the
    // higher pid (B, unless pids wrapped around) calls listen(): the
    // caller is not the lowest holder.
    let (a, line, _o2) = python(
        &cg,
        r#"
import os, socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0))
r, w = os.pipe()
b = os.fork()
if b == 0:
    if os.getpid() > os.getppid():
        s.listen(); os.write(w, b"x")
    sys.stdin.readline(); os._exit(0)
if os.getpid() > b:
    s.listen(); os.write(w, b"x")
os.read(r, 1)
print(s.getsockname()[1], b)
sys.stdin.readline()
"#,
    );
    let (port_ab, b) = line.split_once(' ').unwrap();
    let b: u32 = b.parse().unwrap();
    let (lowest, caller) = (a.pid().min(b), a.pid().max(b));
    let e = entry_for(port_ab);
    assert_eq!(
        e["pid"], caller,
        "the caller of listen(), not the lowest holder: {e}"
    );
    assert_eq!(e["owner_source"], "listen", "{e}");
    assert_eq!(owner_pids(&e), vec![lowest, caller], "{e}");
    assert_eq!(e["exe"], readlink_exe(caller), "{e}");

    // C listens, forks D and exits: D holds what C made.
    let (c, line, _o3) = python(
        &cg,
        r#"
import os, socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
r, w = os.pipe()
d = os.fork()
if d == 0:
    os.close(r); os.read(0, 1); os._exit(0)
print(s.getsockname()[1], d)
os._exit(0)
"#,
    );
    let (port_cd, d) = line.split_once(' ').unwrap();
    let d: u32 = d.parse().unwrap();
    let c_pid = c.pid();
    let deadline = Instant::now() + WAIT;
    while std::path::Path::new(&format!("/proc/{c_pid}/fd")).exists()
        && std::fs::read_dir(format!("/proc/{c_pid}/fd")).is_ok_and(|mut d| d.next().is_some())
    {
        assert!(Instant::now() < deadline, "C did not exit");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let e = entry_for(port_cd);
    assert_eq!(e["pid"], c_pid, "the exited caller of listen(): {e}");
    assert_eq!(e["owner_source"], "listen", "{e}");
    assert_eq!(e["comm"], "python3", "{e}");
    assert_eq!(owner_pids(&e), vec![d], "{e}");

    let e = entry_for(&old_port);
    assert_eq!(e["pid"], old.pid(), "{e}");
    assert_eq!(e["owner_source"], "lowest_holder", "{e}");
    assert_eq!(owner_pids(&e).len(), 2, "{e}");
}
