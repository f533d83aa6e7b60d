#!/bin/sh
# Regenerates bpf/sockfilter.bpf.o from its sources. The object is committed
# (so `cargo build` needs only Rust); CI runs this and fails if it changes.
# Reproducible: pinned clang-19, no absolute paths in the debug info.
set -eu
cd "$(dirname "$0")"
CLANG=${CLANG:-clang-19}
STRIP=${STRIP:-llvm-strip-19}
"$CLANG" -target bpf -O2 -g -Wall -Werror \
	-D__TARGET_ARCH_x86 \
	-fdebug-prefix-map="$PWD"=. -fno-ident \
	-I/usr/include/x86_64-linux-gnu -I. \
	-c sockfilter.bpf.c -o sockfilter.bpf.o
# Drop DWARF, keep BTF (.BTF/.BTF.ext carry the CO-RE relocations).
"$STRIP" -g sockfilter.bpf.o
