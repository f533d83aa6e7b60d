//! Ancestry: a child that a python process forks and execs reports, on
//! every event, its parent's pid and executable (`ppid`, `parent_exe`),
//! and on its `listen` the arguments it was exec'd with (`cmdline`): exact
//! in JSON, escaped in text.

mod common;

use common::*;
use sockfilter_model::text::escape;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

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
         sys.stdout.write(f'child {{pid}}\\n')  # one write: the child prints too\n\
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
            // What it was exec'd with, read at exec: not what /proc now
            // shows (the child has overwritten argv[1]).
            assert_eq!(v["cmdline"], serde_json::json!(args), "{v}");
            let proc_now = std::fs::read(format!("/proc/{child}/cmdline")).unwrap();
            assert!(
                proc_now.windows(9).any(|w| w == b"XXXXXXXXX"),
                "the child did not rewrite its argv: {proc_now:?}"
            );
        } else {
            assert!(v.get("cmdline").is_none(), "{v}");
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

/// A re-parented process names its new parent: a python subreaper runs
/// `sh`, which starts the last process (python) in the background and
/// exits; the last one then binds. Its event names the subreaper and its
/// executable (what getppid() says then), not the exited `sh` that started
/// it and that the kernel's record named until this event.
#[test]
fn a_reparented_child_names_its_new_parent() {
    let cg = TestCgroup::new("ancestry-reparent");
    let mut w = Watch::start(&cg, &["--no-existing"]);
    let last_code = r#"import os, socket, time
deadline = time.monotonic() + 20
while os.getppid() != int(os.environ['REAPER']):
    if time.monotonic() > deadline:
        os._exit(3)
    time.sleep(0.001)
s = socket.socket()
s.bind(('127.0.0.1', 0))
s.close()
"#;
    let code = r#"import ctypes, os, subprocess, sys
ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
env = dict(os.environ, REAPER=str(os.getpid()), LAST=sys.argv[1])
sh = subprocess.Popen(['sh', '-c', 'python3 -c "$LAST" & echo $!'], stdout=subprocess.PIPE, env=env)
last = int(sh.stdout.readline())
sh.wait()
print('last', last, flush=True)
_, status = os.waitpid(last, 0)
print('done', status, flush=True)
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-u", "-c", code, last_code])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let (reaper, first, mut out) = spawn_ready(&cg, cmd);
    let (_, last) = first.split_once(' ').expect("last PID");
    let last: u32 = last.parse().unwrap();
    assert_eq!(read_line(&mut out), "done 0", "the last process failed");
    let v = w.expect("bind of the re-parented process", |v| is(v, "bind", last));
    assert_eq!(v["ppid"], reaper.pid(), "{v}");
    assert_eq!(v["parent_exe"], python_exe().as_str(), "{v}");
}

#[test]
fn an_existing_listener_carries_its_ancestry_and_arguments_from_proc() {
    let cg = TestCgroup::new("ancestry-existing");
    let code = "import socket, sys\n\
                s = socket.socket()\n\
                s.bind(('127.0.0.1', 0))\n\
                s.listen()\n\
                print(s.getsockname()[1], flush=True)\n\
                sys.stdin.read()\n";
    let (py, port, _out) = python(&cg, code);
    let mut w = Watch::start(&cg, &[]);
    let v = w.expect("existing listen", |v| {
        is(v, "listen", py.pid()) && v["existing"] == true
    });
    assert_eq!(port_of(&v, "local").to_string(), port);
    // argv[0] is "python3", or a full path where python3 is a wrapper
    // that execs the interpreter (pyenv).
    let args = v["cmdline"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert!(args[0].as_str().unwrap().ends_with("python3"), "{v}");
    assert_eq!(
        args[1..],
        serde_json::json!(["-u", "-c", code]).as_array().unwrap()[..],
        "{v}"
    );
    assert_eq!(v["ppid"], std::process::id(), "{v}");
    assert_eq!(v["parent_exe"], exe_of(std::process::id()).as_str(), "{v}");
}

#[test]
fn text_output_escapes_the_arguments() {
    let cg = TestCgroup::new("ancestry-text");
    let tmp = temp_dir("text");
    let bin = c_fixture(&tmp.0, "ancestry_child", &[]);
    let args = child_args(&bin);

    let mut child = Command::new(sockfilter())
        .args(["watch", "--no-existing", "--cgroup"])
        .arg(&cg.path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        // Raw bytes: a raw ESC or newline from the process must show.
        while r.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
            let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
            buf.clear();
        }
    });
    let w = Watch::wrap(child, "watching");
    let (parent, _child, port, _out) = fork_exec(&cg, &args);
    let deadline = Instant::now() + WAIT;
    let listen = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let l = lines
            .recv_timeout(left)
            .expect("no listen line within the bound");
        assert!(!l.contains('\x1b'), "a raw ESC reached the output: {l:?}");
        assert!(
            l.as_bytes().get(2) == Some(&b':'),
            "a line that is not an event (forged?): {l:?}"
        );
        if l.contains(" listen ") && l.contains(&format!("127.0.0.1:{port} ")) {
            break l;
        }
    };
    let expected = format!(
        "cmdline={} \"two words\" {}\n",
        escape(args[0].as_str()),
        escape(NASTY)
    );
    assert!(listen.ends_with(&expected), "{listen:?} !~ {expected:?}");
    assert!(
        listen.contains(&format!(
            "ppid={} parent={} ",
            parent.pid(),
            escape(&python_exe())
        )),
        "{listen:?}"
    );
    let (st, _) = w.stop(libc::SIGINT);
    assert!(st.success());

    // `listeners` reads /proc now: the rewritten argv[1], escaped, last.
    let out = Command::new(sockfilter())
        .arg("listeners")
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        !table.contains('\x1b'),
        "a raw ESC reached the output: {table:?}"
    );
    let row = table
        .lines()
        .find(|l| l.contains(&format!("127.0.0.1:{port} ")))
        .unwrap_or_else(|| panic!("no listener on {port}:\n{table}"));
    let expected = format!("{} XXXXXXXXX {}", escape(args[0].as_str()), escape(NASTY));
    assert!(row.ends_with(&expected), "{row:?} !~ {expected:?}");
}
