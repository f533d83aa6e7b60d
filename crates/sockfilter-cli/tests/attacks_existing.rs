//! Attacks on `sockfilter enforce` with sockets made before the policy
//! (issue 9 item 2): an unprivileged user (uid 65534) opens listeners, UDP
//! sockets and connections, in its namespace and in another, then the
//! policy that denies them is put in force, at start and by a reload. Each
//! must be closed within 2 seconds and reported (docs/security.md).

mod common;

use common::attacker::Attacker;
use common::*;
use serde_json::Value;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What the issue promises: denied existing sockets are gone this soon.
const PROMISED: Duration = Duration::from_secs(2);

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sf-existing-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes the policy by rename, as deployment tools do.
fn write_policy(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Runs `code` (which sets `r`) until its answer satisfies `ok`, for at most
/// what is left until `deadline`; the last answer.
fn until(a: &mut Attacker, code: &str, deadline: Instant, ok: impl Fn(&str) -> bool) -> String {
    loop {
        let r = a.run(code);
        if ok(&r) || Instant::now() >= deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP connection to 127.0.0.1:`port` from source address `from`.
fn connect_from(from: &str, port: u16) -> TcpStream {
    // std cannot bind before connect: a raw socket, bound, then connected.
    use std::os::fd::FromRawFd;
    let addr = |ip: &str, port: u16| {
        let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        a.sin_family = libc::AF_INET as u16;
        a.sin_port = port.to_be();
        a.sin_addr.s_addr = u32::from(ip.parse::<std::net::Ipv4Addr>().unwrap()).to_be();
        a
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let src = addr(from, 0);
        assert_eq!(
            libc::bind(fd, (&src as *const libc::sockaddr_in).cast(), len),
            0
        );
        let dst = addr("127.0.0.1", port);
        assert_eq!(
            libc::connect(fd, (&dst as *const libc::sockaddr_in).cast(), len),
            0
        );
        TcpStream::from_raw_fd(fd)
    }
}

fn port(answer: String) -> u16 {
    answer
        .parse()
        .unwrap_or_else(|_| panic!("not a port: {answer}"))
}

fn denied_existing(v: &Value, event: &str, rule: &str, port: u16) -> bool {
    v["event"] == event
        && v["verdict"] == "deny"
        && v["rule"] == rule
        && v["existing"] == true
        && v["local"]["port"] == port
}

/// Opens a listener with a thread blocked in accept() (`res[KEY]`); its port.
fn listen_and_accept(a: &mut Attacker, key: &str, port: u16) -> u16 {
    crate::port(a.run(&format!(
        "s['{key}'] = socket.socket(); s['{key}'].bind(('127.0.0.1', {port})); s['{key}'].listen(); bg('{key}', s['{key}'].accept); r = s['{key}'].getsockname()[1]"
    )))
}

#[test]
fn sockets_made_before_the_policy_are_judged_closed_and_reported() {
    let dir = tmpdir("start");
    let cg = TestCgroup::new("attack-existing");
    let ns = TestNetns::new("attack-existing");
    let mut a = Attacker::start(&cg);
    let mut b = Attacker::start_in(&cg, &ns);

    // A listener the policy will deny, in the attacker's namespace and on
    // the same port in another one, each with its owner blocked in accept().
    let denied_port = listen_and_accept(&mut a, "l", 0);
    listen_and_accept(&mut b, "l", denied_port);
    // A bound UDP socket the policy will deny.
    let udp_port = port(a.run(
        "s['u'] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s['u'].bind(('127.0.0.1', 0)); r = s['u'].getsockname()[1]",
    ));
    // An allowed server and a connection to it that the policy will deny.
    let server_port = port(a.run(
        "s['srv'] = socket.socket(); s['srv'].bind(('127.0.0.1', 0)); s['srv'].listen(); r = s['srv'].getsockname()[1]",
    ));
    assert_eq!(
        a.run(&format!(
            "s['c'] = socket.create_connection(('127.0.0.1', {server_port})); s['in'] = s['srv'].accept()[0]; s['in'].setblocking(False)"
        )),
        "ok"
    );
    // An inbound connection to the allowed server from a peer the policy
    // will refuse (the test's own socket, from 127.0.0.3).
    let peer = connect_from("127.0.0.3", server_port);
    assert_eq!(a.run("s['from3'] = s['srv'].accept()[0]"), "ok");
    // Outside the cgroup (enforce --cgroup): the same port, never touched.
    let outsider = TcpListener::bind(("127.0.0.2", denied_port)).unwrap();

    let policy = dir.join("policy.toml");
    write_policy(
        &policy,
        &format!(
            "[[rule]]\nname = \"no-listen\"\naction = \"deny\"\non = [\"listen\"]\nlocal_port = [{denied_port}]\n\
             [[rule]]\nname = \"no-udp\"\naction = \"deny\"\non = [\"bind\"]\nproto = \"udp\"\nlocal_port = [{udp_port}]\n\
             [[rule]]\nname = \"no-connect\"\naction = \"deny\"\non = [\"connect\"]\nremote_port = [{server_port}]\n\
             [[rule]]\nname = \"not-from-3\"\naction = \"deny\"\non = [\"accept\"]\nremote_ip = [\"127.0.0.3\"]\n"
        ),
    );
    let mut w = Watch::enforce(&cg, &policy);
    let enforcing = Instant::now();
    let deadline = enforcing + PROMISED;

    // Reported: deny, the deciding rule, existing; both namespaces.
    let listens = w.expect_count("denied existing listeners", 2, |v| {
        denied_existing(v, "listen", "no-listen", denied_port)
    });
    assert_ne!(listens[0]["netns"], listens[1]["netns"]);
    assert!(listens.iter().any(|v| v["netns"] == ns.inode()));
    w.expect("the denied UDP socket", |v| {
        denied_existing(v, "bind", "no-udp", udp_port) && v["proto"] == "udp"
    });
    w.expect("the denied connection", |v| {
        v["event"] == "connect"
            && v["verdict"] == "deny"
            && v["rule"] == "no-connect"
            && v["existing"] == true
            && v["remote"]["port"] == server_port
    });
    w.expect("the denied accepted connection", |v| {
        v["event"] == "accept"
            && v["verdict"] == "deny"
            && v["rule"] == "not-from-3"
            && v["existing"] == true
            && v["remote"]["ip"] == "127.0.0.3"
    });
    // --no-existing: the allowed ones are not reported.
    assert!(
        !w.seen.iter().any(|v| v["verdict"] == "allow"),
        "allowed sockets were reported: {:?}",
        w.seen
    );

    // Closed, within 2 s of "enforcing".
    for (who, attacker) in [("here", &mut a), ("other namespace", &mut b)] {
        let r = until(attacker, "r = res.get('l', 'blocked')", deadline, |r| {
            r.starts_with("err")
        });
        assert!(
            r.starts_with("err"),
            "{who}: the owner's accept() still blocks ({r})"
        );
    }
    let connect =
        format!("socket.create_connection(('127.0.0.1', {denied_port}), timeout=1).close()");
    assert_eq!(
        until(&mut a, &connect, deadline, |r| r == "err ECONNREFUSED"),
        "err ECONNREFUSED",
        "the denied listener still takes connections"
    );
    assert_eq!(
        until(
            &mut a,
            "s['u'].setblocking(False); s['u'].recv(1)",
            deadline,
            |r| r == "err ECONNABORTED"
        ),
        "err ECONNABORTED",
        "the denied UDP socket is still open"
    );
    // Destroyed, the socket keeps its explicitly bound port: it must still
    // receive nothing, and its owner cannot make it receive again.
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(b"x", ("127.0.0.1", udp_port)).unwrap();
    assert_eq!(
        a.run("s['u'].setsockopt(socket.SOL_SOCKET, 27, 0)"), // SO_DETACH_FILTER
        "err EPERM",
        "the owner removed the filter that keeps its denied UDP socket deaf"
    );
    sender.send_to(b"y", ("127.0.0.1", udp_port)).unwrap();
    assert_eq!(
        a.run("s['u'].recv(1)"),
        "err EAGAIN",
        "the denied UDP socket still receives datagrams"
    );
    assert_eq!(
        until(&mut a, "s['in'].recv(1)", deadline, |r| r
            == "err ECONNRESET"),
        "err ECONNRESET",
        "the peer of the denied connection was not reset"
    );
    peer.set_read_timeout(Some(PROMISED)).unwrap();
    let mut buf = [0u8; 1];
    let got = (&peer).read(&mut buf);
    assert!(
        matches!(&got, Ok(0))
            || got
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the refused peer's connection is still open: {got:?}"
    );
    assert!(Instant::now() <= deadline + Duration::from_millis(500));

    // What the policy allows is untouched: the server (from outside the
    // cgroup, which enforce does not decide) and the outsider's listener.
    TcpStream::connect(("127.0.0.1", server_port)).expect("the allowed server");
    TcpStream::connect(("127.0.0.2", denied_port)).expect("the listener outside the cgroup");
    drop(outsider);
}

#[test]
fn a_reload_closes_the_sockets_the_new_policy_denies() {
    let dir = tmpdir("reload");
    let cg = TestCgroup::new("attack-existing-reload");
    let mut a = Attacker::start(&cg);
    let policy = dir.join("policy.toml");
    write_policy(
        &policy,
        "[[rule]]\nname = \"nothing-yet\"\naction = \"deny\"\non = [\"listen\"]\nlocal_port = [1]\n",
    );
    let mut w = Watch::enforce(&cg, &policy);
    // Opened under the first policy, which allows it.
    let p = listen_and_accept(&mut a, "l", 0);
    w.expect("the allowed listen", |v| {
        v["event"] == "listen" && v["verdict"] == "allow" && v["local"]["port"] == p
    });
    write_policy(
        &policy,
        &format!("[[rule]]\nname = \"no-listen-now\"\naction = \"deny\"\non = [\"listen\"]\nlocal_port = [{p}]\n"),
    );
    w.wait_stderr("file changed");
    let deadline = Instant::now() + PROMISED;
    w.expect("the listener denied by the reload", |v| {
        denied_existing(v, "listen", "no-listen-now", p)
    });
    let r = until(&mut a, "r = res.get('l', 'blocked')", deadline, |r| {
        r.starts_with("err")
    });
    assert!(
        r.starts_with("err"),
        "the owner's accept() still blocks ({r})"
    );
    let connect = format!("socket.create_connection(('127.0.0.1', {p}), timeout=1).close()");
    assert_eq!(
        until(&mut a, &connect, deadline, |r| r == "err ECONNREFUSED"),
        "err ECONNREFUSED"
    );
}
