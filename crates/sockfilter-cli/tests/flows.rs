//! `sockfilter flows` against real sockets of every kind, in the test's own
//! cgroup: a listener, both ends of a TCP connection, a bound UDP socket and
//! a connected one.

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;

fn flows(args: &[&str]) -> String {
    let out = Command::new(sockfilter())
        .arg("flows")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "flows failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn flows_of_every_kind_with_owner_and_direction() {
    let cg = TestCgroup::new("flows");
    let (p, ready, _out) = python(
        &cg,
        r#"
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
c = socket.create_connection(s.getsockname()); a, _ = s.accept()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
v = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); v.connect(("::1", 5353))
print(s.getsockname()[1], c.getsockname()[1], u.getsockname()[1], v.getsockname()[1])
sys.stdin.readline()
"#,
    );
    let ports: Vec<u64> = ready
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let (lport, cport, uport, vport) = (ports[0], ports[1], ports[2], ports[3]);
    let cgroup = cg.path.to_str().unwrap();
    let all: Value = serde_json::from_str(&flows(&["--json", "--cgroup", cgroup])).unwrap();
    let all = all.as_array().unwrap();
    assert_eq!(
        all.len(),
        5,
        "exactly the five sockets of the cgroup: {all:#?}"
    );
    let exe = python_exe();
    for f in all {
        assert_eq!(f["pid"], p.pid(), "{f}");
        assert_eq!(f["exe"], exe.as_str(), "{f}");
        assert_eq!(f["comm"], "python3", "{f}");
        assert_eq!(f["cgroup"], cg.name(), "{f}");
        assert_eq!(f["uid"], 0, "{f}");
        assert!(f["id"].as_u64().unwrap() > 0);
        assert!(f["started"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            f["bytes_sent"],
            Value::Null,
            "live flows: bytes known at close"
        );
        // The rule: remote is null exactly for listeners and unconnected UDP.
        assert_eq!(f["remote"].is_null(), f["state"] == "listening", "{f}");
    }
    let find = |pred: &dyn Fn(&Value) -> bool| -> &Value {
        all.iter()
            .find(|f| pred(f))
            .unwrap_or_else(|| panic!("no such flow in {all:#?}"))
    };
    let listener = find(&|f| f["proto"] == "tcp" && f["state"] == "listening");
    assert_eq!(
        (listener["direction"].as_str(), port_of(listener, "local")),
        (Some("inbound"), lport)
    );
    let client = find(&|f| f["proto"] == "tcp" && f["direction"] == "outbound");
    assert_eq!(client["state"], "established");
    assert_eq!(
        (port_of(client, "local"), port_of(client, "remote")),
        (cport, lport)
    );
    assert_eq!(client["listener"], Value::Null);
    let accepted = find(&|f| f["proto"] == "tcp" && f["listener"].is_u64());
    assert_eq!(
        (accepted["direction"].as_str(), accepted["state"].as_str()),
        (Some("inbound"), Some("established"))
    );
    assert_eq!(accepted["listener"], listener["id"]);
    assert_eq!(port_of(accepted, "remote"), cport);
    let bound = find(&|f| f["proto"] == "udp" && f["direction"] == "inbound");
    assert_eq!(
        (bound["state"].as_str(), port_of(bound, "local")),
        (Some("listening"), uport)
    );
    let connected = find(&|f| f["proto"] == "udp" && f["direction"] == "outbound");
    assert_eq!(
        (
            connected["state"].as_str(),
            connected["family"].as_str(),
            port_of(connected, "local"),
            port_of(connected, "remote")
        ),
        (Some("established"), Some("ipv6"), vport, 5353)
    );

    let table = flows(&["--cgroup", cgroup]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("ID"), "{header}");
    assert_eq!(lines.count(), 5, "{table}");
    assert!(table.contains(&format!("127.0.0.1:{cport}")), "{table}");
}

#[test]
fn flows_rejects_a_cgroup_that_is_not_a_directory() {
    let out = Command::new(sockfilter())
        .args(["flows", "--cgroup", "/nonexistent/cgroup"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
}
