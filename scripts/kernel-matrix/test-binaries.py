#!/usr/bin/env python3
"""Reads `cargo test --no-run --message-format=json` on stdin and prints the
integration test binaries, one per line: "CRATE/TEST PATH". Arguments, if
any, select tests by "TEST" or "CRATE/TEST".
"""
import json
import sys

wanted = set(sys.argv[1:])
found = []
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
        continue
    target = msg["target"]
    if "test" not in target["kind"]:
        continue  # unit tests and binaries: the matrix is about the kernel
    crate = msg["package_id"].split("#")[0].rstrip("/").split("/")[-1]
    crate = crate.split("@")[0]
    label = f"{crate}/{target['name']}"
    if wanted and target["name"] not in wanted and label not in wanted:
        continue
    found.append((label, msg["executable"]))
for label, exe in sorted(found):
    print(label, exe)
