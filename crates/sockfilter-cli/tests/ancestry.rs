//! Ancestry: a child that a python process forks and execs reports, on
//! every event, its parent's pid and executable (`ppid`, `parent_exe`),
//! and on its `listen` the arguments it was exec'd with (`cmdline`): exact
//! in JSON, escaped in text.

mod common;

use common::*;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::ChildStdout;

/// An argument with a terminal escape sequence, a newline and a backslash.
const NASTY: &str = "\x1b[2J\nforged\\";

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("sf-ancestry-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    TempDir(std::fs::canonicalize(&dir).unwrap())
}

/// The child's arguments: argv[0] as given, one with a space, the nasty one.
fn child_args(bin: &Path) -> Vec<String> {
    vec![
        bin.to_str().unwrap().to_string(),
        "two words".into(),
        NASTY.into(),
    ]
}

/// A python parent in `cg` that forks and execs `bin` with `args`.
/// Returns the parent, the child's pid and the child's port.
fn fork_exec(cg: &TestCgroup, args: &[String]) -> (Proc, u32, u16, BufReader<ChildStdout>) {
    let code = format!(
        "import os, sys\n\
         args = {args}\n\
         pid = os.fork()\n\
         if pid == 0:\n    os.execv(args[0], args)\n\
         print('child', pid, flush=True)\n\
         os.waitpid(pid, 0)\n",
        // A JSON array of strings is a python list literal.
        args = serde_json::to_string(args).unwrap()
    );
    let (parent, first, mut out) = python(cg, &code);
    let second = read_line(&mut out);
    let mut child = None;
    let mut port = None;
    for line in [first, second] {
        match line.split_once(' ') {
            Some(("child", p)) => child = p.parse().ok(),
            Some(("port", p)) => port = p.parse().ok(),
            _ => panic!("unexpected line {line:?}"),
        }
    }
    (
        parent,
        child.expect("the child's pid"),
        port.expect("the child's port"),
        out,
    )
}

fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_forked_and_execd_child_reports_its_parent_and_arguments() {
    let cg = TestCgroup::new("ancestry-json");
    let tmp = temp_dir("json");
    let bin = c_fixture(&tmp.0, "ancestry_child", &[]);
    let args = child_args(&bin);

    let mut w = Watch::start(&cg, &["--no-existing"]);
    let (parent, child, port, _out) = fork_exec(&cg, &args);
    let parent_exe = exe_of(parent.pid());
    assert_eq!(parent_exe, python_exe());

    for kind in ["listen", "connect", "accept"] {
        let v = w.expect(kind, |v| is(v, kind, child));
        assert_eq!(v["exe"], bin.to_str().unwrap(), "{v}");
        assert_eq!(v["ppid"], parent.pid(), "{kind}: {v}");
        assert_eq!(v["parent_exe"], parent_exe.as_str(), "{kind}: {v}");
        if kind == "listen" {
            assert_eq!(port_of(&v, "local"), u64::from(port));
        }
    }
    // The parent itself (python, exec'd by this test) names this test's
    // process as its parent.
    let (py, line, _o) = python(
        &cg,
        "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print('ok', flush=True); import sys; sys.stdin.read()",
    );
    assert_eq!(line, "ok");
    let v = w.expect("bind", |v| is(v, "bind", py.pid()));
    assert_eq!(v["ppid"], std::process::id(), "{v}");
    assert_eq!(v["parent_exe"], exe_of(std::process::id()).as_str(), "{v}");
}
