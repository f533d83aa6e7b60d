//! Attacks on `sockfilter enforce` with IP protocols the policy has no name
//! for: the policy knows only tcp and udp, and a socket of another protocol
//! must be decided as one of them (docs/policy.md), not let through. The
//! attacker is uid 65534 (setpriv), as in attacks.rs.

mod common;

use common::attacker::Attacker;
use common::*;
use std::path::PathBuf;

fn policy(tag: &str, text: &str) -> (PathBuf, PathBuf) {
    let d = std::env::temp_dir().join(format!("sf-attack-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join("policy.toml");
    std::fs::write(&p, text).unwrap();
    (d, p)
}

/// Whether BPF LSM works here, as enforce decides it (`doctor`, as in
/// enforce.rs: on this project's 6.18 VM `bpf` is listed but loading is
/// refused); enforce decides connect() there.
fn bpf_lsm_usable() -> bool {
    let out = std::process::Command::new(sockfilter())
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor --json");
    v["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == "bpf_lsm")
        .map(|f| f["available"] == true)
        .expect("a bpf_lsm row")
}

/// UDP-Lite (IPPROTO_UDPLITE, 136) is a datagram socket any user may open:
/// a udp rule must hold for it. With BPF LSM, sendto() and connect() to a
/// denied destination fail with EPERM and are reported as denied `connect`s
/// with proto "udp"; bind() to a denied port fails with EPERM; an allowed
/// send still arrives. Without BPF LSM no hook sees a UDP-Lite connect() (nor
/// the sends of a connected socket), so the socket itself is refused.
/// IPv4 and IPv6.
#[test]
fn udplite_is_decided_as_udp() {
    let (_dir, policy) = policy(
        "udplite",
        "default = \"allow\"\n\
         [[rule]]\nname = \"no-udp-9999\"\naction = \"deny\"\non = [\"connect\"]\n\
         proto = \"udp\"\nremote_port = [9999]\n\
         [[rule]]\nname = \"no-udp-bind-9998\"\naction = \"deny\"\non = [\"bind\"]\n\
         proto = \"udp\"\nlocal_port = [9998]\n",
    );
    let cg = TestCgroup::new("attack-udplite");
    let mut w = Watch::enforce(&cg, &policy);
    let mut a = Attacker::start(&cg);
    if !bpf_lsm_usable() {
        for family in ["AF_INET", "AF_INET6"] {
            assert_eq!(
                a.run(&format!(
                    "socket.socket(socket.{family}, socket.SOCK_DGRAM, 136)"
                )),
                "err EPERM",
                "{family}: without BPF LSM a UDP-Lite socket is refused"
            );
            assert_eq!(
                a.run(&format!(
                    "socket.socket(socket.{family}, socket.SOCK_DGRAM).close()"
                )),
                "ok",
                "{family}: plain UDP is not"
            );
        }
        return;
    }
    for (family, ip) in [("AF_INET", "127.0.0.1"), ("AF_INET6", "::1")] {
        let new = format!("socket.socket(socket.{family}, socket.SOCK_DGRAM, 136)");
        let denied = move |v: &serde_json::Value| {
            v["event"] == "connect"
                && v["verdict"] == "deny"
                && v["uid"] == 65534
                && v["remote"]["ip"] == ip
                && port_of(v, "remote") == 9999
        };
        assert_eq!(
            a.run(&format!(
                "s['send'] = {new}; s['send'].sendto(b'x', ('{ip}', 9999))"
            )),
            "err EPERM",
            "{family}: UDP-Lite sendto to a denied port"
        );
        let ev = w.expect(&format!("{family}: the denied UDP-Lite sendto"), denied);
        assert_eq!(
            ev["proto"], "udp",
            "{family}: reported under the policy's name"
        );
        assert_eq!(ev["rule"], "no-udp-9999");
        assert_eq!(
            a.run(&format!(
                "s['conn'] = {new}; s['conn'].connect(('{ip}', 9999))"
            )),
            "err EPERM",
            "{family}: UDP-Lite connect to a denied port"
        );
        let evs = w.expect_count(&format!("{family}: the denied UDP-Lite connect"), 2, denied);
        assert!(evs.iter().all(|v| v["proto"] == "udp"), "{evs:?}");
        assert_eq!(
            a.run(&format!(
                "s['bind'] = {new}; s['bind'].bind(('{ip}', 9998))"
            )),
            "err EPERM",
            "{family}: UDP-Lite bind to a denied port"
        );
        let ev = w.expect(&format!("{family}: the denied UDP-Lite bind"), |v| {
            v["event"] == "bind" && v["verdict"] == "deny" && port_of(v, "local") == 9998
        });
        assert_eq!(ev["proto"], "udp");
        assert_eq!(ev["uid"], 65534);
        // Allowed: a datagram to another port arrives.
        assert_eq!(
            a.run(&format!(
                "s['rx'] = {new}; s['rx'].bind(('{ip}', 0)); s['rx'].settimeout(5); \
                 s['send'].sendto(b'hello', ('{ip}', s['rx'].getsockname()[1])); \
                 r = s['rx'].recv(16).decode()"
            )),
            "hello",
            "{family}: an allowed UDP-Lite datagram is sent and received"
        );
        a.run("[x.close() for x in s.values()]; s.clear()");
    }
}
