#!/bin/sh
# Regenerates the BPF objects from their sources. The objects are committed
# (so `cargo build` needs only Rust); CI runs this and fails if they change.
# Reproducible: pinned clang-19, no absolute paths in the debug info.
#   sockfilter.bpf.o  the watcher and enforcer (crates/sockfilter/src/loader.rs)
#   destroy.bpf.o     socket destroy by cookie (crates/sockfilter/src/destroy/)
set -eu
cd "$(dirname "$0")"
CLANG=${CLANG:-clang-19}
STRIP=${STRIP:-llvm-strip-19}
for obj in sockfilter destroy; do
	"$CLANG" -target bpf -O2 -g -Wall -Werror \
		-D__TARGET_ARCH_x86 \
		-fdebug-prefix-map="$PWD"=. -fno-ident \
		-I/usr/include/x86_64-linux-gnu -I. \
		-c "$obj.bpf.c" -o "$obj.bpf.o"
	# Drop DWARF, keep BTF (.BTF/.BTF.ext carry the CO-RE relocations).
	"$STRIP" -g "$obj.bpf.o"
done
