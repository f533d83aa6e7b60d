//! `sockfilter check` on the fixture policies in `tests/policies/`: exit codes
//! and the exact `FILE:LINE:COLUMN: message` of each error. Needs no root.

use std::process::{Command, Output};

/// Runs `sockfilter check tests/policies/NAME` from the crate directory.
fn check(name: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sockfilter"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("check")
        .arg(format!("tests/policies/{name}"))
        .output()
        .expect("run sockfilter")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Asserts that checking `name` fails with exit code 1 and a single stderr line.
fn assert_error(name: &str, expected: &str) {
    let out = check(name);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{name}: stderr {}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "", "{name}");
    assert_eq!(stderr(&out), format!("{expected}\n"), "{name}");
}

#[test]
fn valid_policy() {
    let out = check("valid.toml");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "tests/policies/valid.toml: ok (4 rules, default allow)\n"
    );
    assert_eq!(stderr(&out), "");
}

#[test]
fn unknown_key() {
    assert_error(
        "unknown-key.toml",
        "tests/policies/unknown-key.toml:6:1: unknown key `local_prot` in rule \"ssh\"; a rule may have: \
         name, action, on, proto, family, local_ip, remote_ip, remote_host, local_port, remote_port, exe, comm, uid, cgroup, unit, container",
    );
}

#[test]
fn bad_cidr() {
    assert_error(
        "bad-cidr.toml",
        "tests/policies/bad-cidr.toml:4:28: `remote_ip`: \"172.16.0.0/33\" is not a valid CIDR: \
         prefix length /33 is longer than 32 bits, the most an IPv4 address has",
    );
}

#[test]
fn backwards_port_range() {
    assert_error(
        "backwards-range.toml",
        "tests/policies/backwards-range.toml:4:21: `local_port`: range \"90-80\" is backwards: \
         90 is greater than 80; write \"80-90\"",
    );
}

#[test]
fn port_range_past_65535() {
    assert_error(
        "range-too-high.toml",
        "tests/policies/range-too-high.toml:4:16: `remote_port`: range \"1-70000\": \
         70000 is not a port number; ports are 0-65535",
    );
}

#[test]
fn duplicate_rule_name() {
    assert_error(
        "duplicate-name.toml",
        "tests/policies/duplicate-name.toml:9:8: `name`: duplicate rule name \"ssh\"; \
         the rule on line 3 already uses it (rule names must be unique)",
    );
}

#[test]
fn unknown_action() {
    assert_error(
        "unknown-action.toml",
        "tests/policies/unknown-action.toml:3:10: `action`: unknown action \"permit\"; \
         expected one of \"allow\", \"deny\", \"audit\"",
    );
}

#[test]
fn empty_list() {
    assert_error(
        "empty-list.toml",
        "tests/policies/empty-list.toml:4:7: `uid` is an empty list, which matches nothing; \
         remove the field to match anything",
    );
}

#[test]
fn comm_longer_than_the_kernel_keeps() {
    assert_error(
        "long-comm.toml",
        "tests/policies/long-comm.toml:4:9: `comm`: \"systemd-resolved\" is 16 bytes long, but the \
         kernel truncates comm to 15 bytes, so it would never match; write \"systemd-resolve\"",
    );
}

#[test]
fn missing_file_names_the_path() {
    let out = check("does-not-exist.toml");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("tests/policies/does-not-exist.toml: cannot read policy file: "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
