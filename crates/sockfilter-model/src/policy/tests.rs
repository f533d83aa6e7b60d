use super::parser::line_col;
use super::*;
use crate::event::{Endpoint, EventKind, Verdict};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn parse(text: &str) -> Policy {
    Policy::parse(text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    Policy::parse(text, Path::new("t.toml"))
        .expect_err("policy should be invalid")
        .to_string()
}

fn rule(body: &str) -> Rule {
    parse(&format!(
        "[[rule]]\nname = \"r\"\naction = \"deny\"\n{body}\n"
    ))
    .rules
    .remove(0)
}

fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> Option<Endpoint> {
    Some(Endpoint::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port))
}

fn ep(ip: &str, port: u16) -> Option<Endpoint> {
    Some(Endpoint::new(ip.parse().unwrap(), port))
}

fn tcp4(op: Operation) -> Subject<'static> {
    Subject::new(op, Proto::Tcp, Family::Ipv4)
}

#[test]
fn empty_policy_allows() {
    let p = parse("");
    assert_eq!(p.default, Action::Allow);
    assert!(p.rules.is_empty());
    let d = p.decide(&tcp4(Operation::Connect));
    assert_eq!(
        d,
        Decision {
            action: Action::Allow,
            rule: None
        }
    );
}

#[test]
fn default_is_parsed() {
    for a in Action::ALL {
        assert_eq!(parse(&format!("default = \"{a}\"")).default, a);
    }
    assert_eq!(
        err("default = \"block\""),
        "t.toml:1:11: `default`: unknown action \"block\"; expected one of \"allow\", \"deny\", \"audit\""
    );
    assert!(err("default = 1").starts_with("t.toml:1:11: `default`: expected a string"));
}

#[test]
fn every_field_is_parsed() {
    let r = rule(
        r#"on = ["connect", "bind", "connect"]
proto = "udp"
family = "ipv6"
local_ip = ["10.0.0.0/8", "::1"]
remote_ip = ["192.168.1.7", "fe80::/10"]
local_port = [53, "1000-2000"]
remote_port = [0, 65535]
exe = ["/usr/bin/dig"]
comm = ["dig", "systemd-resolve"]
uid = [0, 4294967295]
cgroup = "/system.slice/x.service""#,
    );
    assert_eq!(r.name, "r");
    assert_eq!(r.action, Action::Deny);
    assert_eq!(r.line, 1);
    assert_eq!(r.on, vec![Operation::Bind, Operation::Connect]);
    assert_eq!(r.proto, Some(Proto::Udp));
    assert_eq!(r.family, Some(Family::Ipv6));
    let ips = |v: &Option<Vec<Cidr>>| {
        v.as_ref()
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ips(&r.local_ip), ["10.0.0.0/8", "::1/128"]);
    assert_eq!(ips(&r.remote_ip), ["192.168.1.7/32", "fe80::/10"]);
    assert_eq!(
        r.local_port,
        Some(vec![
            PortRange::single(53),
            PortRange { lo: 1000, hi: 2000 }
        ])
    );
    assert_eq!(
        r.remote_port,
        Some(vec![PortRange::single(0), PortRange::single(65535)])
    );
    assert_eq!(r.exe, Some(vec!["/usr/bin/dig".to_owned()]));
    assert_eq!(
        r.comm,
        Some(vec!["dig".to_owned(), "systemd-resolve".to_owned()])
    );
    assert_eq!(r.uid, Some(vec![0, u32::MAX]));
    assert_eq!(r.cgroup.as_deref(), Some("/system.slice/x.service"));
}

#[test]
fn absent_fields_match_anything() {
    let r = rule("");
    assert_eq!(r.on, Operation::ALL.to_vec());
    assert!(r.matches(&tcp4(Operation::Accept)));
    assert!(r.matches(&Subject::new(Operation::Bind, Proto::Udp, Family::Ipv6)));
}

#[test]
fn inline_rule_tables_are_accepted() {
    let p = parse("rule = [{ name = \"a\", action = \"audit\" }]");
    assert_eq!(p.rules[0].action, Action::Audit);
}

#[test]
fn rule_lines_are_recorded() {
    let p = parse("default = \"deny\"\n\n[[rule]]\nname = \"a\"\naction = \"allow\"\n\n# c\n[[rule]]\nname = \"b\"\naction = \"allow\"\n");
    assert_eq!(p.rules.iter().map(|r| r.line).collect::<Vec<_>>(), [3, 8]);
}

#[test]
fn errors_point_at_the_offending_key_or_value() {
    let head = "[[rule]]\nname = \"r\"\naction = \"deny\"\n";
    let e = |body: &str| err(&format!("{head}{body}\n"));
    assert!(e("acton = \"deny\"").starts_with("t.toml:4:1: unknown key `acton` in rule \"r\""));
    assert!(err("defualt = \"deny\"").starts_with("t.toml:1:1: unknown top-level key `defualt`"));
    assert!(err("[[rules]]\nname = \"a\"").contains("did you mean [[rule]]?"));
    assert!(err("[rule]\nname = \"a\"").contains("must be written [[rule]]"));
    assert_eq!(
        e("local_ip = [\"10.0.0.0/8\", \"10.0.0.0/33\"]"),
        "t.toml:4:27: `local_ip`: \"10.0.0.0/33\" is not a valid CIDR: prefix length /33 is longer than 32 bits, the most an IPv4 address has"
    );
    assert!(e("remote_ip = [\"10.0.0.1/8\"]").contains("did you mean \"10.0.0.0/8\"?"));
    assert!(e("remote_ip = [\"nope\"]").contains("\"nope\" is not an IPv4 or IPv6 address"));
    assert!(e("local_port = [\"90-80\"]").starts_with(
        "t.toml:4:15: `local_port`: range \"90-80\" is backwards: 90 is greater than 80; write \"80-90\""
    ));
    assert!(e("local_port = [\"1-70000\"]")
        .starts_with("t.toml:4:15: `local_port`: range \"1-70000\": 70000 is not a port number"));
    assert!(e("remote_port = [70000]").contains("70000 is not a port number; ports are 0-65535"));
    assert!(e("remote_port = [-1]").contains("-1 is not a port number"));
    assert!(e("remote_port = [\"80\"]").contains("without quotes (80)"));
    assert!(e("remote_port = [\"x-y\"]").contains("is not a port range"));
    assert!(e("remote_port = 80").contains("must be a list of ports; write remote_port = [80]"));
    assert_eq!(
        e("exe = []"),
        "t.toml:4:7: `exe` is an empty list, which matches nothing; remove the field to match anything"
    );
    assert!(e("exe = [\"nginx\"]").contains("not an absolute path"));
    assert!(e("comm = [\"systemd-resolved\"]").contains(
        "is 16 bytes long, but the kernel truncates comm to 15 bytes, so it would never match; write \"systemd-resolve\""
    ));
    assert!(e("uid = [-3]").contains("`uid`: -3 is not a user id"));
    assert!(e("uid = [\"root\"]").contains("expected an integer user id, not a string"));
    assert!(e("cgroup = \"system.slice\"").contains("must start with \"/\""));
    assert!(e("cgroup = \"/a/\"").contains("must not end with \"/\""));
    assert!(e("cgroup = [\"/a\"]").contains("`cgroup`: expected a string"));
    assert!(e("[rule.proto]\nx = 1").contains("not a table ([rule.proto]...)"));
    assert!(e("on = [\"send\"]").contains("unknown operation \"send\""));
    assert!(e("proto = \"sctp\"").contains("unknown protocol \"sctp\""));
    assert!(e("family = \"inet\"").contains("unknown address family \"inet\""));
    assert!(e("when = 1999-01-01").starts_with("t.toml:4:1: unknown key `when`"));
    assert!(e("proto = 1999-01-01").contains("not a date/time (1999-01-01)"));
    assert!(e("local.ip = 1").starts_with("t.toml:4:1: unknown key `local`"));
    assert!(e("name.x = 1").starts_with("t.toml:4:1: invalid TOML"));
    assert_eq!(
        err("[[rule]]\naction = \"deny\"\n"),
        "t.toml:1:1: rule #1 has no `name`; every rule needs a unique name, e.g. name = \"allow-ssh\""
    );
    assert!(err("[[rule]]\nname = \"x\"\n").starts_with("t.toml:1:1: rule \"x\" has no `action`"));
    assert!(err("x = ").starts_with("t.toml:1:5: invalid TOML"));
}

#[test]
fn duplicate_names_point_at_the_second() {
    let text =
        "[[rule]]\nname = \"a\"\naction = \"deny\"\n\n[[rule]]\nname = \"a\"\naction = \"allow\"\n";
    assert_eq!(
        err(text),
        "t.toml:6:8: `name`: duplicate rule name \"a\"; the rule on line 1 already uses it (rule names must be unique)"
    );
}

#[test]
fn first_match_wins_and_default_decides_the_rest() {
    let p = parse(
        r#"default = "audit"
[[rule]]
name = "ssh"
action = "allow"
local_port = [22]
[[rule]]
name = "no-listen"
action = "deny"
on = ["listen"]
"#,
    );
    let mut s = tcp4(Operation::Listen);
    s.local = v4(0, 0, 0, 0, 22);
    assert_eq!(
        p.decide(&s),
        Decision {
            action: Action::Allow,
            rule: Some("ssh")
        }
    );
    s.local = v4(0, 0, 0, 0, 23);
    assert_eq!(
        p.decide(&s),
        Decision {
            action: Action::Deny,
            rule: Some("no-listen")
        }
    );
    s.op = Operation::Connect;
    assert_eq!(
        p.decide(&s),
        Decision {
            action: Action::Audit,
            rule: None
        }
    );
    assert_eq!(p.first_match(&s), None);
    assert_eq!(p.rule("ssh").unwrap().line, 2);
}

#[test]
fn unknown_subject_fields_do_not_match_constraints() {
    let s = tcp4(Operation::Connect);
    for body in [
        "remote_ip = [\"0.0.0.0/0\"]",
        "local_ip = [\"0.0.0.0/0\"]",
        "remote_port = [\"0-65535\"]",
        "local_port = [\"0-65535\"]",
        "exe = [\"/bin/x\"]",
        "comm = [\"x\"]",
        "uid = [0]",
        "cgroup = \"/\"",
    ] {
        assert!(
            !rule(body).matches(&s),
            "{body} matched an unknown subject field"
        );
    }
    let mut known = s;
    known.remote = v4(1, 2, 3, 4, 5);
    known.local = v4(1, 2, 3, 4, 5);
    known.exe = Some("/bin/x");
    known.comm = Some("x");
    known.uid = Some(0);
    known.cgroup = Some("/user.slice");
    let p = parse(
        "[[rule]]\nname = \"all\"\naction = \"deny\"\nremote_ip = [\"0.0.0.0/0\"]\nlocal_ip = [\"0.0.0.0/0\"]\n\
         remote_port = [\"0-65535\"]\nlocal_port = [\"0-65535\"]\nexe = [\"/bin/x\"]\ncomm = [\"x\"]\nuid = [0]\ncgroup = \"/\"\n",
    );
    assert_eq!(p.decide(&known).rule, Some("all"));
    assert_eq!(p.decide(&s).rule, None);
}

#[test]
fn list_fields_match_any_item() {
    let r = rule("exe = [\"/a\", \"/b\"]\nuid = [1, 2]\ncomm = [\"x\", \"y\"]");
    let mut s = tcp4(Operation::Bind);
    s.exe = Some("/b");
    s.uid = Some(2);
    s.comm = Some("x");
    assert!(r.matches(&s));
    s.exe = Some("/b/c");
    assert!(!r.matches(&s));
    s.exe = Some("/a");
    s.uid = Some(3);
    assert!(!r.matches(&s));
}

#[test]
fn proto_and_family_must_match() {
    let r = rule("proto = \"udp\"\nfamily = \"ipv6\"");
    assert!(r.matches(&Subject::new(Operation::Bind, Proto::Udp, Family::Ipv6)));
    assert!(!r.matches(&Subject::new(Operation::Bind, Proto::Tcp, Family::Ipv6)));
    assert!(!r.matches(&Subject::new(Operation::Bind, Proto::Udp, Family::Ipv4)));
}

#[test]
fn cgroup_matches_its_subtree_by_component() {
    assert!(cgroup_contains("/a", "/a"));
    assert!(cgroup_contains("/a", "/a/b"));
    assert!(cgroup_contains("/a", "/a/b/c"));
    assert!(!cgroup_contains("/a", "/ab"));
    assert!(!cgroup_contains("/a/b", "/a"));
    assert!(cgroup_contains("/", "/anything/at/all"));
    assert!(cgroup_contains("/", "/"));
    let r = rule("cgroup = \"/system.slice/nginx.service\"");
    let mut s = tcp4(Operation::Listen);
    s.cgroup = Some("/system.slice/nginx.service");
    assert!(r.matches(&s));
    s.cgroup = Some("/system.slice/nginx.service/worker");
    assert!(r.matches(&s));
    s.cgroup = Some("/system.slice/nginx.service2");
    assert!(!r.matches(&s));
}

#[test]
fn unit_rules_match_the_unit_the_cgroup_names() {
    let r = rule("unit = [\"nginx.service\", \"session-2.scope\"]");
    let mut s = tcp4(Operation::Listen);
    for (cgroup, hit) in [
        ("/system.slice/nginx.service", true),
        ("/system.slice/nginx.service/worker", true),
        ("/user.slice/user-1000.slice/session-2.scope", true),
        ("/system.slice/nginx2.service", false),
        // A user's own nginx.service is inside user@1000.service: not it.
        (
            "/user.slice/user-1000.slice/user@1000.service/app.slice/nginx.service",
            false,
        ),
    ] {
        s.cgroup = Some(cgroup);
        assert_eq!(r.matches(&s), hit, "{cgroup}");
    }
    s.cgroup = None;
    assert!(!r.matches(&s), "unknown cgroup: no match");
}

#[test]
fn container_rules_match_an_id_or_a_prefix() {
    let id = "3f2a4c9d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f";
    let mut s = tcp4(Operation::Connect);
    let docker = format!("/system.slice/docker-{id}.scope");
    let crio = format!("/kubepods/pod9c1e6f3a-2b4d-4e8f-a1b2-c3d4e5f60718/crio-{id}");
    for value in [id, &id[..12]] {
        let r = rule(&format!("container = [\"{value}\"]"));
        for path in [&docker, &crio] {
            s.cgroup = Some(path);
            assert!(r.matches(&s), "{value} {path}");
        }
        s.cgroup = Some("/system.slice/docker-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.scope");
        assert!(!r.matches(&s));
        s.cgroup = Some("/system.slice/nginx.service");
        assert!(!r.matches(&s));
    }
    // Both constraints: the unit and the container must match.
    let both = rule(&format!(
        "unit = [\"docker-{id}.scope\"]\ncontainer = [\"{}\"]",
        &id[..12]
    ));
    s.cgroup = Some(&docker);
    assert!(both.matches(&s));
    s.cgroup = Some(&crio);
    assert!(!both.matches(&s), "no unit in the cgroupfs layout");
}

#[test]
fn bad_units_and_containers_are_clear_errors() {
    let e = err("[[rule]]\nname = \"a\"\naction = \"deny\"\nunit = [\"nginx\"]\n");
    assert!(
        e.starts_with("t.toml:4:9: `unit`: \"nginx\" is not a systemd service or scope name"),
        "{e}"
    );
    let e = err("[[rule]]\nname = \"a\"\naction = \"deny\"\nunit = [\"system.slice\"]\n");
    assert!(e.contains("is a slice"), "{e}");
    let e = err("[[rule]]\nname = \"a\"\naction = \"deny\"\ncontainer = [\"3f2a4c9d\"]\n");
    assert!(
        e.starts_with("t.toml:4:14: `container`: \"3f2a4c9d\" has 8 hex digits; write at least 12"),
        "{e}"
    );
    let e = err("[[rule]]\nname = \"a\"\naction = \"deny\"\ncontainer = [\"web-frontend\"]\n");
    assert!(e.contains("is not hexadecimal"), "{e}");
    let e = err("[[rule]]\nname = \"a\"\naction = \"deny\"\ncontainer = [\"3F2A4C9D8E7B\"]\n");
    assert!(e.contains("upper-case"), "{e}");
    let e = err("[[rule]]\nname = \"a\"\naction = \"deny\"\ncontainer = []\n");
    assert!(e.contains("empty list"), "{e}");
    let e = err("[[rule]]\nname = \"a\"\naction = \"deny\"\npod = [\"x\"]\n");
    assert!(
        e.contains("unit, container"),
        "the key list names the new keys: {e}"
    );
}

#[test]
fn ipv4_cidrs_match_v4_mapped_addresses_only_through_the_embedded_address() {
    let r = rule("remote_ip = [\"10.0.0.0/8\"]");
    let mut s = Subject::new(Operation::Connect, Proto::Tcp, Family::Ipv6);
    s.remote = ep("::ffff:10.9.8.7", 443);
    assert!(r.matches(&s));
    s.remote = ep("::ffff:11.9.8.7", 443);
    assert!(!r.matches(&s));
    // Not v4-mapped: an IPv4 CIDR never matches a real IPv6 address.
    s.remote = ep("::a09:807", 443);
    assert!(!r.matches(&s));
    s.remote = ep("64:ff9b::a09:807", 443);
    assert!(!r.matches(&s));
    // An IPv6 CIDR never matches an IPv4 address.
    let r6 = rule("remote_ip = [\"::/0\"]");
    let mut s4 = tcp4(Operation::Connect);
    s4.remote = v4(10, 0, 0, 1, 1);
    assert!(!r6.matches(&s4));
    // ... but matches a v4-mapped address, which is an IPv6 address.
    assert!(r6.matches(&s));
    let zero: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(zero.contains(IpAddr::V4(Ipv4Addr::BROADCAST)));
    assert!(!zero.contains(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
}

#[test]
fn cidr_parsing() {
    let c: Cidr = "192.168.0.0/16".parse().unwrap();
    assert_eq!(
        (c.addr(), c.prefix_len(), c.is_ipv4()),
        ("192.168.0.0".parse().unwrap(), 16, true)
    );
    assert!(c.contains("192.168.255.255".parse().unwrap()));
    assert!(!c.contains("192.169.0.0".parse().unwrap()));
    let c: Cidr = "2001:db8::/32".parse().unwrap();
    assert!(c.contains("2001:db8:ffff::1".parse().unwrap()));
    assert!(!c.contains("2001:db9::".parse().unwrap()));
    assert_eq!("fe80::1".parse::<Cidr>().unwrap().prefix_len(), 128);
    assert!("::/129".parse::<Cidr>().is_err());
    assert!("1.2.3.4/".parse::<Cidr>().is_err());
    assert!("1.2.3.4/x".parse::<Cidr>().is_err());
    assert!("1.2.3.4/-1".parse::<Cidr>().is_err());
    assert!("1.2.3.4/300".parse::<Cidr>().is_err());
    assert!("2001:db8::1/32".parse::<Cidr>().is_err());
}

#[test]
fn port_ranges_are_inclusive() {
    let r = rule("local_port = [\"8000-8010\", 22]");
    let mut s = tcp4(Operation::Bind);
    for (port, hit) in [
        (7999, false),
        (8000, true),
        (8005, true),
        (8010, true),
        (8011, false),
        (22, true),
        (23, false),
    ] {
        s.local = v4(127, 0, 0, 1, port);
        assert_eq!(r.matches(&s), hit, "port {port}");
    }
    assert_eq!(PortRange { lo: 1, hi: 2 }.to_string(), "1-2");
    assert_eq!(PortRange::single(80).to_string(), "80");
    assert_eq!(
        rule("local_port = [\"5-5\"]").local_port,
        Some(vec![PortRange::single(5)])
    );
}

#[test]
fn loopback_example_from_the_docs() {
    let p = parse(
        r#"[[rule]]
name = "sshd-may-listen"
action = "allow"
on = ["listen"]
exe = ["/usr/sbin/sshd"]

[[rule]]
name = "loopback-listeners"
action = "allow"
on = ["listen"]
local_ip = ["127.0.0.0/8", "::1"]

[[rule]]
name = "no-public-listeners"
action = "deny"
on = ["listen"]
"#,
    );
    let listen = |family, ip: &str, exe| {
        let mut s = Subject::new(Operation::Listen, Proto::Tcp, family);
        s.local = ep(ip, 8080);
        s.exe = exe;
        p.decide(&s).rule.map(str::to_owned)
    };
    let six = Family::Ipv6;
    let four = Family::Ipv4;
    assert_eq!(
        listen(six, "::ffff:127.0.0.1", None).as_deref(),
        Some("loopback-listeners")
    );
    assert_eq!(
        listen(six, "::1", None).as_deref(),
        Some("loopback-listeners")
    );
    assert_eq!(
        listen(four, "127.0.0.53", None).as_deref(),
        Some("loopback-listeners")
    );
    assert_eq!(
        listen(six, "::", None).as_deref(),
        Some("no-public-listeners")
    );
    assert_eq!(
        listen(four, "0.0.0.0", None).as_deref(),
        Some("no-public-listeners")
    );
    assert_eq!(
        listen(six, "::", Some("/usr/sbin/sshd")).as_deref(),
        Some("sshd-may-listen")
    );
}

#[test]
fn columns_count_characters() {
    assert_eq!(line_col("ab\ncdé f", 9), (2, 6));
    assert_eq!(line_col("x", 0), (1, 1));
    assert_eq!(line_col("x", 99), (1, 2));
}

#[test]
fn actions_convert_to_verdicts() {
    assert_eq!(Verdict::from(Action::Audit), Verdict::Audit);
    assert_eq!(Operation::from_event_kind(EventKind::Close), None);
    assert_eq!(
        Operation::from_event_kind(EventKind::Accept),
        Some(Operation::Accept)
    );
}

#[test]
fn load_names_a_missing_file() {
    let e = Policy::load("/nonexistent/policy.toml").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/policy.toml: cannot read policy file: "),
        "{e}"
    );
}

#[test]
fn remote_host_rules_match_the_resolved_name() {
    let r = rule("on = [\"connect\"]\nremote_host = [\"api.example.com\", \"*.Example.org\"]");
    let mut s = tcp4(Operation::Connect);
    s.remote = v4(192, 0, 2, 7, 443);
    assert!(
        !r.matches(&s),
        "no name known: a hard-coded address does not match"
    );
    for (name, hit) in [
        ("api.example.com", true),
        ("a.b.example.org", true),
        ("example.org", false),
        ("x.api.example.com", false),
    ] {
        s.remote_host = Some(name);
        assert_eq!(r.matches(&s), hit, "{name}");
    }
}

#[test]
fn bad_remote_host_is_an_error_with_its_position() {
    let e = err("[[rule]]\nname = \"r\"\naction = \"allow\"\non = [\"connect\"]\nremote_host = [\"ok.test\", \"a..b\"]\n");
    assert!(e.starts_with("t.toml:5:27:"), "{e}");
    assert!(e.contains("empty label"), "{e}");
    let e = err("[[rule]]\nname = \"r\"\naction = \"allow\"\nremote_host = [\"a.test\"]\n");
    assert!(
        e.starts_with("t.toml:4:1:") && e.contains("connect only"),
        "{e}"
    );
}
