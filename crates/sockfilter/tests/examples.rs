//! The examples, built by `cargo test`, run against real listeners and
//! connections in the test's own cgroup.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

/// A running example: stdout and stderr lines arrive on channels; killed on drop.
struct Example {
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
}

fn lines(r: impl std::io::Read + Send + 'static, tag: &'static str) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            eprintln!("[{tag}] {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Example {
    /// Starts target/<profile>/examples/NAME and waits for "NAME: watching".
    fn start(name: &'static str, args: &[&str]) -> Example {
        let path = profile_dir().join("examples").join(name);
        assert!(
            path.exists(),
            "{} is not built: cargo builds examples when it builds every test target \
             (`cargo test -p sockfilter`), not for `--test examples` alone; \
             run `cargo build --examples` first",
            path.display()
        );
        let mut child = Command::new(&path)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let out = lines(child.stdout.take().unwrap(), name);
        let err = lines(child.stderr.take().unwrap(), name);
        let ex = Example { child, out, err };
        let ready = format!("{name}: watching");
        recv_until(&ex.err, &ready, |l| l.contains(&ready));
        ex
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn listen_alert_warns_about_non_loopback_listeners_only() {
    let cg = TestCgroup::new("ex-alert");
    let ex = Example::start("listen_alert", &["--cgroup", cg.path.to_str().unwrap()]);
    let mut p = python(
        &cg,
        None,
        r#"
import socket, sys
lo = socket.socket(); lo.bind(("127.0.0.1", 0)); lo.listen()
lo6 = socket.socket(socket.AF_INET6); lo6.bind(("::1", 0)); lo6.listen()
anyv4 = socket.socket(); anyv4.bind(("0.0.0.0", 0)); anyv4.listen()
print(lo.getsockname()[1], lo6.getsockname()[1], anyv4.getsockname()[1])
sys.stdin.readline()
"#,
    );
    let ports: Vec<String> = p.line().split_whitespace().map(String::from).collect();
    let want = format!("0.0.0.0:{}", ports[2]);
    let line = recv_until(&ex.out, "the alert", |l| l.contains(&want));
    assert!(line.starts_with("WARNING: python3 "), "{line}");
    assert!(line.contains(&format!("pid {}", p.pid())), "{line}");
    assert!(line.contains(&python_exe()), "{line}");
    assert!(line.ends_with("(tcp4)"), "{line}");
    // The loopback listeners came first; none of them was reported.
    while let Ok(l) = ex.out.try_recv() {
        assert!(!l.contains(&ports[0]) && !l.contains(&ports[1]), "{l}");
    }
    p.send("bye");
}

#[test]
fn drop_flows_resets_connections_to_its_port() {
    let cg = TestCgroup::new("ex-drop");
    let mut p = python(
        &cg,
        None,
        r#"
import errno, socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
other = socket.socket(); other.bind(("127.0.0.1", 0)); other.listen()
print(s.getsockname()[1], other.getsockname()[1])
sys.stdin.readline()
def attempt(port, srv, echo):
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        srv.settimeout(10)
        a, _ = srv.accept()
        if echo:
            c.sendall(b"ping")
            a.sendall(a.recv(100))
        # Dropped: blocks until the reset (the drop comes after the fact).
        return "ok:%r" % (c.recv(100),)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
print(attempt(s.getsockname()[1], s, False), attempt(other.getsockname()[1], other, True))
sys.stdin.readline()
"#,
    );
    let ports: Vec<String> = p.line().split_whitespace().map(String::from).collect();
    let ex = Example::start(
        "drop_flows",
        &["--port", &ports[0], "--cgroup", cg.path.to_str().unwrap()],
    );
    p.send("go");
    let results: Vec<String> = p.line().split_whitespace().map(String::from).collect();
    assert!(
        ["ECONNRESET", "ECONNABORTED", "ok:b''"].contains(&results[0].as_str()),
        "the connection to the dropped port fails: {results:?}"
    );
    assert!(
        results[1] == "ok:b'ping'",
        "the other port is untouched: {results:?}"
    );
    let dropped = recv_until(&ex.out, "a drop report", |l| l.starts_with("dropped "));
    assert!(dropped.contains(&format!(":{}", ports[0])), "{dropped}");
    assert!(dropped.contains(&format!("pid {}", p.pid())), "{dropped}");
    assert!(dropped.contains(&python_exe()), "{dropped}");
    while let Ok(l) = ex.out.try_recv() {
        assert!(
            !l.contains(&format!(":{}", ports[1])),
            "other port dropped: {l}"
        );
    }
}
