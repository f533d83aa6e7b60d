#!/bin/bash
# Runs inside a kernel-matrix guest as PID 1, as root, on the host's
# filesystem (see init): prepares what a booted Debian system would have mounted, then runs
# each test binary of the plan directly (not through cargo: every exec costs
# tens of milliseconds under TCG) and records its output and exit status.
#
# usage: guest-run.sh RUN_DIR
#   RUN_DIR/plan       one test binary (absolute path) per line
#   RUN_DIR/NAME.log   written: the binary's output
#   RUN_DIR/NAME.rc    written: "EXIT_STATUS SECONDS"
#   RUN_DIR/kernel     written: uname -r, the active LSMs and the cmdline
set -u
run_dir=$1
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 RUST_BACKTRACE=0
unset PYENV_VERSION CARGO_TARGET_DIR

# A fresh /run and /tmp: the host's (visible read-only through the overlay)
# hold its network namespaces and sockets.
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t cgroup2 none /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t securityfs securityfs /sys/kernel/security
ip link set lo up
hostname kernel-matrix

{
	uname -r
	cat /sys/kernel/security/lsm 2>/dev/null || echo "(no /sys/kernel/security/lsm)"
	echo
	cat /proc/cmdline
} >"$run_dir/kernel"
echo "kernel-matrix guest: $(uname -r), LSMs $(cat /sys/kernel/security/lsm 2>/dev/null)"

# The target directory is shared writable: what the tests build there
# (fixtures) lands on the host, as for a run on the host.
while read -r bin; do
	[ -n "$bin" ] || continue
	name=$(basename "$bin")
	echo "kernel-matrix guest: running $name"
	start=$(date +%s)
	# Per binary bound: a hung test is a failure, not a hung matrix.
	timeout --kill-after=10 "${SF_MATRIX_TEST_TIMEOUT:-900}" "$bin" --color never \
		>"$run_dir/$name.log" 2>&1 </dev/null
	rc=$?
	echo "$rc $(($(date +%s) - start))" >"$run_dir/$name.rc"
	echo "kernel-matrix guest: $name exited $rc after $(($(date +%s) - start)) s"
done <"$run_dir/plan"
sync
# PID 1 (see init): power off rather than exit, which would panic the guest.
[ $$ != 1 ] || echo o >/proc/sysrq-trigger
sleep 30
