#!/bin/bash
# The kernel matrix: runs sockfilter's integration tests under Debian's own
# kernels, each booted in QEMU, and prints kernel x test binary -> passed /
# failed / not supported (and why). docs/kernels.md has the last table.
#
# usage: sudo scripts/kernel-matrix.sh [--kernel K]... [--test NAME]...
#                                      [--lsm LIST] [--timeout SECONDS]
#   --kernel K   6.1      Debian 12's kernel (linux-image-amd64)
#                6.12     Debian 12's 6.12 (linux-image-6.12-amd64, bookworm-security)
#                host     this machine's kernel, booted in QEMU if /boot has it
#                running  no guest: the binaries run right here, on the running kernel
#                linux-image-...  any Debian kernel package by name
#                (default: 6.1 6.12 host)
#   --test NAME  an integration test target (e.g. watch, sockfilter-cli/enforce);
#                default: all of the workspace's
#   --lsm LIST   boot the guests with lsm=LIST (e.g. without bpf, to see the fallbacks)
#   --timeout S  bound for one guest, boot to power-off (default 3600)
#   --exec FILE  also run FILE (any executable, e.g. a shell script) in each
#                guest, like a test binary: for looking around in a kernel
#
# How: `cargo test --no-run` builds the test binaries on the host; each
# kernel package is fetched with `apt-get download` and unpacked with
# `dpkg -x` (cached in target/kernel-matrix/); a small initramfs (static
# busybox, the package's virtio, 9p, overlay, sock_diag and veth modules)
# mounts the host's / read-only over 9p with a tmpfs overlay on top and the
# cargo target directory writable at its own path, then runs
# scripts/kernel-matrix/guest-run.sh, which runs each binary directly as
# root. QEMU uses TCG (this host's /dev/kvm cannot run stock kernels), so
# guest CPU work is ~6x slower than here.
#
# Exit status: 0 when no test failed (passed or not supported), 1 otherwise.
# Needs: qemu-system-x86, busybox-static, python3, apt (Debian's sources).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
here=$repo/scripts/kernel-matrix

kernels=() tests=() execs=() lsm="" guest_timeout=3600
while [ $# -gt 0 ]; do
	case "$1" in
	--kernel) kernels+=("$2"); shift 2 ;;
	--test) tests+=("$2"); shift 2 ;;
	--lsm) lsm=$2; shift 2 ;;
	--timeout) guest_timeout=$2; shift 2 ;;
	--exec) execs+=("$(realpath "$2")"); shift 2 ;;
	-h | --help) sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//; /^set -e/d'; exit 0 ;;
	*) echo "kernel-matrix: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done
[ ${#kernels[@]} -gt 0 ] || kernels=(6.1 6.12 host)
[ "$(id -u)" = 0 ] || { echo "kernel-matrix: run as root (the tests load BPF programs)" >&2; exit 2; }
for tool in qemu-system-x86_64 busybox python3 apt-get dpkg; do
	command -v "$tool" >/dev/null || {
		echo "kernel-matrix: $tool is missing (apt-get install qemu-system-x86 busybox-static python3)" >&2
		exit 2
	}
done

cd "$repo"
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
cache=$target/kernel-matrix
mkdir -p "$cache"

echo "== building the test binaries (cargo test --no-run)"
cargo test --workspace --locked --no-run --message-format=json-render-diagnostics |
	python3 "$here/test-binaries.py" ${tests[@]+"${tests[@]}"} >"$cache/binaries"
for f in ${execs[@]+"${execs[@]}"}; do echo "exec/$(basename "$f") $f" >>"$cache/binaries"; done
[ -s "$cache/binaries" ] || { echo "kernel-matrix: no test binary matches ${tests[*]}" >&2; exit 2; }
echo "   $(wc -l <"$cache/binaries") binaries: $(cut -d' ' -f1 "$cache/binaries" | tr '\n' ' ')"

# Which package a kernel name means (Debian's metapackages name the newest).
package_of() {
	case "$1" in
	6.1) apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}' ;;
	6.12) apt-cache depends linux-image-6.12-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}' ;;
	linux-image-*) echo "$1" ;;
	esac
}

# Unpacks a kernel package; prints the directory (with boot/ and lib/modules/).
unpack() {
	local pkg=$1 dir=$cache/$1
	if [ ! -d "$dir/boot" ]; then
		mkdir -p "$cache/debs"
		# As root into a root-owned directory: no sandbox user (_apt) needed.
		(cd "$cache/debs" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2) ||
			{ echo "kernel-matrix: apt-get download $pkg failed (is apt-get update done?)" >&2; return 1; }
		rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
		dpkg -x "$cache/debs/${pkg}"_*.deb "$dir.tmp" && mv "$dir.tmp" "$dir"
	fi
	echo "$dir"
}

# Builds the initramfs for the modules of one kernel; prints its path.
initramfs() {
	local moddir=$1 out=$2 root
	root=$(mktemp -d)
	mkdir -p "$root/bin" "$root/modules"
	cp "$(command -v busybox)" "$root/bin/busybox"
	# A dynamic busybox has an ELF interpreter (PT_INTERP); the initramfs has no libc.
	python3 -c 'import struct,sys; d=open(sys.argv[1],"rb").read()
off,=struct.unpack_from("<Q",d,0x20); size,n=struct.unpack_from("<HH",d,0x36)
sys.exit(any(struct.unpack_from("<I",d,off+i*size)[0]==3 for i in range(n)))' "$root/bin/busybox" ||
		{ echo "kernel-matrix: busybox is not static (install busybox-static)" >&2; return 1; }
	cp "$here/init" "$root/init"
	chmod 755 "$root/init"
	: >"$root/modules.list"
	python3 "$here/modules.py" "$moddir" virtio_pci 9pnet_virtio 9p overlay \
		inet_diag tcp_diag udp_diag veth | while read -r m; do
		local name
		name=$(basename "$m")
		case "$name" in
		*.xz) busybox xz -dc "$m" >"$root/modules/${name%.xz}"; name=${name%.xz} ;;
		*) cp "$m" "$root/modules/$name" ;;
		esac
		echo "$name" >>"$root/modules.list"
	done
	(cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null) >"$out"
	rm -rf "$root"
	echo "$out"
}

# Boots one kernel and runs the plan in it. $1 label, $2 vmlinuz, $3 modules dir.
boot() {
	local label=$1 kernel=$2 moddir=$3 run=$cache/run-$1 initrd
	rm -rf "$run" && mkdir -p "$run"
	cut -d' ' -f2 "$cache/binaries" >"$run/plan"
	initrd=$(initramfs "$moddir" "$cache/$label.initramfs")
	local append="console=ttyS0 panic=-1 mitigations=off quiet"
	append+=" sf.target=$target sf.run=$here/guest-run.sh sf.args=$run"
	[ -z "$lsm" ] || append+=" lsm=$lsm"
	echo "== $label: booting $(basename "$kernel") (console: $run/console.log)"
	local start=$SECONDS attempt
	# A guest that never reached its run script (no $run/kernel) crashed
	# while booting: TCG has been seen to panic a stock kernel in early boot
	# now and then (kmalloc in start_kernel: twice in about ten boots here).
	# That is the emulator, not the tests: boot again, at most 3 times.
	for attempt in 1 2 3; do
		timeout --kill-after=10 "$guest_timeout" nice -n 10 qemu-system-x86_64 \
			-accel tcg,thread=multi -cpu max -smp 2 -m 3072 \
			-nographic -no-reboot -monitor none -serial "file:$run/console.log" \
			-kernel "$kernel" -initrd "$initrd" -append "$append" \
			-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
			-virtfs "local,path=$target,mount_tag=target,security_model=none,multidevs=remap" \
			</dev/null >"$run/qemu.log" 2>&1 || echo "   QEMU exited with $? (see $run/qemu.log)"
		[ -e "$run/kernel" ] && break
		cp "$run/console.log" "$run/console.boot-$attempt.log"
		echo "   $label: the guest crashed before running anything (boot $attempt; $run/console.boot-$attempt.log)"
	done
	echo "   $label: $((SECONDS - start)) s"
}

# Runs the plan right here, on the running kernel.
run_here() {
	local run=$cache/run-running
	rm -rf "$run" && mkdir -p "$run"
	cut -d' ' -f2 "$cache/binaries" >"$run/plan"
	echo "== running: the binaries on this machine's kernel $(uname -r)"
	{ uname -r; cat /sys/kernel/security/lsm 2>/dev/null; echo; cat /proc/cmdline; } >"$run/kernel"
	while read -r bin; do
		local name start
		name=$(basename "$bin")
		start=$SECONDS
		timeout --kill-after=10 900 "$bin" --color never >"$run/$name.log" 2>&1 </dev/null && rc=0 || rc=$?
		echo "$rc $((SECONDS - start))" >"$run/$name.rc"
	done <"$run/plan"
}

columns=()
for k in "${kernels[@]}"; do
	case "$k" in
	running)
		run_here
		columns+=("running=$cache/run-running")
		;;
	host)
		release=$(uname -r)
		image=""
		for f in "/boot/vmlinuz-$release" "/boot/vmlinux-$release"; do
			[ -r "$f" ] && image=$f && break
		done
		if [ -z "$image" ] || [ ! -d "/lib/modules/$release" ]; then
			why="not bootable: no /boot/vmlinuz-$release or /lib/modules/$release on this machine"
			echo "== host ($release): $why"
			columns+=("host $release=!$why")
		else
			boot host "$image" "/lib/modules/$release"
			columns+=("host $release=$cache/run-host")
		fi
		;;
	*)
		pkg=$(package_of "$k")
		[ -n "$pkg" ] || { echo "kernel-matrix: unknown kernel $k (see --help)" >&2; exit 2; }
		dir=$(unpack "$pkg")
		boot "$k" "$(ls "$dir"/boot/vmlinuz-*)" "$(ls -d "$dir"/lib/modules/*)"
		columns+=("$k=$cache/run-$k")
		;;
	esac
done

echo
python3 "$here/report.py" "$cache/binaries" "${columns[@]}"
