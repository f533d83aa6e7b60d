#!/bin/sh
# Reproduces docs/BENCHMARKS.md: installs what the benchmark needs, builds
# the release binaries and runs every section in one run (as root).
#   scripts/bench.sh [sockfilter-bench options]   e.g. --sections throughput --pairs 7
# The report is printed and written to $CARGO_TARGET_DIR/bench-results.md.
set -eu
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
	echo "scripts/bench.sh: run as root (BPF, cgroups)" >&2
	exit 1
fi
if ! command -v bpftrace >/dev/null 2>&1; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bpftrace
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --locked -p sockfilter-cli -p sockfilter-bench
exec "$CARGO_TARGET_DIR/release/sockfilter-bench" --out "$CARGO_TARGET_DIR/bench-results.md" "$@"
