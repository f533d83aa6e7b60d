#!/bin/sh
# Regenerates the BPF objects from their sources, for one target architecture:
#
#   bpf/build.sh [ARCH]      ARCH: x86_64 (default) or arm64 (also BPF_ARCH=...)
#
#   sockfilter.bpf.o  the watcher and enforcer (crates/sockfilter/src/loader.rs)
#   destroy.bpf.o     socket destroy by cookie (crates/sockfilter/src/destroy/)
#
# BPF bytecode is the same on every architecture, but an object is not: the
# programs read the registers a system call entered with (struct pt_regs),
# whose layout is the architecture's, selected by __TARGET_ARCH_*. So each
# architecture has its own objects:
#   x86_64 -> bpf/NAME.bpf.o        committed (`cargo build` needs only Rust);
#                                   CI rebuilds them and fails if they change
#   arm64  -> bpf/NAME.bpf.arm64.o  not committed: build them before
#                                   `cargo build` on arm64 (docs/kernels.md)
# The crate embeds the objects of the architecture it is compiled for.
# Reproducible: pinned clang-19, no absolute paths in the debug info, DWARF
# stripped; the build host's headers only supply fixed-size integer types.
set -eu
cd "$(dirname "$0")"
ARCH=${1:-${BPF_ARCH:-x86_64}}
case "$ARCH" in
x86_64 | amd64 | x86)
	TARGET_ARCH=x86
	SUFFIX=
	;;
arm64 | aarch64)
	TARGET_ARCH=arm64
	SUFFIX=.arm64
	;;
*)
	echo "bpf/build.sh: unknown architecture '$ARCH' (known: x86_64, arm64)" >&2
	exit 2
	;;
esac
CLANG=${CLANG:-clang-19}
STRIP=${STRIP:-llvm-strip-19}
# <linux/types.h> includes <asm/types.h> from the build host's multiarch
# directory (linux-libc-dev), whatever the target.
MULTIARCH=$(gcc -print-multiarch 2>/dev/null || dpkg-architecture -qDEB_HOST_MULTIARCH)
for obj in sockfilter destroy; do
	out="$obj.bpf$SUFFIX.o"
	"$CLANG" -target bpf -O2 -g -Wall -Werror \
		-D__TARGET_ARCH_$TARGET_ARCH \
		-fdebug-prefix-map="$PWD"=. -fno-ident \
		-I/usr/include/"$MULTIARCH" -I. \
		-c "$obj.bpf.c" -o "$out"
	# Drop DWARF, keep BTF (.BTF/.BTF.ext carry the CO-RE relocations).
	"$STRIP" -g "$out"
done
