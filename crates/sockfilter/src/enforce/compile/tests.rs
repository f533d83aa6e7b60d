//! The compiler checked against `Policy::decide` through a software model
//! of the kernel's lookup.

use super::addresses::{mask, v6_bytes};
use super::*;
use sockfilter_model::event::{Endpoint, Family, Proto};
use sockfilter_model::policy::Subject;
use std::net::IpAddr;
use std::path::Path;

/// A software model of bpf/policy.h's `decide`, over the compiled maps.
fn kernel_decide(c: &Compiled, s: &Subject, cgroup_ids: &[(&str, u64)]) -> (u32, u32) {
    let v6 = s.family == Family::Ipv6;
    let tag = if v6 { 6 } else { 4 };
    let lpm = |table: &[(Prefix, u32)], ip: IpAddr, wild: u32| {
        let addr = v6_bytes(ip);
        table
            .iter()
            .filter(|(p, _)| p.tag == tag && mask(addr, p.bits) == p.addr)
            .max_by_key(|(p, _)| p.bits)
            .map_or(wild, |(_, id)| *id)
    };
    let mut ids = c.wild;
    ids[dim::KIND] =
        c.kind[op_code(s.op) * 4 + usize::from(s.proto == Proto::Udp) * 2 + usize::from(v6)];
    if let Some(l) = s.local {
        ids[dim::LOCAL_IP] = lpm(&c.local_ip, l.ip, c.wild[dim::LOCAL_IP]);
        ids[dim::LOCAL_PORT] = c.local_ports[l.port as usize];
    }
    if let Some(r) = s.remote {
        ids[dim::REMOTE_IP] = lpm(&c.remote_ip, r.ip, c.wild[dim::REMOTE_IP]);
        ids[dim::REMOTE_PORT] = c.remote_ports[r.port as usize];
    }
    if let (Some(h), Operation::Connect, Some(_)) = (s.remote_host, s.op, s.remote) {
        if let Some(id) = host_id(&c.hosts, h) {
            ids[dim::REMOTE_HOST] = id;
        }
    }
    if let Some(e) = s.exe {
        if let Some((_, id)) = c.exe.iter().find(|(p, _)| p == e) {
            ids[dim::EXE] = *id;
        }
    }
    if let Some(u) = s.uid {
        if let Some((_, id)) = c.uid.iter().find(|(k, _)| *k == u) {
            ids[dim::UID] = *id;
        }
    }
    if let Some(cg) = s.cgroup {
        // deepest ancestor first
        let mut path = cg.to_string();
        loop {
            if let Some((_, id)) = cgroup_ids.iter().find(|(p, _)| *p == path) {
                if let Some((_, b)) = c.cgroup.iter().find(|(k, _)| k == id) {
                    ids[dim::CGROUP] = *b;
                    break;
                }
            }
            if path == "/" {
                break;
            }
            path = match path.rfind('/') {
                Some(0) => "/".into(),
                Some(i) => path[..i].into(),
                None => break,
            };
        }
    }
    for w in 0..c.words {
        let y = ids
            .iter()
            .fold(u64::MAX, |acc, &id| acc & c.bitmaps[id as usize][w]);
        if y != 0 {
            let rule = w * 64 + y.trailing_zeros() as usize;
            return (c.verdicts[rule], rule as u32 + 1);
        }
    }
    (c.default_verdict, 0)
}

fn policy(text: &str) -> Policy {
    Policy::parse(text, Path::new("test.toml")).unwrap()
}

fn ep(s: &str) -> Endpoint {
    let a: std::net::SocketAddr = s.parse().unwrap();
    Endpoint::new(a.ip(), a.port())
}

#[test]
fn compiled_name_rules_equal_the_model() {
    let p = policy(
        r#"
default = "deny"
[[rule]]
name = "api"
action = "audit"
on = ["connect"]
remote_host = ["api.example.org"]
[[rule]]
name = "deny-ads"
action = "deny"
on = ["connect"]
remote_host = ["*.ads.example.org"]
[[rule]]
name = "org"
action = "allow"
on = ["connect"]
remote_host = ["*.example.org", "exact.test"]
remote_port = [443]
[[rule]]
name = "dns"
action = "allow"
remote_port = [53]
"#,
    );
    let c = compile(&p, |_| None, &[], "/").unwrap();
    assert_ne!(c.dims_used & (1 << dim::REMOTE_HOST), 0);
    let names = [
        None,
        Some("api.example.org"),
        Some("x.api.example.org"),
        Some("a.ads.example.org"),
        Some("ads.example.org"),
        Some("example.org"),
        Some("exact.test"),
        Some("a.exact.test"),
        Some("other.test"),
    ];
    for name in names {
        for port in [53, 443, 80] {
            let mut s = Subject::new(Operation::Connect, Proto::Tcp, Family::Ipv4);
            s.remote = Some(ep(&format!("192.0.2.1:{port}")));
            s.remote_host = name;
            let d = p.decide(&s);
            let want = (
                verdict_code(d.action),
                d.rule.map_or(0, |n| {
                    p.rules.iter().position(|r| r.name == n).unwrap() as u32 + 1
                }),
            );
            assert_eq!(kernel_decide(&c, &s, &[]), want, "{name:?}:{port}");
        }
    }
}

#[test]
fn compiled_decisions_equal_the_model_on_many_requests() {
    let p = policy(
        r#"
default = "audit"
[[rule]]
name = "nginx-web"
action = "allow"
on = ["listen"]
local_port = [80, 443]
exe = ["/usr/sbin/nginx"]
[[rule]]
name = "no-web"
action = "deny"
on = ["listen", "bind"]
local_port = ["80-443"]
[[rule]]
name = "lan-only"
action = "deny"
on = ["connect"]
uid = [1000]
remote_ip = ["0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/3", "::/0"]
[[rule]]
name = "inner-allowed"
action = "allow"
on = ["connect"]
remote_ip = ["10.0.0.0/8"]
[[rule]]
name = "refuse-inbound"
action = "deny"
on = ["accept"]
remote_ip = ["203.0.113.0/24", "2001:db8::/32"]
[[rule]]
name = "svc"
action = "audit"
cgroup = "/system.slice"
proto = "udp"
"#,
    );
    let cgroups = [("/system.slice", 7u64), ("/system.slice/a.service", 8)];
    let c = compile(
        &p,
        |path| cgroups.iter().find(|(p, _)| *p == path).map(|(_, id)| *id),
        &[],
        "/sys/fs/cgroup",
    )
    .unwrap();
    let mut checked = 0;
    for op in Operation::ALL {
        for proto in [Proto::Tcp, Proto::Udp] {
            for (family, ips) in [
                (
                    Family::Ipv4,
                    vec!["10.1.2.3", "203.0.113.9", "8.8.8.8", "127.0.0.1"],
                ),
                (
                    Family::Ipv6,
                    vec![
                        "::ffff:10.1.2.3",
                        "2001:db8::1",
                        "::1",
                        "::ffff:203.0.113.5",
                    ],
                ),
            ] {
                for ip in &ips {
                    for port in [22u16, 80, 100, 443, 444, 8080] {
                        for exe in [None, Some("/usr/sbin/nginx"), Some("/usr/bin/python3")] {
                            for uid in [None, Some(0), Some(1000)] {
                                for cg in [
                                    None,
                                    Some("/"),
                                    Some("/system.slice/a.service"),
                                    Some("/system.slicex"),
                                ] {
                                    let ip: IpAddr = ip.parse().unwrap();
                                    let mut s = Subject::new(op, proto, family);
                                    s.local = Some(Endpoint::new(ip, port));
                                    s.remote = (op != Operation::Listen && op != Operation::Bind)
                                        .then(|| Endpoint::new(ip, port));
                                    s.exe = exe;
                                    s.uid = uid;
                                    s.cgroup = cg;
                                    let want = p.decide(&s);
                                    let want_rule = want
                                        .rule
                                        .map(|n| {
                                            p.rules.iter().position(|r| r.name == n).unwrap() as u32
                                                + 1
                                        })
                                        .unwrap_or(0);
                                    let got = kernel_decide(&c, &s, &cgroups);
                                    assert_eq!(
                                        got,
                                        (verdict_code(want.action), want_rule),
                                        "{s:?}"
                                    );
                                    checked += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 10_000);
    let _ = ep("1.2.3.4:5");
}

#[test]
fn unit_and_container_rules_compile_into_the_cgroup_dimension() {
    let id = "3f2a4c9d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f";
    let other = "a".repeat(64);
    let p = policy(&format!(
        r#"
default = "allow"
[[rule]]
name = "web-only-listens"
action = "deny"
on = ["bind"]
unit = ["web.service"]
[[rule]]
name = "trusted-container"
action = "allow"
container = ["{}"]
[[rule]]
name = "other-containers"
action = "deny"
cgroup = "/system.slice"
"#,
        &id[..12]
    ));
    let tree: Vec<(String, u64)> = [
        "/",
        "/system.slice",
        "/system.slice/web.service",
        "/system.slice/web.service/worker",
        "/system.slice/db.service",
        &format!("/system.slice/docker-{id}.scope"),
        &format!("/system.slice/docker-{other}.scope"),
        "/kubepods",
        "/kubepods/pod9c1e6f3a-2b4d-4e8f-a1b2-c3d4e5f60718",
        &format!("/kubepods/pod9c1e6f3a-2b4d-4e8f-a1b2-c3d4e5f60718/{id}"),
        "/user.slice/user-1000.slice/user@1000.service/app.slice/web.service",
    ]
    .iter()
    .enumerate()
    .map(|(i, p)| (p.to_string(), 100 + i as u64))
    .collect();
    let id_of = |path: &str| tree.iter().find(|(p, _)| p == path).map(|(_, i)| *i);
    let c = compile(&p, id_of, &tree, "/sys/fs/cgroup").unwrap();
    let roots: Vec<&str> = c.workload_roots.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        roots,
        vec![
            format!("/kubepods/pod9c1e6f3a-2b4d-4e8f-a1b2-c3d4e5f60718/{id}").as_str(),
            format!("/system.slice/docker-{id}.scope").as_str(),
            "/system.slice/web.service",
        ],
        "where the named units and containers start, and only there"
    );
    let ids: Vec<(&str, u64)> = tree.iter().map(|(p, i)| (p.as_str(), *i)).collect();
    let mut checked = 0;
    for op in [Operation::Bind, Operation::Connect] {
        for (path, _) in &tree {
            for leaf in ["", "/container", "/x/y"] {
                let cg = format!("{path}{leaf}");
                let mut s = Subject::new(op, Proto::Tcp, Family::Ipv4);
                s.cgroup = Some(&cg);
                let want = p.decide(&s);
                let got = kernel_decide(&c, &s, &ids);
                let want_rule = want
                    .rule
                    .map_or(0, |n| p.rules.iter().position(|r| r.name == n).unwrap() + 1);
                assert_eq!(
                    got,
                    (verdict_code(want.action), want_rule as u32),
                    "{op} in {cg}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 66);
    // A prefix that names two running containers is refused.
    let twins: Vec<(String, u64)> = vec![
        (format!("/docker/{id}"), 1),
        (format!("/docker/{}{}", &id[..12], "0".repeat(52)), 2),
    ];
    let err = compile(&p, |_| Some(1), &twins, "/").err().unwrap();
    assert!(err.to_string().contains("prefix of several"), "{err}");
}

#[test]
fn ten_thousand_rules_compile_quickly_and_share_bitmaps() {
    let mut text = String::from("default = \"allow\"\n");
    for i in 0..10_000u32 {
        text.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\naction = \"deny\"\non = [\"connect\"]\nremote_ip = [\"10.{}.{}.0/24\"]\nremote_port = [{}]\n",
            i / 256,
            i % 256,
            1000 + i % 5000
        ));
    }
    let p = policy(&text);
    let t = std::time::Instant::now();
    let c = compile(&p, |_| None, &[], "/").unwrap();
    assert!(
        t.elapsed().as_secs_f64() < 5.0,
        "compile took {:?}",
        t.elapsed()
    );
    assert_eq!(c.words, 157);
    assert!(c.remote_ip.len() >= 20_000);
}

#[test]
fn rules_the_kernel_cannot_see_are_refused() {
    let p = policy(
        "[[rule]]\nname = \"a\"\naction = \"deny\"\non = [\"accept\"]\nexe = [\"/bin/x\"]\nuid = [0]\n\
         [[rule]]\nname = \"b\"\naction = \"deny\"\non = [\"listen\"]\nremote_port = [1]\n\
         [[rule]]\nname = \"c\"\naction = \"deny\"\non = [\"connect\"]\nlocal_port = [1]\n\
         [[rule]]\nname = \"ok\"\naction = \"deny\"\non = [\"connect\"]\nremote_port = [1]\nexe = [\"/bin/x\"]\n",
    );
    let bad = unenforceable(&p);
    let idx: Vec<usize> = bad.iter().map(|(i, _)| *i).collect();
    // Process fields on accept are the listener's owner's: enforceable.
    assert_eq!(idx, vec![1, 2], "{bad:?}");
    assert!(bad[0].1.contains("no remote endpoint"));
}
