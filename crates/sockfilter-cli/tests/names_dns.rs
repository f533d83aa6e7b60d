//! `remote_host`: the DNS name behind a remote address, learned from real
//! DNS answers. A real dnsmasq runs in the test's own network namespace and
//! answers test names with addresses of that namespace; a client in the
//! test's cgroup resolves through it (glibc's getaddrinfo with the
//! namespace's resolv.conf, and a raw UDP query of its own) and connects.

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// A namespace with servers on 10.77.0.5-7 port 8000 and a resolv.conf
/// (`ip netns exec` bind-mounts /etc/netns/NAME/resolv.conf) pointing at
/// 127.0.0.1, where the test's dnsmasq listens.
struct NameWorld {
    ns: TestNetns,
    etc: PathBuf,
}

impl NameWorld {
    fn new(tag: &str) -> NameWorld {
        assert!(
            std::path::Path::new(DNSMASQ).exists(),
            "{DNSMASQ} is missing: install the Debian package dnsmasq-base"
        );
        let ns = TestNetns::new(tag);
        for ip in ["10.77.0.5", "10.77.0.6", "10.77.0.7"] {
            run(Command::new("ip").args([
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{ip}/32"),
                "dev",
                "lo",
            ]));
        }
        let etc = PathBuf::from("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("resolv.conf"),
            "nameserver 127.0.0.1\noptions attempts:5 timeout:1\n",
        )
        .unwrap();
        NameWorld { ns, etc }
    }

    /// dnsmasq in the namespace, answering from `records` (dnsmasq options
    /// such as `--host-record=NAME,IP`) only, until dropped.
    fn dnsmasq(&self, records: &[&str]) -> Dnsmasq {
        let mut cmd = self.ns.command(DNSMASQ);
        cmd.args([
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--port=53",
            "--user=root",
            "--pid-file=",
            "--log-facility=-",
        ])
        .args(records)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start dnsmasq");
        // It prints "started" once its sockets are bound.
        let err = BufReader::new(child.stderr.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in err.lines() {
                let Ok(line) = line else { break };
                eprintln!("[dnsmasq] {line}");
                if line.contains("started") {
                    let _ = tx.send(());
                }
            }
        });
        let d = Dnsmasq(child);
        rx.recv_timeout(WAIT).expect("dnsmasq did not start");
        d
    }
}

impl Drop for NameWorld {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

/// A running dnsmasq, stopped by pid when dropped.
struct Dnsmasq(Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        stop_child(&mut self.0);
    }
}

/// The client: a python in the test's cgroup and namespace that, per line
/// `gai NAME`, `raw NAME`, `tcp NAME` or `ip ADDR`, finds the address
/// (getaddrinfo, a raw DNS query over UDP or over TCP, or as given), connects to port 8000 there and
/// prints `ADDR LOCALPORT ok|ERRNO`. It also runs the servers.
const CLIENT: &str = r#"
import errno, os, random, socket, struct, sys
servers = []
for ip in ("10.77.0.5", "10.77.0.6", "10.77.0.7"):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, 8000)); s.listen(64); servers.append(s)

def recv_exact(t, n):
    b = b""
    while len(b) < n:
        chunk = t.recv(n - len(b))
        if not chunk: raise SystemExit("DNS over TCP: connection closed")
        b += chunk
    return b

def raw(name, tcp=False):
    q = struct.pack(">HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    q += struct.pack(">HH", 1, 1)
    if tcp:
        t = socket.create_connection(("127.0.0.1", 53), timeout=5)
        t.sendall(struct.pack(">H", len(q)) + q)
        r = recv_exact(t, struct.unpack(">H", recv_exact(t, 2))[0]); t.close()
    else:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
        u.sendto(q, ("127.0.0.1", 53)); r = u.recv(4096); u.close()
    an = struct.unpack(">H", r[6:8])[0]; p = 12
    while r[p]: p += r[p] + 1
    p += 5
    for _ in range(an):
        if r[p] & 0xc0 == 0xc0: p += 2
        else:
            while r[p]: p += r[p] + 1
            p += 1
        t, c, ttl, n = struct.unpack(">HHIH", r[p:p+10]); p += 10
        if t == 1: return socket.inet_ntoa(r[p:p+4])
        p += n
    raise SystemExit("no A record for " + name)

print("ready", flush=True)
conns = []
for line in sys.stdin:
    how, what = line.split()
    if how == "gai": addr = socket.getaddrinfo(what, 8000, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    elif how == "raw": addr = raw(what)
    elif how == "tcp": addr = raw(what, tcp=True)
    else: addr = what
    c = socket.socket()
    try:
        c.connect((addr, 8000)); r = "ok"
    except OSError as e:
        r = errno.errorcode.get(e.errno, str(e.errno))
    port = c.getsockname()[1]
    conns.append(c)
    print(addr, port, r, flush=True)
"#;

struct Client {
    _p: Proc,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl Client {
    fn start(cg: &TestCgroup, world: &NameWorld, uid: Option<u32>) -> Client {
        let mut cmd = world.ns.command("setpriv");
        if let Some(uid) = uid {
            cmd.args([
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".into(),
            ]);
        }
        // The interpreter itself (not a shim in root's home that uid
        // 65534 cannot read).
        cmd.arg(python_exe())
            .args(["-u", "-c", CLIENT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        cg.enter(&mut cmd);
        Client::spawn(cmd)
    }

    /// The client under `sockfilter supervise --policy POLICY`, in the
    /// test's cgroup and in the namespace (so with its resolv.conf), as root.
    fn supervised(cg: &TestCgroup, world: &NameWorld, policy: &Path) -> Client {
        let mut cmd = Command::new(sockfilter());
        cmd.arg("supervise")
            .arg("--policy")
            .arg(policy)
            .args(["--", "ip", "netns", "exec", &world.ns.name])
            .args([&python_exe(), "-u", "-c", CLIENT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        cg.enter(&mut cmd);
        Client::spawn(cmd)
    }

    /// Runs `cmd`, which runs the client script, and waits for its "ready".
    fn spawn(mut cmd: Command) -> Client {
        let mut child = cmd.spawn().expect("start the client");
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let p = Proc(child);
        assert_eq!(read_line(&mut out), "ready");
        Client { _p: p, stdin, out }
    }

    /// (address, local port, "ok" or the errno name)
    fn connect(&mut self, how: &str, what: &str) -> (String, u64, String) {
        writeln!(self.stdin, "{how} {what}").unwrap();
        let line = read_line(&mut self.out);
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 3, "client said {line:?}");
        (f[0].to_string(), f[1].parse().unwrap(), f[2].to_string())
    }
}

fn connect_event(w: &mut Watch, local_port: u64) -> Value {
    w.expect("connect from the client's port", |v| {
        v["event"] == "connect" && v["proto"] == "tcp" && port_of(v, "local") == local_port
    })
}

#[test]
fn remote_host_is_the_name_the_client_resolved() {
    let cg = TestCgroup::new("names");
    let world = NameWorld::new("names");
    let _dns = world.dnsmasq(&[
        "--host-record=a.allowed.test,10.77.0.5",
        "--host-record=other.test,10.77.0.6",
        "--cname=www.alias.test,other.test",
        "--host-record=tcp.test,10.77.0.5",
        "--local-ttl=300",
    ]);
    let mut w = Watch::start(&cg, &[]);
    let mut c = Client::start(&cg, &world, None);

    let (addr, port, r) = c.connect("gai", "a.allowed.test");
    assert_eq!((addr.as_str(), r.as_str()), ("10.77.0.5", "ok"));
    let e = connect_event(&mut w, port);
    assert_eq!(e["remote_host"], "a.allowed.test", "getaddrinfo: {e}");
    assert_eq!(e["netns"], world.ns.inode(), "{e}");

    // A raw query of the client's own, upper case: names are lowercase.
    let (addr, port, _) = c.connect("raw", "OTHER.test");
    assert_eq!(addr, "10.77.0.6");
    let e = connect_event(&mut w, port);
    assert_eq!(e["remote_host"], "other.test", "raw UDP query: {e}");

    // DNS over TCP (one message per segment, after its length).
    // Same address as a.allowed.test: the latest name this process asked.
    let (addr, port, _) = c.connect("tcp", "tcp.test");
    assert_eq!(addr, "10.77.0.5");
    let e = connect_event(&mut w, port);
    assert_eq!(e["remote_host"], "tcp.test", "DNS over TCP: {e}");

    // Through a CNAME: the name asked for, not the CNAME's target.
    let (addr, port, _) = c.connect("gai", "www.alias.test");
    assert_eq!(addr, "10.77.0.6");
    let e = connect_event(&mut w, port);
    assert_eq!(e["remote_host"], "www.alias.test", "through a CNAME: {e}");

    // An address never resolved has no name.
    let (_, port, r) = c.connect("ip", "10.77.0.7");
    assert_eq!(r, "ok");
    let e = connect_event(&mut w, port);
    assert!(e["remote_host"].is_null(), "never resolved: {e}");
    // The key is in the contract only where it means something.
    let listen = w.expect("a listen", |v| v["event"] == "listen");
    assert!(listen.get("remote_host").is_none(), "{listen}");
}

#[test]
fn after_the_ttl_a_reused_address_gets_its_new_name() {
    let cg = TestCgroup::new("names-ttl");
    let world = NameWorld::new("names-ttl");
    let mut w = Watch::start(&cg, &[]);
    let mut c = Client::start(&cg, &world, None);
    let resolved_at;
    {
        let _dns = world.dnsmasq(&["--host-record=old.test,10.77.0.7", "--local-ttl=1"]);
        let (addr, port, _) = c.connect("gai", "old.test");
        resolved_at = Instant::now();
        assert_eq!(addr, "10.77.0.7");
        let e = connect_event(&mut w, port);
        assert_eq!(e["remote_host"], "old.test", "{e}");
    }
    // Not synchronization: the answer's TTL (1 s) has to run out.
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(resolved_at.elapsed()));
    let (_, port, _) = c.connect("ip", "10.77.0.7");
    let e = connect_event(&mut w, port);
    assert!(e["remote_host"].is_null(), "the TTL ran out: {e}");

    let _dns = world.dnsmasq(&["--host-record=new.test,10.77.0.7", "--local-ttl=1"]);
    let (addr, port, _) = c.connect("gai", "new.test");
    assert_eq!(addr, "10.77.0.7");
    let e = connect_event(&mut w, port);
    assert_eq!(
        e["remote_host"], "new.test",
        "the address now has another name: {e}"
    );
}

/// Whom the rules of [`by_name_policy`] are for.
#[derive(Clone, Copy)]
enum RulesFor {
    /// uid 65534 only; the rules are named `nobody-...`.
    Nobody,
    /// Every user; the rules are named without a prefix.
    Everyone,
}

/// The policy the deciding tests enforce: DNS is allowed (the client has to
/// resolve), connects to an address resolved from `*.allowed.test` are
/// allowed by name, every other connect is denied.
fn by_name_policy(rules_for: RulesFor) -> String {
    let (prefix, uid) = match rules_for {
        RulesFor::Nobody => ("nobody-", "uid = [65534]\n"),
        RulesFor::Everyone => ("", ""),
    };
    format!(
        r#"
default = "allow"

[[rule]]
name = "{prefix}dns"
action = "allow"
on = ["connect"]
{uid}remote_port = [53]

[[rule]]
name = "{prefix}allowed-names"
action = "allow"
on = ["connect"]
{uid}remote_host = ["*.allowed.test"]

[[rule]]
name = "{prefix}nothing-else"
action = "deny"
on = ["connect"]
{uid}"#
    )
}

/// The world of the tests that decide connects by name: the test's cgroup,
/// a namespace whose dnsmasq answers a.allowed.test (10.77.0.5) and
/// b.denied.test (10.77.0.6) while 10.77.0.7 has no name, and
/// [`by_name_policy`] in a file of its own. All removed when dropped.
struct ByNameWorld {
    // Dropped in this order: dnsmasq, the namespace, the cgroup.
    _dns: Dnsmasq,
    net: NameWorld,
    cg: TestCgroup,
    dir: PathBuf,
    policy: PathBuf,
}

impl ByNameWorld {
    fn new(tag: &str, rules_for: RulesFor) -> ByNameWorld {
        let cg = TestCgroup::new(tag);
        let net = NameWorld::new(tag);
        let dns = net.dnsmasq(&[
            "--host-record=a.allowed.test,10.77.0.5",
            "--host-record=b.denied.test,10.77.0.6",
            "--local-ttl=300",
        ]);
        let dir = std::env::temp_dir().join(format!("sf-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let policy = dir.join("policy.toml");
        std::fs::write(&policy, by_name_policy(rules_for)).unwrap();
        ByNameWorld {
            _dns: dns,
            net,
            cg,
            dir,
            policy,
        }
    }
}

impl Drop for ByNameWorld {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn enforce_allows_connects_by_the_name_they_were_resolved_from() {
    let world = ByNameWorld::new("names-enforce", RulesFor::Nobody);
    let mut w = Watch::enforce(&world.cg, &world.policy);
    let mut c = Client::start(&world.cg, &world.net, Some(65534));

    let (addr, port, r) = c.connect("gai", "a.allowed.test");
    assert_eq!(
        (addr.as_str(), r.as_str()),
        ("10.77.0.5", "ok"),
        "a resolved allowed name"
    );
    let e = connect_event(&mut w, port);
    assert_eq!(
        (e["verdict"].as_str(), e["rule"].as_str()),
        (Some("allow"), Some("nobody-allowed-names")),
        "{e}"
    );
    assert_eq!(e["remote_host"], "a.allowed.test", "{e}");

    let (addr, _, r) = c.connect("gai", "b.denied.test");
    assert_eq!(
        (addr.as_str(), r.as_str()),
        ("10.77.0.6", "EPERM"),
        "a resolved name no rule allows"
    );
    let (_, _, r) = c.connect("ip", "10.77.0.7");
    assert_eq!(
        r, "EPERM",
        "a hard-coded address was never resolved: it matches no name rule"
    );
    let denied = w.expect_count("two denied connects", 2, |v| {
        v["event"] == "connect" && v["verdict"] == "deny" && v["rule"] == "nobody-nothing-else"
    });
    let remotes: Vec<&str> = denied
        .iter()
        .map(|v| v["remote"]["ip"].as_str().unwrap())
        .collect();
    assert!(
        remotes.contains(&"10.77.0.6") && remotes.contains(&"10.77.0.7"),
        "{denied:?}"
    );
    // The raw query path (no glibc) is decided the same way.
    let (addr, _, r) = c.connect("raw", "A.ALLOWED.TEST");
    assert_eq!((addr.as_str(), r.as_str()), ("10.77.0.5", "ok"));

    // A reload: names resolved under the previous policy count under the
    // new one without being resolved again.
    let text = std::fs::read_to_string(&world.policy).unwrap();
    std::fs::write(
        &world.policy,
        text.replace("nobody-allowed-names", "nobody-allowed-names-v2"),
    )
    .unwrap();
    w.wait_stderr("file changed");
    let (_, port, r) = c.connect("ip", "10.77.0.5");
    assert_eq!(
        r, "ok",
        "resolved before the reload, allowed by name after it"
    );
    let e = connect_event(&mut w, port);
    assert_eq!(e["rule"], "nobody-allowed-names-v2", "{e}");
    let (_, _, r) = c.connect("ip", "10.77.0.6");
    assert_eq!(
        r, "EPERM",
        "b.denied.test's address is still denied after the reload"
    );
}

#[test]
fn supervise_decides_connects_by_the_name_they_were_resolved_from() {
    let world = ByNameWorld::new("names-supervise", RulesFor::Everyone);
    let mut c = Client::supervised(&world.cg, &world.net, &world.policy);

    let (addr, _, r) = c.connect("gai", "a.allowed.test");
    assert_eq!(
        (addr.as_str(), r.as_str()),
        ("10.77.0.5", "ok"),
        "a resolved allowed name"
    );
    let (addr, _, r) = c.connect("gai", "b.denied.test");
    assert_eq!(
        (addr.as_str(), r.as_str()),
        ("10.77.0.6", "EPERM"),
        "a resolved name no rule allows"
    );
    let (_, _, r) = c.connect("ip", "10.77.0.7");
    assert_eq!(r, "EPERM", "a hard-coded address was never resolved");
    let (addr, _, r) = c.connect("raw", "A.ALLOWED.TEST");
    assert_eq!(
        (addr.as_str(), r.as_str()),
        ("10.77.0.5", "ok"),
        "raw query"
    );
}

#[test]
fn supervise_refuses_rules_by_name_without_root() {
    let dir = std::env::temp_dir().join(format!("sf-names-supervise-nr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "[[rule]]\nname = \"by-name\"\naction = \"allow\"\non = [\"connect\"]\nremote_host = [\"*.example.org\"]\n",
    )
    .unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(sockfilter())
        .arg("supervise")
        .arg("--policy")
        .arg(&policy)
        .args(["--", "true"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("policy.toml:1:") && err.contains("remote_host") && err.contains("root"),
        "{err}"
    );
}
