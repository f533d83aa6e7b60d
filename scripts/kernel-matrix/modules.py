#!/usr/bin/env python3
"""Prints, in load order (dependencies first), the module files needed for
the named modules of an unpacked kernel package, skipping modules built into
the kernel (modules.builtin). The package ships no modules.dep (depmod makes
it at install), so dependencies come from each module's own .modinfo
"depends=" entry.

usage: modules.py /lib/modules/VERSION NAME...
"""
import lzma
import os
import sys


def norm(name):
    return name.replace("-", "_")


def module_name(path):
    return norm(os.path.basename(path).split(".ko")[0])


def depends(path):
    data = open(path, "rb").read()
    if path.endswith(".xz"):
        data = lzma.decompress(data)
    elif path.endswith(".zst"):
        sys.exit(f"modules.py: {path}: zstd-compressed modules are not supported")
    for entry in data.split(b"\0"):
        if entry.startswith(b"depends="):
            return [norm(d) for d in entry[8:].decode().split(",") if d]
    return []


def main():
    moddir, wanted = sys.argv[1], sys.argv[2:]
    by_name = {}
    for root, _, files in os.walk(os.path.join(moddir, "kernel")):
        for f in files:
            if ".ko" in f:
                by_name[module_name(f)] = os.path.join(root, f)
    builtin = set()
    path = os.path.join(moddir, "modules.builtin")
    if os.path.exists(path):
        builtin = {module_name(l.strip()) for l in open(path)}
    order, seen = [], set()

    def visit(name):
        if name in seen:
            return
        seen.add(name)
        if name not in by_name:
            if name in builtin:
                return
            sys.exit(f"modules.py: no module {name} in {moddir} (neither built in nor a file)")
        for d in depends(by_name[name]):
            visit(d)
        order.append(by_name[name])

    for name in wanted:
        visit(norm(name))
    print("\n".join(order))


main()
