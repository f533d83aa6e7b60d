//! `unit`, `container` and `pod_uid` from the cgroup path: processes placed
//! in cgroups named exactly as systemd, docker, podman, containerd, cri-o
//! and kubelet (both drivers) name them, below the test's own cgroup,
//! carry the right fields in `watch`, `listeners` and `flows`.

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::{Command, Stdio};

pub const ID: &str = "3f2a4c9d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f";
pub const UID: &str = "9c1e6f3a-2b4d-4e8f-a1b2-c3d4e5f60718";

/// One layout: (cgroup below the test's, unit, container runtime, pod UID).
type Layout = (
    String,
    Option<String>,
    Option<&'static str>,
    Option<&'static str>,
);

fn layouts() -> Vec<Layout> {
    let u = UID.replace('-', "_");
    vec![
        ("system.slice/nginx.service".into(), Some("nginx.service".into()), None, None),
        (
            format!("system.slice/docker-{ID}.scope"),
            Some(format!("docker-{ID}.scope")),
            Some("docker"),
            None,
        ),
        (format!("docker/{ID}"), None, Some("docker"), None),
        (
            format!("machine.slice/libpod-{ID}.scope/container"),
            Some(format!("libpod-{ID}.scope")),
            Some("podman"),
            None,
        ),
        (format!("libpod_parent/libpod-{ID}"), None, Some("podman"), None),
        (
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope"
            ),
            Some(format!("cri-containerd-{ID}.scope")),
            Some("containerd"),
            Some(UID),
        ),
        (
            format!("kubepods.slice/kubepods-pod{u}.slice/crio-{ID}.scope"),
            Some(format!("crio-{ID}.scope")),
            Some("cri-o"),
            Some(UID),
        ),
        (
            format!("kubepods/besteffort/pod{UID}/{ID}"),
            None,
            Some("containerd"),
            Some(UID),
        ),
        (format!("kubepods/pod{UID}/crio-{ID}"), None, Some("cri-o"), Some(UID)),
    ]
}

const SERVER: &str = r#"
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1])
sys.stdin.readline()
"#;

fn expected(unit: &Option<String>, runtime: Option<&str>, pod: Option<&str>) -> [Value; 3] {
    [
        json!(unit),
        runtime.map_or(Value::Null, |r| json!({"runtime": r, "id": ID})),
        json!(pod),
    ]
}

fn fields(v: &Value) -> [Value; 3] {
    [
        v["unit"].clone(),
        v["container"].clone(),
        v["pod_uid"].clone(),
    ]
}

fn json_of(args: &[&str]) -> Vec<Value> {
    let out = Command::new(sockfilter()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn processes_in_manager_named_cgroups_carry_unit_container_and_pod() {
    let cg = TestCgroup::new("workload");
    let mut w = Watch::start(&cg, &["--no-existing"]);
    let mut servers = Vec::new();
    for (rel, unit, runtime, pod) in layouts() {
        let name = cg.create_child(&rel);
        let mut cmd = Command::new("python3");
        cmd.args(["-u", "-c", SERVER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        cg.enter_child(&rel, &mut cmd);
        let mut child = cmd.spawn().unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let p = Proc(child);
        let port: u64 = read_line(&mut out).parse().unwrap();
        let listen = w.expect(&format!("listen in {rel}"), |v| is(v, "listen", p.pid()));
        assert_eq!(listen["cgroup"], name, "{listen}");
        assert_eq!(port_of(&listen, "local"), port);
        assert_eq!(
            fields(&listen),
            expected(&unit, runtime, pod),
            "{rel}: {listen}"
        );
        servers.push((p, out, rel, unit, runtime, pod));
    }

    // The same in listeners and flows, JSON and text.
    let listeners = json_of(&["listeners", "--json"]);
    let cgroup = cg.path.to_str().unwrap();
    let flows = json_of(&["flows", "--json", "--cgroup", cgroup]);
    let text = String::from_utf8(
        Command::new(sockfilter())
            .arg("listeners")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for (p, _, rel, unit, runtime, pod) in &servers {
        let want = expected(unit, *runtime, *pod);
        let l = listeners
            .iter()
            .find(|v| v["pid"] == p.pid())
            .unwrap_or_else(|| panic!("no listener of {rel}"));
        assert_eq!(fields(l), want, "listeners, {rel}: {l}");
        let f = flows
            .iter()
            .find(|v| v["pid"] == p.pid())
            .unwrap_or_else(|| panic!("no flow of {rel}"));
        assert_eq!(fields(f), want, "flows, {rel}: {f}");
        let row = text
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some(p.pid().to_string().as_str()))
            .unwrap_or_else(|| panic!("no row for {rel}:\n{text}"));
        if let Some(r) = runtime {
            assert!(row.contains(&format!("{r}:{}", &ID[..12])), "{row}");
        }
        if let Some(pod) = pod {
            assert!(row.contains(pod), "{row}");
        }
    }
}
