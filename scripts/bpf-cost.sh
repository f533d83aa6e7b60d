#!/bin/sh
# Per-program cost of sockfilter's BPF programs under one load (as root),
# from the kernel's own statistics (kernel.bpf_stats_enabled: run count and
# run time of every program), as docs/BENCHMARKS.md reports them.
#   scripts/bpf-cost.sh MODE SECONDS [POLICY]
# MODE is a sockfilter-loadgen mode (connect, listen); with POLICY the agent
# is `sockfilter enforce POLICY`, else `sockfilter watch`. Uses the release
# binaries in $CARGO_TARGET_DIR (default target/), built by scripts/bench.sh.
# The statistics add two clock reads to every program run (~60 ns here),
# which the figures include.
set -eu
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
	echo "scripts/bpf-cost.sh: run as root" >&2
	exit 1
fi
MODE=${1:?mode}
SECS=${2:?seconds}
POLICY=${3:-}
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release"
# the cgroup2 mount: the file system type follows the "-" field
ROOT=$(awk '{ for (i = 7; i < NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup2") { print $5; exit } break } }' /proc/self/mountinfo)
CG="$ROOT/sockfilter-bpf-cost-$$"
TMP=$(mktemp -d)
mkdir "$CG"
if [ -n "$POLICY" ]; then
	"$BIN/sockfilter" enforce "$POLICY" --json --cgroup "$CG" >/dev/null 2>"$TMP/agent.err" &
	READY=enforcing
else
	"$BIN/sockfilter" watch --json --cgroup "$CG" >/dev/null 2>"$TMP/agent.err" &
	READY=watching
fi
AGENT=$!
cleanup() {
	kill -TERM "$AGENT" 2>/dev/null || true
	wait "$AGENT" 2>/dev/null || true
	sysctl -q kernel.bpf_stats_enabled=0
	rmdir "$CG" 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT
until grep -q "$READY" "$TMP/agent.err" 2>/dev/null; do
	kill -0 "$AGENT" 2>/dev/null || { cat "$TMP/agent.err" >&2; exit 1; }
	sleep 0.1
done
# Only this agent's programs (other sockfilters may run on the host): the
# ids its program and link descriptors name.
cat /proc/"$AGENT"/fdinfo/* 2>/dev/null | awk '$1 == "prog_id:" { print $2 }' | sort -u >"$TMP/ids"
sysctl -q kernel.bpf_stats_enabled=1
bpftool prog show --json >"$TMP/before.json"
"$BIN/sockfilter-loadgen" --mode "$MODE" --seconds "$SECS" --cgroup "$CG" >"$TMP/load.json"
bpftool prog show --json >"$TMP/after.json"
sysctl -q kernel.bpf_stats_enabled=0
cat "$TMP/load.json"
python3 - "$TMP" <<'EOF'
import json, sys
d = sys.argv[1]
load = json.load(open(f"{d}/load.json"))
ops = load["ops"]
before = {p["id"]: p for p in json.load(open(f"{d}/before.json"))}
ours = {int(x) for x in open(f"{d}/ids").read().split()}
total = 0
print(f"{'program':18} {'calls/op':>8} {'ns/call':>8} {'ns/op':>7} {'insns':>6}")
for p in sorted(json.load(open(f"{d}/after.json")), key=lambda p: p.get("name", "")):
    if not p.get("name", "").startswith("sf_") or p["id"] not in ours:
        continue
    b = before.get(p["id"], {})
    calls = p.get("run_cnt", 0) - b.get("run_cnt", 0)
    ns = p.get("run_time_ns", 0) - b.get("run_time_ns", 0)
    if calls == 0:
        continue
    total += ns
    print(f"{p['name']:18} {calls / ops:8.2f} {ns / calls:8.0f} {ns / ops:7.0f} {p.get('bytes_xlated', 0) // 8:6d}")
print(f"total: {total / ops:.0f} ns of BPF per {load['unit'].split('/')[0][:-1]} ({ops} at {load['rate']:.0f}/s)")
EOF
