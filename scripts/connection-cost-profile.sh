#!/bin/sh
# Where a connection's added cost goes, system-wide (as root): `perf record
# -a` during a connect storm without and then with `sockfilter watch --json
# > file`, samples divided by connections, by process and by kernel function
# group (docs/BENCHMARKS.md, "where a connection's cost goes"). Needs perf
# and python3; uses the release binaries in $CARGO_TARGET_DIR (default
# target/), built by scripts/bench.sh.
#   scripts/connection-cost-profile.sh [SECONDS]
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "$0: run as root" >&2; exit 1; }
SECS=${1:-5}
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release"
ROOT=$(awk '{ for (i = 7; i < NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup2") { print $5; exit } break } }' /proc/self/mountinfo)
CG="$ROOT/sockfilter-cost-profile-$$"
TMP=$(mktemp -d)
mkdir "$CG"
AGENT=
cleanup() {
	[ -n "$AGENT" ] && kill -INT "$AGENT" 2>/dev/null && wait "$AGENT" || true
	rmdir "$CG" 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT
storm() { # $1: label
	perf record -q -F 2000 -a -o "$TMP/$1.data" -- \
		"$BIN/sockfilter-loadgen" --mode connect --seconds "$SECS" --cgroup "$CG" >"$TMP/$1.json"
	perf report -i "$TMP/$1.data" --no-children --sort comm --stdio -F sample,comm 2>/dev/null >"$TMP/$1.comm"
	perf report -i "$TMP/$1.data" --no-children --sort symbol --stdio -F sample,sym 2>/dev/null >"$TMP/$1.sym"
}
storm without
"$BIN/sockfilter" watch --json --cgroup "$CG" >"$TMP/events" 2>"$TMP/agent.err" &
AGENT=$!
i=0
until grep -q "Ctrl-C" "$TMP/agent.err"; do
	i=$((i + 1)); [ $i -le 240 ] || { echo "$0: watch did not start" >&2; exit 1; }
	sleep 0.5
done
storm with
python3 - "$TMP" <<'PY'
import collections, json, re, sys
tmp = sys.argv[1]
US_PER_SAMPLE = 1e6 / 2000
groups = [
    ("idle", r"safe_halt|default_idle|cpuidle|do_idle|poll_idle"),
    ("BPF programs", r"^bpf_prog_"),
    ("socket-local storage", r"sk_storage|bpf_local_storage|selem"),
    ("ring buffer", r"ringbuf"),
    ("BPF maps", r"htab|lookup_nulls|array_map|pcpu"),
    ("slab, RCU, memcg", r"kmalloc|kfree|kmem_cache|slab|rcu|memcg|objcg|obj_cgroup"),
    ("BPF glue", r"bpf_trace|__bpf_prog_enter|__bpf_prog_exit|__bpf_trace|__cgroup_bpf|tcp_call_bpf|^bpf_|copy_from_kernel_nofault|migrate_"),
    ("scheduling, wake-ups", r"finish_task_switch|schedule|wake|enqueue|dequeue|update_curr|pick_next|irq_work|select_task|_raw_spin_unlock_irqrestore"),
    ("agent user space", r"::|json|memmove|malloc|cfree|_int_|tokio"),
]
def samples(path, pattern):
    out = collections.Counter()
    for line in open(path):
        m = re.match(pattern, line)
        if m:
            out[m.group(2).strip()] += int(m.group(1))
    return out
per = {}
for run in ("without", "with"):
    ops = json.load(open(f"{tmp}/{run}.json"))["ops"]
    comm = samples(f"{tmp}/{run}.comm", r"\s+(\d+)\s+(\S.*?)\s*$")
    sym = samples(f"{tmp}/{run}.sym", r"\s+(\d+)\s+\[.\]\s+(.*?)\s+-\s+-\s*$")
    g = collections.Counter()
    for name, n in sym.items():
        for label, rx in groups:
            if re.search(rx, name):
                g[label] += n
                break
        else:
            g["everything else (TCP/IP, system calls, ...)"] += n
    per[run] = (ops, comm, g)
    busy = sum(n for k, n in g.items() if k != "idle")
    print(f"{run} watch: {ops} connections, {busy * US_PER_SAMPLE / ops:.1f} µs of CPU per connection outside idle")
print("\nby process, µs per connection (without -> with):")
for name in sorted(set(per["without"][1]) | set(per["with"][1]), key=lambda k: -per["with"][1][k]):
    a = per["without"][1][name] * US_PER_SAMPLE / per["without"][0]
    b = per["with"][1][name] * US_PER_SAMPLE / per["with"][0]
    if max(a, b) >= 0.1:
        print(f"  {name:24} {a:7.2f} -> {b:7.2f}")
print("\nby kernel function group, µs per connection added:")
for label in [l for l, _ in groups] + ["everything else (TCP/IP, system calls, ...)"]:
    a = per["without"][2][label] * US_PER_SAMPLE / per["without"][0]
    b = per["with"][2][label] * US_PER_SAMPLE / per["with"][0]
    print(f"  {label:45} {b - a:+7.2f}")
PY
