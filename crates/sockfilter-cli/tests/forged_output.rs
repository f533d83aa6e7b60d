//! Attack: an unprivileged process (uid 65534) names itself with a terminal
//! escape sequence and a newline (`prctl(PR_SET_NAME)`) and runs from a
//! path that contains both, hoping to clear the administrator's screen or
//! forge lines in `watch`, `listeners` and `flows`. The text output must
//! carry only escaped forms; `--json` must carry the exact strings.

mod common;

use common::*;
use serde_json::Value;
use sockfilter_model::text::escape;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the attacker names its process: clear screen, newline, a fake
/// line, a backslash (so that `\x1b` printed literally cannot pass for an escape).
const COMM: &str = "\x1b[2J\nforged\\";

/// A directory the test removes on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds the attacker's program at a path with an escape sequence and a
/// newline in it: it renames itself to argv[1], listens on 127.0.0.1 (port
/// chosen by the kernel), prints the port and waits for stdin to close.
fn attacker(tmp: &TempDir) -> PathBuf {
    let src = tmp.0.join("forge.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <unistd.h>\n#include <sys/prctl.h>\n\
         #include <sys/socket.h>\n#include <netinet/in.h>\n#include <arpa/inet.h>\n\
         int main(int argc,char**argv){if(argc<2||prctl(PR_SET_NAME,argv[1]))return 2;\
         int s=socket(AF_INET,SOCK_STREAM,0);struct sockaddr_in a={0};socklen_t l=sizeof a;\
         a.sin_family=AF_INET;a.sin_addr.s_addr=htonl(INADDR_LOOPBACK);\
         if(bind(s,(struct sockaddr*)&a,sizeof a)||listen(s,5)||getsockname(s,(struct sockaddr*)&a,&l))return 1;\
         printf(\"%d\\n\",ntohs(a.sin_port));fflush(stdout);char b;read(0,&b,1);return 0;}\n",
    )
    .unwrap();
    let dir = tmp.0.join("bin\n\x1b[31mFAKE\x1b[0m");
    std::fs::create_dir(&dir).unwrap();
    let bin = dir.join("listener");
    run(Command::new("cc").arg("-O2").arg("-o").arg(&bin).arg(&src));
    bin
}

fn temp_dir(tag: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("sf-forge-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    TempDir(std::fs::canonicalize(&dir).unwrap())
}

/// Starts the attacker as uid 65534 in `cg`; returns it with its port.
fn run_attacker(cg: &TestCgroup, bin: &Path) -> (Proc, u16) {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--",
    ])
    .arg(bin)
    .arg(COMM)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped());
    let (p, line, _out) = spawn_ready(cg, cmd);
    (p, line.parse().expect("the attacker's port"))
}

/// A `sockfilter` whose raw stdout bytes are collected as they arrive.
struct RawOutput {
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl RawOutput {
    fn collect(child: &mut std::process::Child) -> RawOutput {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let sink = bytes.clone();
        let mut stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        RawOutput { bytes }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }

    /// Waits (bounded) until some line satisfies `pred`.
    fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !self.text().lines().any(&pred) {
            assert!(
                Instant::now() < deadline,
                "no line {what} within {WAIT:?}:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The text is free of anything the attacker could use on a terminal, and
/// every line starts the way the command's own lines start.
fn assert_unforged(text: &str, line_start: impl Fn(&str) -> bool, exe: &Path) {
    assert!(
        !text.contains('\x1b'),
        "a raw ESC reached the output:\n{text:?}"
    );
    for l in text.lines() {
        assert!(line_start(l), "a forged line: {l:?} in\n{text:?}");
    }
    assert!(
        text.contains(&*escape(COMM)),
        "escaped comm missing:\n{text}"
    );
    let exe = exe.to_str().unwrap();
    assert!(text.contains(&*escape(exe)), "escaped exe missing:\n{text}");
}

fn starts_with_clock(l: &str) -> bool {
    l.as_bytes().get(2) == Some(&b':') && l.as_bytes()[0].is_ascii_digit()
}

#[test]
fn watch_text_output_escapes_what_a_process_controls() {
    let cg = TestCgroup::new("forge-watch");
    let tmp = temp_dir("watch");
    let bin = attacker(&tmp);

    let mut child = Command::new(sockfilter())
        .arg("watch")
        .arg("--no-existing")
        .arg("--cgroup")
        .arg(&cg.path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = RawOutput::collect(&mut child);
    let w = Watch::wrap(child, "watching");
    let (_p, port) = run_attacker(&cg, &bin);
    out.wait_line("listen", |l| {
        l.contains(" listen ") && l.contains(&format!("127.0.0.1:{port} "))
    });
    let (st, _) = w.stop(libc::SIGINT);
    assert!(st.success());
    assert_unforged(&out.text(), starts_with_clock, &bin);
}

#[test]
fn json_carries_the_exact_strings_and_listeners_and_flows_escape_them() {
    let cg = TestCgroup::new("forge-json");
    let tmp = temp_dir("json");
    let bin = attacker(&tmp);
    let exe = bin.to_str().unwrap();

    let mut w = Watch::start(&cg, &["--no-existing"]);
    let (p, port) = run_attacker(&cg, &bin);
    let listen = w.expect("listen", |v| is(v, "listen", p.pid()));
    assert_eq!(listen["comm"], COMM, "{listen}");
    assert_eq!(listen["exe"], exe, "{listen}");
    assert_eq!(listen["uid"], 65534, "{listen}");
    assert_eq!(port_of(&listen, "local"), u64::from(port));

    // listeners --json: exact.
    let out = Command::new(sockfilter())
        .args(["listeners", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = all
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["pid"] == p.pid())
        .unwrap_or_else(|| panic!("no listener of pid {}", p.pid()));
    assert_eq!(
        (row["comm"].as_str(), row["exe"].as_str()),
        (Some(COMM), Some(exe))
    );

    // listeners and flows as text: escaped.
    let is_row = |l: &str| {
        ["PROTO", "ID", "tcp", "udp", "sk:"]
            .iter()
            .any(|s| l.starts_with(s))
    };
    let text = |args: &[&str]| {
        let out = Command::new(sockfilter()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_unforged(&text(&["listeners"]), is_row, &bin);
    let cgroup = cg.path.to_str().unwrap();
    assert_unforged(&text(&["flows", "--cgroup", cgroup]), is_row, &bin);
}
