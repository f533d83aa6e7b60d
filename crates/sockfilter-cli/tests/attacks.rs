//! Attacks on `sockfilter enforce` by an unprivileged local user (uid 65534
//! through setpriv): each test does what such a user can do to get around a
//! policy and asserts that the policy still holds (docs/security.md).

mod common;

use common::attacker::Attacker;
use common::*;
use std::path::{Path, PathBuf};

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sf-attack-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_policy(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("policy.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Item 1 of the trust issue: a bind that the kernel fails after the policy
/// allowed it (EADDRINUSE) must leave no allow behind. The attacker binds
/// an allowed but busy address, then binds the same socket to a denied one
/// with a kernel-chosen port, which is decided only after the kernel picks
/// the port: it must be refused. TCP and UDP, IPv4 and IPv6.
#[test]
fn a_failed_allowed_bind_leaves_no_allow_for_the_next_bind() {
    let dir = tmpdir("stale-bind");
    let cg = TestCgroup::new("attack-stale-bind");
    let policy = write_policy(
        &dir,
        "default = \"deny\"\n\
         [[rule]]\nname = \"loopback-only\"\naction = \"allow\"\non = [\"bind\"]\n\
         local_ip = [\"127.0.0.0/8\", \"::1/128\"]\n",
    );
    let mut w = Watch::enforce(&cg, &policy);
    let mut a = Attacker::start(&cg);
    for (family, kind, busy_ip, any) in [
        ("AF_INET", "SOCK_STREAM", "127.0.0.1", "0.0.0.0"),
        ("AF_INET", "SOCK_DGRAM", "127.0.0.1", "0.0.0.0"),
        ("AF_INET6", "SOCK_STREAM", "::1", "::"),
        ("AF_INET6", "SOCK_DGRAM", "::1", "::"),
    ] {
        let case = format!("{family} {kind}");
        // The attacker's own socket holds the busy port (allowed: loopback).
        assert_eq!(
            a.run(&format!(
                "s['busy'] = socket.socket(socket.{family}, socket.{kind}); s['busy'].bind(('{busy_ip}', 0)); port = s['busy'].getsockname()[1]"
            )),
            "ok",
            "{case}: binding loopback is allowed"
        );
        assert_eq!(
            a.run(&format!(
                "s['x'] = socket.socket(socket.{family}, socket.{kind}); s['x'].bind(('{busy_ip}', port))"
            )),
            "err EADDRINUSE",
            "{case}: the allowed bind fails in the kernel"
        );
        assert_eq!(
            a.run(&format!("s['x'].bind(('{any}', 0))")),
            "err EPERM",
            "{case}: the next bind of the same socket is decided afresh"
        );
        w.expect(&format!("{case}: the denied bind is reported"), |v| {
            v["event"] == "bind" && v["verdict"] == "deny" && v["uid"] == 65534
        });
        a.run("s.pop('x').close(); s.pop('busy').close()");
    }
}
