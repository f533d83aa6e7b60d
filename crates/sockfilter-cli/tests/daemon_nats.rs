//! The NATS JetStream output and the fleet view against a real nats-server
//! (Debian's, with `-js`, on a loopback port, its store in a temporary
//! directory): every event arrives although the server is stopped and
//! started again midway, and `sockfilter fleet listeners` lists the
//! listeners of three daemons.

mod service;

use serde_json::Value;
use service::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

fn nats_server(dir: &TempDir, port: u16, log: &str) -> Server {
    Server::start(
        "nats-server",
        Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.join("store")),
        &dir.join(log),
        port,
    )
}

/// A python3 program in the cgroup that binds and closes N UDP sockets for
/// each number written to it.
struct Binder {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Binder {
    fn start(cg: &TestCgroup) -> Binder {
        let mut cmd = Command::new("python3");
        cmd.args([
            "-u",
            "-c",
            "import socket,sys\nfor line in sys.stdin:\n  for _ in range(int(line)):\n    u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.bind(('127.0.0.1',0)); u.close()\n  print('done')",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
        cg.enter(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Binder {
            child,
            stdin,
            stdout,
        }
    }

    fn bind(&mut self, n: usize) {
        writeln!(self.stdin, "{n}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "done");
    }
}

impl Drop for Binder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every message of the stream, in order.
fn stream_messages(port: u16, stream: &str) -> Vec<(String, Value)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        let mut s = js.get_stream(stream).await.unwrap();
        let last = s.info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            let m = s.get_raw_message(seq).await.unwrap();
            out.push((
                m.subject.to_string(),
                serde_json::from_slice(&m.payload).unwrap(),
            ));
        }
        out
    })
}

fn metric(port: u16, name_and_labels: &str) -> Option<f64> {
    let (_, body) = http_get(port, "/metrics").ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

#[test]
fn every_event_arrives_although_the_server_restarts_midway() {
    let cg = TestCgroup::new("daemon-nats");
    let dir = TempDir::new("daemon-nats");
    let port = free_port();
    let mut server = nats_server(&dir, port, "nats-1.log");
    let events = dir.join("events.jsonl");
    let metrics_port = free_port();
    let d = Daemon::start(
        &dir,
        "d",
        &format!(
            "{}[history]\npath = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n[[output]]\nkind = \"file\"\npath = \"{}\"\n[[output]]\nkind = \"nats\"\nurl = \"nats://127.0.0.1:{port}\"\nsubject = \"sockfilter.events\"\n",
            base_config("nats-01", &cg),
            dir.join("state/history.db").display(),
            events.display()
        ),
    );
    let mut binder = Binder::start(&cg);
    binder.bind(20);
    let before = wait_for("the first events in JetStream", || {
        let n = json_lines(&events).len();
        (n >= 40 && stream_messages(port, "sockfilter_events").len() == n).then_some(n)
    });

    server.stop();
    binder.bind(30);
    let pending = wait_for("events queued while the server is down", || {
        metric(metrics_port, "sockfilter_output_pending{output=\"nats\"}").filter(|&p| p >= 60.0)
    });
    assert!(pending >= 60.0);
    assert!(
        dir.join("state/nats-queue.jsonl").metadata().unwrap().len() > 0,
        "the queue is on disk"
    );

    let _server = nats_server(&dir, port, "nats-2.log");
    binder.bind(20);
    let file = wait_for("all events in the file", || {
        let lines = json_lines(&events);
        (lines.len() >= before + 100).then_some(lines)
    });
    let stream = wait_for("every event in JetStream", || {
        let m = stream_messages(port, "sockfilter_events");
        (m.len() >= file.len()).then_some(m)
    });
    assert_eq!(stream.len(), file.len(), "each event exactly once");
    for ((subject, got), want) in stream.iter().zip(&file) {
        assert_eq!(subject, "sockfilter.events.nats-01");
        assert_eq!(got, want, "same events, same order");
    }
    assert_eq!(
        metric(
            metrics_port,
            "sockfilter_output_dropped_total{output=\"nats\"}"
        )
        .unwrap_or(0.0),
        0.0
    );
    wait_for("nothing pending", || {
        (metric(metrics_port, "sockfilter_output_pending{output=\"nats\"}") == Some(0.0))
            .then_some(())
    });
    drop(binder);
    assert!(d.stop().success());
}

#[test]
fn the_queue_bound_is_counted_when_the_server_is_unreachable() {
    let cg = TestCgroup::new("daemon-nats-bound");
    let dir = TempDir::new("daemon-nats-bound");
    let metrics_port = free_port();
    let d = Daemon::start(
        &dir,
        "d",
        &format!(
            "{}[history]\npath = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n[[output]]\nkind = \"nats\"\nurl = \"nats://127.0.0.1:{}\"\nqueue_mb = 1\n",
            base_config("nats-02", &cg),
            dir.join("h.db").display(),
            free_port()
        ),
    );
    // ~600 bytes per event: 4000 events are more than 1 MiB.
    Binder::start(&cg).bind(2000);
    let m = |name: &str| metric(metrics_port, name).unwrap_or(0.0);
    let (dropped, pending, lost) = wait_for("every event queued or counted", || {
        let dropped = m("sockfilter_output_dropped_total{output=\"nats\"}");
        let pending = m("sockfilter_output_pending{output=\"nats\"}");
        let lost = m("sockfilter_events_lost_total");
        (dropped + pending + lost >= 4000.0).then_some((dropped, pending, lost))
    });
    assert!(dropped > 0.0, "the bound was exceeded: {dropped}");
    assert!(
        pending > 1000.0,
        "kept up to the bound: {pending} (kernel lost {lost})"
    );
    assert!(
        std::fs::metadata(dir.join("nats-queue.jsonl"))
            .unwrap()
            .len()
            <= 1024 * 1024
    );
    d.wait_stderr("NATS queue full", 0);
    assert!(d.stop().success());
}

fn fleet(port: u16, extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sockfilter"))
        .args([
            "fleet",
            "listeners",
            "--nats",
            &format!("nats://127.0.0.1:{port}"),
        ])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn fleet_listeners_lists_three_daemons() {
    let dir = TempDir::new("daemon-fleet");
    let port = free_port();
    let _server = nats_server(&dir, port, "nats.log");
    let mut running = Vec::new();
    for host in ["fleet-a", "fleet-b", "fleet-c"] {
        let cg = TestCgroup::new(host);
        let d = Daemon::start(
            &dir,
            host,
            &format!(
                "{}[history]\npath = \"{}\"\n[[output]]\nkind = \"nats\"\nurl = \"nats://127.0.0.1:{port}\"\n",
                base_config(host, &cg),
                dir.join(&format!("{host}/history.db")).display()
            ),
        );
        let (l, tcp, udp) = listener(&cg);
        running.push((host, cg, d, l, tcp, udp));
    }
    let rows: Vec<Value> = wait_for("every host's listeners in the bucket", || {
        let (ok, out) = fleet(port, &["--json"]);
        let rows: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let all = ok
            && running.iter().all(|(host, _, _, _, tcp, udp)| {
                [(tcp, "tcp"), (udp, "udp")].iter().all(|(p, proto)| {
                    rows.iter().any(|r| {
                        r["host"] == *host && r["local"]["port"] == **p && r["proto"] == *proto
                    })
                })
            });
        all.then_some(rows)
    });
    assert_eq!(
        rows.len(),
        6,
        "two sockets on each of three hosts: {rows:?}"
    );
    assert!(rows
        .iter()
        .all(|r| r["exe"] == sockfilter_testkit::python_exe()));
    assert!(rows
        .iter()
        .all(|r| r["updated"].as_str().is_some_and(|t| t.ends_with('Z'))));
    let (_, _, _, _, tcp_b, _) = &running[1];
    let (ok, one) = fleet(port, &["--port", &tcp_b.to_string()]);
    assert!(ok);
    let lines: Vec<&str> = one.lines().collect();
    assert_eq!(lines.len(), 1, "{one}");
    assert!(
        lines[0].starts_with("fleet-b ") && lines[0].contains(&format!("127.0.0.1:{tcp_b}")),
        "{one}"
    );
    let (ok, none) = fleet(port, &["--exe", "/nonexistent", "--json"]);
    assert!(ok && none.is_empty());
    assert!(rows.iter().all(|r| r["stopped"].is_null()));

    // fleet-c's daemon stops cleanly; the programs it saw go on listening.
    // Its rows stay (the last listeners it saw) and say it stopped; the
    // others say how fresh they are.
    let (_, _cg_c, d_c, mut l_c, tcp_c, _) = running.pop().unwrap();
    assert!(d_c.stop().success());
    let rows = wait_for("fleet-c's entry marked stopped", || {
        let (_, out) = fleet(port, &["--json"]);
        let rows: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        rows.iter()
            .any(|r| r["host"] == "fleet-c" && r["stopped"].is_string())
            .then_some(rows)
    });
    assert_eq!(rows.len(), 6, "{rows:?}");
    for r in &rows {
        assert_eq!(r["stopped"].is_string(), r["host"] == "fleet-c", "{r}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_sockfilter"))
        .args([
            "fleet",
            "listeners",
            "--nats",
            &format!("nats://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let row_c = text
        .lines()
        .find(|l| l.contains(&format!("127.0.0.1:{tcp_c}")))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        row_c.starts_with("fleet-c ") && row_c.contains(" stopped "),
        "{row_c}"
    );
    for l in text.lines().filter(|l| l.starts_with("fleet-a ")) {
        let updated: Vec<&str> = l.split_whitespace().skip(1).take(2).collect();
        assert!(updated[0].ends_with('s') && updated[1] == "ago", "{l}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("fleet-c: its daemon stopped at"),
        "{stderr}"
    );
    assert!(!stderr.contains("fleet-a:"), "{stderr}");
    let _ = l_c.kill();
    let _ = l_c.wait();
    for (_, _cg, d, mut l, _, _) in running {
        let _ = l.kill();
        let _ = l.wait();
        assert!(d.stop().success());
    }
}

#[test]
fn fleet_listeners_without_a_server_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_sockfilter"))
        .args([
            "fleet",
            "listeners",
            "--nats",
            &format!("nats://127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("connecting to NATS at nats://127.0.0.1:"),
        "{err}"
    );
}

#[test]
fn a_host_name_with_dots_keeps_its_subject_stream_and_bucket_key() {
    // A hostname is often the FQDN: its dots belong to the host, not to
    // the subject (the stream is still `sockfilter_events`, the key the
    // whole name).
    let cg = TestCgroup::new("daemon-nats-fqdn");
    let dir = TempDir::new("daemon-nats-fqdn");
    let port = free_port();
    let _server = nats_server(&dir, port, "nats.log");
    let host = "web-01.example.com";
    let d = Daemon::start(
        &dir,
        "d",
        &format!(
            "{}[history]\npath = \"{}\"\n[[output]]\nkind = \"nats\"\nurl = \"nats://127.0.0.1:{port}\"\nsubject = \"sockfilter.events\"\n",
            base_config(host, &cg),
            dir.join("state/history.db").display()
        ),
    );
    let (mut l, tcp, _) = listener(&cg);
    let row = wait_for("the listener under the full host name", || {
        let (ok, out) = fleet(port, &["--json", "--port", &tcp.to_string()]);
        let rows: Vec<Value> = out
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (ok && !rows.is_empty()).then_some(rows)
    });
    assert_eq!(row.len(), 1, "{row:?}");
    assert_eq!(
        row[0]["host"], host,
        "the bucket key is the whole host name"
    );
    let listen = wait_for("the listen in the stream sockfilter_events", || {
        stream_messages(port, "sockfilter_events")
            .into_iter()
            .find(|(_, v)| v["event"] == "listen" && v["local"]["port"] == tcp)
    });
    assert_eq!(listen.0, format!("sockfilter.events.{host}"));
    assert_eq!(listen.1["host"], host);
    let _ = l.kill();
    let _ = l.wait();
    assert!(d.stop().success());
}

#[test]
fn fleet_listeners_neither_panics_nor_prints_raw_control_characters_on_a_forged_value() {
    // Anyone who may write to the bucket controls every string of a value:
    // a listener that is not an object, and escape sequences in fields.
    let dir = TempDir::new("daemon-fleet-forged");
    let port = free_port();
    let _server = nats_server(&dir, port, "nats.log");
    let forged = serde_json::json!({
        "host": "forged", "time": "2026-11-30T00:00:00Z",
        "listeners": [
            7,
            {"proto": "tcp\u{1b}[2J", "family": "ipv4", "pid": 1, "uid": 0,
             "comm": "c\u{1b}]0;x\u{7}", "exe": "/e\n", "local": {"ip": "1.2.3.4\u{1b}[31m", "port": 22}}
        ]
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        let kv = sockfilter_daemon::outputs::nats::listeners_bucket(&js)
            .await
            .unwrap();
        kv.put("forged", forged.to_string().into()).await.unwrap();
    });
    for args in [&["--json"][..], &[]] {
        let out = Command::new(env!("CARGO_BIN_EXE_sockfilter"))
            .args(["fleet", "listeners", "--nats"])
            .arg(format!("nats://127.0.0.1:{port}"))
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        if args.is_empty() {
            let rows: Vec<&str> = stdout.lines().collect();
            assert_eq!(rows.len(), 1, "the object row only: {stdout:?}");
            assert!(
                !stdout.chars().any(|c| c.is_control() && c != '\n'),
                "raw control characters reach the terminal: {stdout:?}"
            );
            assert!(stderr.contains("not a listener"), "{stderr}");
        } else {
            let rows: Vec<Value> = stdout
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(rows.len(), 1, "{stdout}");
            assert_eq!(rows[0]["comm"], "c\u{1b}]0;x\u{7}", "JSON stays exact");
        }
    }
}
