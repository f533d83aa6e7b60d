//! `sockfilter daemon` against the real kernel and real servers: config
//! errors, the file output with `host`, READY=1, SIGHUP and SIGTERM, a real
//! Prometheus scraping the metrics, and the history across a restart.

mod service;

use serde_json::Value;
use service::*;
use std::process::Command;

fn sockfilter(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sockfilter"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn config_errors_name_file_line_and_column() {
    let dir = TempDir::new("config-errors");
    let cases = [
        (
            "host = \"web-01\"\nhistroy = 1\n",
            "2:1: unknown field `histroy`",
        ),
        (
            "[history]\npath = \"/x\"\nretention = \"forever\"\n",
            "3:13: retention \"forever\"",
        ),
        (
            "[[output]]\nkind = \"syslog\"\naddress = \"udp:nohost\"\n",
            "3:11: address",
        ),
        (
            "[[output]]\nkind = \"file\"\nurl = \"nats://x\"\n",
            "3:7: url does not apply to a file output",
        ),
        (
            "[metrics]\nlisten = \"9178\"\n",
            "2:10: listen \"9178\" is not an IP:PORT",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = dir.join(&format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let p = path.to_str().unwrap();
        for args in [vec!["check-config", p], vec!["daemon", "--config", p]] {
            let out = sockfilter(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert!(
                err.starts_with(&format!("{p}:{expected}")),
                "{args:?}: got {err:?}, expected {p}:{expected}"
            );
            assert!(!err.contains("panicked"));
        }
    }
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[[output]]\nkind = \"file\"\npath = \"/tmp/x.jsonl\"\n",
    )
    .unwrap();
    let out = sockfilter(&["check-config", good.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    // The policy a config names is checked too.
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, "[[rule]]\nname = \"x\"\naction = \"maybe\"\n").unwrap();
    let with_policy = dir.join("with-policy.toml");
    std::fs::write(&with_policy, format!("policy = \"{}\"\n", policy.display())).unwrap();
    let out = sockfilter(&["check-config", with_policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("{}:3:10:", policy.display())),
        "{err}"
    );
    let out = sockfilter(&["check-config", "/nonexistent/sockfilter.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

fn file_config(host: &str, cg: &TestCgroup, events: &std::path::Path) -> String {
    format!(
        "{}[[output]]\nkind = \"file\"\npath = \"{}\"\n",
        base_config(host, cg),
        events.display()
    )
}

fn listen_on(lines: &[Value], port: u16) -> Option<Value> {
    lines
        .iter()
        .find(|v| v["event"] == "listen" && v["local"]["port"] == port)
        .cloned()
}

#[test]
fn file_output_has_host_and_reload_keeps_the_old_config_when_the_new_is_invalid() {
    let cg = TestCgroup::new("daemon-file");
    let dir = TempDir::new("daemon-file");
    let events = dir.join("events.jsonl");
    let d = Daemon::start(&dir, "d", &file_config("file-01", &cg, &events));

    let (mut l1, tcp1, udp1) = listener(&cg);
    let listen = wait_for("the listen event in the file", || {
        listen_on(&json_lines(&events), tcp1)
    });
    assert_eq!(listen["host"], "file-01");
    assert_eq!(listen["exe"], sockfilter_testkit::python_exe());
    // Every contract field is there, unchanged, besides host.
    for f in [
        "event", "time", "verdict", "pid", "uid", "comm", "exe", "cgroup", "proto", "family",
        "local", "remote", "socket", "existing", "backlog",
    ] {
        assert!(listen.get(f).is_some(), "missing {f}");
    }
    assert!(json_lines(&events)
        .iter()
        .any(|v| v["event"] == "bind" && v["local"]["port"] == udp1 && v["proto"] == "udp"));

    // An invalid new file: rejected with its position, the old one stays.
    std::fs::write(
        &d.config,
        "host = \"file-02\"\n[[output]]\nkind = \"file\"\n",
    )
    .unwrap();
    let skip = d.stderr_len();
    d.signal(libc::SIGHUP);
    let msg = d.wait_stderr("reload rejected", skip);
    assert!(
        msg.contains(&format!(
            "{}:3:8: a file output needs path",
            d.config.display()
        )),
        "{msg}"
    );
    let (mut l2, tcp2, _) = listener(&cg);
    let v = wait_for("events still written after the rejected reload", || {
        listen_on(&json_lines(&events), tcp2)
    });
    assert_eq!(v["host"], "file-01");

    // A valid new file: a new host name, a second file, metrics.
    let events2 = dir.join("events2.jsonl");
    let metrics_port = free_port();
    std::fs::write(
        &d.config,
        format!(
            "{}[[output]]\nkind = \"file\"\npath = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
            file_config("file-02", &cg, &events),
            events2.display()
        ),
    )
    .unwrap();
    let skip = d.stderr_len();
    d.signal(libc::SIGHUP);
    d.wait_stderr("configuration reloaded", skip);
    let (mut l3, tcp3, _) = listener(&cg);
    let v = wait_for("events with the new host", || {
        listen_on(&json_lines(&events), tcp3)
    });
    assert_eq!(v["host"], "file-02");
    let v2 = wait_for("events in the second file", || {
        listen_on(&json_lines(&events2), tcp3)
    });
    assert_eq!(v, v2);

    // A valid file whose output cannot be opened (no syslog server at that
    // socket): rejected, the running outputs go on.
    let running = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(
        &d.config,
        format!(
            "{running}[[output]]\nkind = \"syslog\"\naddress = \"unix:{}\"\n",
            dir.join("no-such-socket").display()
        ),
    )
    .unwrap();
    let skip = d.stderr_len();
    d.signal(libc::SIGHUP);
    let msg = d.wait_stderr("reload rejected", skip);
    assert!(msg.contains("no-such-socket"), "{msg}");
    let (mut l4, tcp4, _) = listener(&cg);
    let v4 = wait_for("events in both files after the failed reload", || {
        Some((
            listen_on(&json_lines(&events), tcp4)?,
            listen_on(&json_lines(&events2), tcp4)?,
        ))
    });
    assert_eq!(v4.0["host"], "file-02");
    assert_eq!(v4.0, v4.1);
    let (status, body) = http_get(metrics_port, "/metrics").unwrap();
    assert_eq!(
        status, 200,
        "the metrics endpoint survives the failed reload"
    );
    assert!(body.contains("sockfilter_events_total"));
    // Every open output's counters exist from the start, at 0: a first drop
    // or error is then an increase Prometheus sees (a series that appears
    // at 1 is not one).
    for output in ["file", "file-2"] {
        for metric in [
            "sockfilter_output_errors_total",
            "sockfilter_output_dropped_total",
        ] {
            assert!(
                body.contains(&format!("{metric}{{output=\"{output}\"}} 0\n")),
                "{metric} of {output}: {body}"
            );
        }
    }

    for l in [&mut l1, &mut l2, &mut l3, &mut l4] {
        let _ = l.kill();
        let _ = l.wait();
    }
    let st = d.stop();
    assert!(st.success(), "SIGTERM: {st}");
}

#[test]
fn prometheus_scrapes_the_listen_counter() {
    let cg = TestCgroup::new("daemon-prom");
    let dir = TempDir::new("daemon-prom");
    let metrics_port = free_port();
    let d = Daemon::start(
        &dir,
        "d",
        &format!(
            "{}[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
            base_config("prom-01", &cg)
        ),
    );
    let prom_port = free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sockfilter\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"),
    )
    .unwrap();
    let _prom = Server::start(
        "prometheus",
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .current_dir(&dir.0),
        &dir.join("prometheus.log"),
        prom_port,
    );
    let gauge = |labels: &str| -> Option<f64> {
        let (_, body) = http_get(metrics_port, "/metrics").ok()?;
        body.lines().find_map(|l| {
            l.strip_prefix(&format!("sockfilter_listeners{{{labels}}} "))?
                .parse()
                .ok()
        })
    };
    assert_eq!(gauge("proto=\"tcp\",family=\"ipv4\""), Some(0.0));
    let (mut l, _, _) = listener(&cg);
    for labels in [
        "proto=\"tcp\",family=\"ipv4\"",
        "proto=\"udp\",family=\"ipv4\"",
    ] {
        wait_for(&format!("sockfilter_listeners{{{labels}}} 1"), || {
            (gauge(labels) == Some(1.0)).then_some(())
        });
    }
    let (_, own) = http_get(metrics_port, "/metrics").unwrap();
    assert!(own.contains("process_resident_memory_bytes"), "{own}");
    let value = wait_for(
        "Prometheus to report sockfilter_events_total{event=\"listen\"} > 0",
        || {
            let (status, body) = http_get(
                prom_port,
                "/api/v1/query?query=sockfilter_events_total%7Bevent%3D%22listen%22%7D",
            )
            .ok()?;
            assert_eq!(status, 200, "{body}");
            let v: Value = serde_json::from_str(&body).ok()?;
            let n: f64 = v["data"]["result"][0]["value"][1].as_str()?.parse().ok()?;
            (n > 0.0).then_some(n)
        },
    );
    assert!(value >= 1.0);
    let _ = l.kill();
    let _ = l.wait();
    wait_for("the listener gauge back to 0 after the close", || {
        (gauge("proto=\"tcp\",family=\"ipv4\"") == Some(0.0)).then_some(())
    });
    assert!(d.stop().success());
}

fn history(db: &std::path::Path, args: &[&str]) -> Vec<String> {
    let mut all = vec!["history", "--db", db.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = sockfilter(&all);
    assert!(
        out.status.success(),
        "{all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn history_answers_port_and_exe_after_a_restart_and_retention_removes_old_rows() {
    let cg = TestCgroup::new("daemon-history");
    let dir = TempDir::new("daemon-history");
    let db = dir.join("state/history.db");
    let events = dir.join("events.jsonl");
    let config = format!(
        "{}[history]\npath = \"{}\"\nretention = \"30d\"\n",
        file_config("hist-01", &cg, &events),
        db.display()
    );
    let d = Daemon::start(&dir, "d", &config);
    let (mut l1, tcp1, _) = listener(&cg);
    let listen1 = wait_for("the first listen", || listen_on(&json_lines(&events), tcp1));
    let _ = l1.kill();
    let _ = l1.wait();
    assert!(d.stop().success());

    // After a restart: the first run's events are still answered.
    let d = Daemon::start(&dir, "d", &config);
    let (mut l2, tcp2, _) = listener(&cg);
    wait_for("the second listen", || {
        listen_on(&json_lines(&events), tcp2)
    });
    wait_for("the history to have the second run", || {
        let lines = history(&db, &["--port", &tcp2.to_string(), "--json"]);
        (!lines.is_empty()).then_some(())
    });
    let first = history(
        &db,
        &["--port", &tcp1.to_string(), "--event", "listen", "--json"],
    );
    assert_eq!(first.len(), 1, "{first:?}");
    // Exactly the JSON line the file output wrote (watch's form, with host).
    let stored: Value = serde_json::from_str(&first[0]).unwrap();
    assert_eq!(stored, listen1);
    let text = history(&db, &["--port", &tcp1.to_string(), "--event", "listen"]);
    assert_eq!(text.len(), 1);
    assert!(
        text[0].contains(" listen  tcp4 127.0.0.1:") && text[0].contains("backlog="),
        "{text:?}"
    );
    let exe = sockfilter_testkit::python_exe();
    let by_exe = history(&db, &["--exe", &exe, "--event", "listen", "--json"]);
    let ports: Vec<u64> = by_exe
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["local"]["port"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(
        ports.contains(&u64::from(tcp1)) && ports.contains(&u64::from(tcp2)),
        "{ports:?}"
    );
    assert!(history(&db, &["--exe", "/nonexistent", "--json"]).is_empty());
    // By pid and command name: only that process's events.
    let pid2 = l2.id();
    let by_pid = history(&db, &["--pid", &pid2.to_string(), "--json"]);
    assert!(
        by_pid.len() >= 3,
        "bind, listen and the UDP bind: {by_pid:?}"
    );
    assert!(by_pid
        .iter()
        .all(|l| serde_json::from_str::<Value>(l).unwrap()["pid"] == pid2));
    let by_comm = history(&db, &["--comm", "python3", "--event", "listen", "--json"]);
    assert_eq!(by_comm.len(), 2, "one listen per run: {by_comm:?}");
    assert!(history(&db, &["--comm", "nosuchcomm"]).is_empty());
    assert!(
        history(
            &db,
            &[
                "--port",
                &tcp1.to_string(),
                "--since",
                "1m",
                "--until",
                "30s"
            ]
        )
        .len()
            <= 1
    );

    // Age the first run's rows by 40 days; the running daemon deletes them
    // when it enforces the retention (on SIGHUP, and every minute).
    let conn = rusqlite::Connection::open(&db).unwrap();
    let aged = conn
        .execute(
            "UPDATE events SET time_us = time_us - 40*86400*1000000 WHERE local_port = ?1",
            [tcp1],
        )
        .unwrap();
    assert!(aged >= 2, "bind and listen of the first run");
    drop(conn);
    assert_eq!(
        history(&db, &["--port", &tcp1.to_string(), "--since", "45d"]).len(),
        aged
    );
    let skip = d.stderr_len();
    d.signal(libc::SIGHUP);
    d.wait_stderr("configuration reloaded", skip);
    wait_for("retention to delete the aged rows", || {
        history(&db, &["--port", &tcp1.to_string()])
            .is_empty()
            .then_some(())
    });
    assert!(
        !history(&db, &["--port", &tcp2.to_string()]).is_empty(),
        "recent rows stay"
    );
    let _ = l2.kill();
    let _ = l2.wait();
    assert!(d.stop().success());
    let out = sockfilter(&["history", "--db", db.to_str().unwrap(), "--since", "soon"]);
    assert_eq!(out.status.code(), Some(2), "clap rejects a bad --since");
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither an RFC 3339 time"));
}

/// Binds a UDP socket to 127.0.0.1:PORT in the cgroup: "ok" or the errno name.
fn try_bind(cg: &TestCgroup, port: u16) -> String {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        &format!("import socket,errno\ntry:\n  socket.socket(socket.AF_INET,socket.SOCK_DGRAM).bind(('127.0.0.1',{port})); print('ok')\nexcept OSError as e: print(errno.errorcode[e.errno])"),
    ]);
    cg.enter(&mut cmd);
    String::from_utf8(cmd.output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn the_daemon_enforces_its_policy_counts_rule_matches_and_reloads_it_on_sighup() {
    let cg = TestCgroup::new("daemon-policy");
    let dir = TempDir::new("daemon-policy");
    let port = free_port();
    let policy = dir.join("policy.toml");
    let deny = |name: &str| {
        format!("[[rule]]\nname = \"{name}\"\naction = \"deny\"\non = [\"bind\"]\nproto = \"udp\"\nlocal_port = [{port}]\n")
    };
    std::fs::write(&policy, deny("no-udp-port")).unwrap();
    let events = dir.join("events.jsonl");
    let metrics_port = free_port();
    let d = Daemon::start(
        &dir,
        "d",
        &format!(
            "policy = \"{}\"\n{}[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
            policy.display(),
            file_config("policy-01", &cg, &events)
        ),
    );
    d.wait_stderr("enforcing 1 rules from", 0);
    assert_eq!(try_bind(&cg, port), "EPERM");
    let denied = wait_for("the denied bind in the file", || {
        json_lines(&events)
            .into_iter()
            .find(|v| v["event"] == "bind" && v["local"]["port"] == port)
    });
    assert_eq!(denied["verdict"], "deny");
    assert_eq!(denied["rule"], "no-udp-port");
    let (_, body) = http_get(metrics_port, "/metrics").unwrap();
    assert!(
        body.contains("sockfilter_rule_matches_total{rule=\"no-udp-port\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("sockfilter_events_total{event=\"bind\",verdict=\"deny\"} 1"),
        "{body}"
    );

    // An invalid policy is rejected on SIGHUP; the old one stays in force.
    std::fs::write(&policy, "[[rule]]\nname = \"x\"\naction = \"maybe\"\n").unwrap();
    let skip = d.stderr_len();
    d.signal(libc::SIGHUP);
    d.wait_stderr(&format!("{}:3:10:", policy.display()), skip);
    assert_eq!(try_bind(&cg, port), "EPERM");
    // A valid one is put in force.
    std::fs::write(&policy, "default = \"allow\"\n").unwrap();
    let skip = d.stderr_len();
    d.signal(libc::SIGHUP);
    d.wait_stderr("enforcing 0 rules", skip);
    assert_eq!(try_bind(&cg, port), "ok");

    // SIGTERM leaves nothing behind: no program (a link that stayed would
    // keep its program loaded), no link it holds, no pin, nothing attached
    // to the cgroup.
    let (progs, links) = bpf_objects_of(d.pid());
    assert!(progs.len() >= 11, "every program loaded: {progs:?}");
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&cg.path).unwrap());
    let pins = std::path::PathBuf::from(format!("/sys/fs/bpf/sockfilter/cgroup-{ino}"));
    assert!(pins.exists(), "an enforcing daemon pins its programs");
    assert!(!attached_to(&cg).is_empty());
    assert!(d.stop().success());
    wait_for("no program, link or pin of the daemon left", || {
        (live("prog", &progs).is_empty()
            && live("link", &links).is_empty()
            && !pins.exists()
            && attached_to(&cg).is_empty())
        .then_some(())
    });
}

/// What `bpftool cgroup show` lists for the test's cgroup.
fn attached_to(cg: &TestCgroup) -> String {
    let out = Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(&cg.path)
        .output()
        .expect("bpftool");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The ids of the BPF programs and links a process holds (its fdinfo).
fn bpf_objects_of(pid: i32) -> (Vec<u64>, Vec<u64>) {
    let (mut progs, mut links) = (Vec::new(), Vec::new());
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(fd.path()) else {
            continue;
        };
        let id = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().parse::<u64>().unwrap())
        };
        match (id("link_id:"), id("prog_id:")) {
            (Some(link), _) => links.push(link),
            (None, Some(prog)) => progs.push(prog),
            _ => {}
        }
    }
    (progs, links)
}

/// Which of `ids` of KIND (`prog`, `link`) the kernel still has.
fn live(kind: &str, ids: &[u64]) -> Vec<u64> {
    ids.iter()
        .copied()
        .filter(|id| {
            Command::new("bpftool")
                .args([kind, "show", "id", &id.to_string()])
                .output()
                .expect("bpftool")
                .status
                .success()
        })
        .collect()
}

/// The history, the events file and the NATS queue hold every process's
/// command line and executable: the daemon creates them readable by no one
/// but its owner and group, whatever the umask it was started with (outside
/// systemd's `UMask=`), and takes "other" off files an older version left.
#[test]
fn history_events_and_queue_files_are_not_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let cg = TestCgroup::new("daemon-modes");
    let dir = TempDir::new("daemon-modes");
    let events = dir.join("events.jsonl");
    let db = dir.join("state/history.db");
    // An events file from an older version, world-readable.
    std::fs::write(&events, "").unwrap();
    std::fs::set_permissions(&events, std::fs::Permissions::from_mode(0o644)).unwrap();
    // SAFETY: umask(2) only sets the mask; 022 is the usual one, under
    // which files are created world-readable unless asked otherwise.
    unsafe { libc::umask(0o022) };
    let d = Daemon::start(
        &dir,
        "d",
        &format!(
            "{}[history]\npath = \"{}\"\n[[output]]\nkind = \"nats\"\nurl = \"nats://127.0.0.1:{}\"\n",
            file_config("modes-01", &cg, &events),
            db.display(),
            free_port()
        ),
    );
    let (mut l, tcp, _) = listener(&cg);
    wait_for("the listen event in the file", || {
        listen_on(&json_lines(&events), tcp)
    });
    let _ = l.kill();
    let _ = l.wait();
    let queue = dir.join("state/nats-queue.jsonl");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let wal = dir.join("state/history.db-wal");
    let shm = dir.join("state/history.db-shm");
    for p in [&db, &wal, &shm, &events, &queue] {
        assert_eq!(mode(p) & 0o007, 0, "{} is {:o}", p.display(), mode(p));
    }
    let st = d.stop();
    assert!(st.success(), "SIGTERM: {st}");
}

/// A kernel loss the daemon recorded in the history (the file output's lost
/// record) shows in `sockfilter history`: as its JSON line with `--json`,
/// as watch's stderr warning, with its time, in the text form; and it is
/// there whatever the query filters on besides time. (The kernel cannot be
/// made to drop events on demand: the database is written as the daemon
/// writes it, through its history writer.)
#[test]
fn history_shows_where_the_kernel_dropped_events() {
    use sockfilter_daemon::history::HistoryWriter;
    use std::time::{Duration, UNIX_EPOCH};
    let dir = TempDir::new("history-lost");
    let db = dir.join("history.db");
    let listen = serde_json::json!({"event":"listen","time":"2026-11-30T08:00:00.000000Z",
        "verdict":"allow","pid":7,"uid":0,"comm":"web","exe":"/usr/bin/web","cgroup":null,
        "proto":"tcp","family":"ipv4","local":{"ip":"127.0.0.1","port":8080},"remote":null,
        "socket":1,"existing":false,"rule":null,"host":"h1"});
    let event = sockfilter_model::Event::from_json(&listen).unwrap();
    let lost = r#"{"count":42,"event":"lost","host":"h1","time":"2026-11-30T08:00:01.000000Z"}"#;
    let metrics = sockfilter_daemon::metrics::Metrics::new();
    let mut w = HistoryWriter::open(&db, Duration::from_secs(1 << 40), &metrics).unwrap();
    w.record(&event, &listen.to_string());
    w.record_lost(UNIX_EPOCH + Duration::from_secs(1_796_025_601), lost);
    drop(w);

    let json = history(&db, &["--json", "--port", "8080"]);
    assert_eq!(json.len(), 2, "{json:?}");
    assert_eq!(json[1], lost);
    let out = sockfilter(&[
        "history",
        "--db",
        db.to_str().unwrap(),
        "--exe",
        "/usr/bin/other",
    ]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "no event of that exe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2026-11-30T08:00:01.000000Z h1: the kernel dropped 42 events"),
        "{stderr}"
    );
    assert!(!stderr.contains("not events"), "{stderr}");
}

/// A reload is all or nothing: a new config that names a new policy file
/// and an output that cannot be opened keeps both the old config and the
/// old policy; a new config whose new policy is invalid keeps the old
/// config too; a valid pair is put in force together.
#[test]
fn a_rejected_reload_changes_neither_config_nor_policy() {
    let cg = TestCgroup::new("daemon-reload-all");
    let dir = TempDir::new("daemon-reload-all");
    let port = free_port();
    let deny = dir.join("deny.toml");
    std::fs::write(
        &deny,
        format!("[[rule]]\nname = \"no-udp-port\"\naction = \"deny\"\non = [\"bind\"]\nproto = \"udp\"\nlocal_port = [{port}]\n"),
    )
    .unwrap();
    let allow = dir.join("allow.toml");
    std::fs::write(&allow, "default = \"allow\"\n").unwrap();
    let events = dir.join("events.jsonl");
    let config = |policy: &std::path::Path, host: &str| {
        format!(
            "policy = \"{}\"\n{}",
            policy.display(),
            file_config(host, &cg, &events)
        )
    };
    let d = Daemon::start(&dir, "d", &config(&deny, "reload-01"));
    d.wait_stderr("enforcing 1 rules from", 0);
    assert_eq!(try_bind(&cg, port), "EPERM");

    // The new policy is valid, the new output cannot be opened.
    std::fs::write(
        &d.config,
        format!(
            "{}[[output]]\nkind = \"syslog\"\naddress = \"unix:{}\"\n",
            config(&allow, "reload-02"),
            dir.join("no-such-socket").display()
        ),
    )
    .unwrap();
    let skip = d.stderr_len();
    d.signal(libc::SIGHUP);
    let msg = d.wait_stderr("reload rejected", skip);
    assert!(msg.contains("no-such-socket"), "{msg}");
    assert_eq!(
        try_bind(&cg, port),
        "EPERM",
        "the old policy stays in force with the old config"
    );

    // The new config is valid, its new policy is not.
    let broken = dir.join("broken.toml");
    std::fs::write(&broken, "[[rule]]\nname = \"x\"\naction = \"maybe\"\n").unwrap();
    std::fs::write(&d.config, config(&broken, "reload-03")).unwrap();
    let skip = d.stderr_len();
    d.signal(libc::SIGHUP);
    d.wait_stderr(&format!("{}:3:10:", broken.display()), skip);
    let (mut l, tcp, _) = listener(&cg);
    let v = wait_for("an event after the rejected reload", || {
        listen_on(&json_lines(&events), tcp)
    });
    assert_eq!(v["host"], "reload-01", "the old config stays in force");
    assert_eq!(try_bind(&cg, port), "EPERM");

    // Both valid: both in force.
    std::fs::write(&d.config, config(&allow, "reload-04")).unwrap();
    let skip = d.stderr_len();
    d.signal(libc::SIGHUP);
    d.wait_stderr("configuration reloaded", skip);
    assert!(d.stderr.lock().unwrap()[skip..]
        .iter()
        .any(|l| l.contains(&format!("enforcing 0 rules from {}", allow.display()))));
    assert_eq!(try_bind(&cg, port), "ok");
    let _ = l.kill();
    let _ = l.wait();
    assert!(d.stop().success());
}
