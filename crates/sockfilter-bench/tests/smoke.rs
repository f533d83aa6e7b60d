//! The load generator works: about one second per mode, each with a
//! positive rate and a completed count. Needs no root and no bpftrace.

use serde_json::Value;
use std::process::Command;

fn loadgen(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_sockfilter-loadgen"))
        .args(args)
        .output()
        .expect("running sockfilter-loadgen");
    assert!(
        out.status.success(),
        "sockfilter-loadgen {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let line = stdout.lines().last().expect("one JSON line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[test]
fn every_mode_completes_operations_at_a_positive_rate() {
    for mode in ["connect", "listen", "bulk"] {
        let r = loadgen(&["--mode", mode, "--seconds", "1", "--threads", "2"]);
        assert_eq!(r["mode"], mode);
        let ops = r["ops"].as_u64().unwrap();
        let rate = r["rate"].as_f64().unwrap();
        let seconds = r["seconds"].as_f64().unwrap();
        assert!(ops > 0 && rate > 0.0, "{mode}: {r}");
        assert!((0.5..10.0).contains(&seconds), "{mode}: {r}");
        // A connection that times out on a loaded machine is counted, not
        // fatal; most must complete.
        assert!(r["errors"].as_u64().unwrap() * 10 <= ops, "{mode}: {r}");
    }
}

#[test]
fn a_count_bound_ends_the_run_with_that_many_operations() {
    let r = loadgen(&["--mode", "connect", "--seconds", "30", "--max-ops", "500"]);
    assert_eq!(r["ops"], 500, "{r}");
}

#[test]
fn stamps_name_one_socket_per_operation() {
    let dir = std::env::temp_dir().join(format!("loadgen-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stamps = dir.join("stamps");
    let r = loadgen(&[
        "--mode",
        "listen",
        "--seconds",
        "1",
        "--rate",
        "1000",
        "--stamps",
        stamps.to_str().unwrap(),
    ]);
    let lines = std::fs::read_to_string(&stamps).unwrap();
    assert_eq!(lines.lines().count() as u64, r["ops"].as_u64().unwrap());
    let rate = r["rate"].as_f64().unwrap();
    assert!((500.0..1500.0).contains(&rate), "paced at 1000/s: {r}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hold_keeps_connections_open() {
    let r = loadgen(&["--mode", "hold", "--connections", "200", "--seconds", "0.2"]);
    assert_eq!(r["ops"], 200, "{r}");
}
