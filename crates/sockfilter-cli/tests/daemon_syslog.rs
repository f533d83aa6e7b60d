//! The syslog output against a real rsyslog (Debian's rsyslogd, started on
//! loopback ports in a temporary directory): RFC 5424 over UDP, over TCP
//! and to a local datagram socket (as /dev/log), with the JSON event intact
//! as MSG.

mod service;

use serde_json::Value;
use service::*;
use std::process::Command;

#[test]
fn rsyslog_receives_rfc5424_lines_with_the_json_intact() {
    let cg = TestCgroup::new("daemon-syslog");
    let dir = TempDir::new("daemon-syslog");
    let (udp, tcp) = (free_port(), free_port());
    let received = dir.join("received.log");
    // Where /dev/log would be: a datagram socket of rsyslog's own.
    let unix = dir.join("log");
    // Each field of the RFC 5424 header rsyslog parsed, then MSG as received.
    std::fs::write(
        dir.join("rsyslog.conf"),
        format!(
            r#"global(workDirectory="{dir}")
module(load="imudp")
module(load="imtcp")
module(load="imuxsock" SysSock.Use="off")
template(name="fields" type="string" string="%inputname% %protocol-version% %hostname% %app-name% %procid% %msgid% %structured-data% %msg%\n")
ruleset(name="events") {{ action(type="omfile" file="{received}" template="fields") }}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="events")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="events")
input(type="imuxsock" socket="{unix}" useSpecialParser="off" parseHostname="on" ruleset="events")
"#,
            dir = dir.0.display(),
            received = received.display(),
            unix = unix.display()
        ),
    )
    .unwrap();
    let _rsyslog = Server::start(
        "rsyslogd",
        Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.join("rsyslogd.pid")),
        &dir.join("rsyslogd.log"),
        tcp,
    );
    wait_for("rsyslogd's unix socket", || unix.exists().then_some(()));
    let events = dir.join("events.jsonl");
    let d = Daemon::start(
        &dir,
        "d",
        &format!(
            "{}[[output]]\nkind = \"file\"\npath = \"{}\"\n[[output]]\nkind = \"syslog\"\naddress = \"udp:127.0.0.1:{udp}\"\n[[output]]\nkind = \"syslog\"\naddress = \"tcp:127.0.0.1:{tcp}\"\n[[output]]\nkind = \"syslog\"\naddress = \"unix:{}\"\n",
            base_config("syslog-01", &cg),
            events.display(),
            unix.display()
        ),
    );
    // A command name with a quote, a backslash and a tab: JSON escapes that
    // must survive the trip.
    let mut cmd = Command::new("python3");
    cmd.args([
        "-u",
        "-c",
        "import socket,sys,ctypes\nctypes.CDLL(None).prctl(15, b'q\"u\\\\o\\tte', 0, 0, 0)\nt=socket.socket(); t.bind(('127.0.0.1',0)); t.listen()\nprint(t.getsockname()[1])\nsys.stdin.read()",
    ])
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped());
    cg.enter(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port: u64 = line.trim().parse().unwrap();
    let reference = wait_for("the listen event in the file output", || {
        json_lines(&events)
            .into_iter()
            .find(|v| v["event"] == "listen" && v["local"]["port"] == port)
    });
    assert_eq!(reference["comm"], "q\"u\\o\tte");
    let pid = d.pid().to_string();
    for input in ["imudp", "imtcp", "imuxsock"] {
        let msg = wait_for(
            &format!("rsyslog to receive the listen over {input}"),
            || {
                std::fs::read_to_string(&received)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.starts_with(&format!("{input} ")))
                    .find_map(|l| {
                        let fields: Vec<&str> = l.splitn(8, ' ').collect();
                        let v: Value = serde_json::from_str(fields[7]).ok()?;
                        (v["event"] == "listen" && v["local"]["port"] == port)
                            .then_some((fields, v))
                    })
                    .map(|(f, v)| (f.iter().map(|s| s.to_string()).collect::<Vec<_>>(), v))
            },
        );
        let (fields, json) = msg;
        assert_eq!(fields[1], "1", "RFC 5424 VERSION");
        assert_eq!(fields[2], "syslog-01", "HOSTNAME is the daemon's host");
        assert_eq!(fields[3], "sockfilter", "APP-NAME");
        assert_eq!(fields[4], pid, "PROCID");
        assert_eq!(fields[5], "listen", "MSGID is the event kind");
        assert_eq!(fields[6], "-", "no structured data");
        assert_eq!(json, reference, "MSG is the JSON event, intact");
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(d.stop().success());
}
