#!/usr/bin/env python3
"""Prints the kernel matrix: one row per test binary, one column per kernel,
each cell passed / failed / not supported (and why), then the failures.

usage: report.py BINARIES LABEL=RUN_DIR... (LABEL=!REASON: a kernel that
could not run, e.g. not bootable). A RUN_DIR holds, per binary, NAME.log
(its output) and NAME.rc ("EXIT_STATUS SECONDS"), and `kernel` (release,
active LSMs). Exit status 1 when any cell is "failed" or "not run".

A test that finds its kernel lacking a feature panics with a message
starting "not supported: " (sockfilter_testkit::require): such a test is
"not supported", never a pass. A binary whose failures are all of that kind
is "not supported: FEATURES".
"""
import os
import re
import sys

NOT_SUPPORTED = re.compile(r"not supported: (.*)")


def parse_log(text):
    """(passed, failed names, {failed name: not-supported reason})"""
    passed = sum(int(n) for n in re.findall(r"test result: \w+\. (\d+) passed", text))
    failed = []
    reasons = {}
    # libtest prints each failure's output as "---- NAME stdout ----".
    blocks = re.split(r"^---- (\S+) stdout ----$", text, flags=re.M)
    for name, body in zip(blocks[1::2], blocks[2::2]):
        m = NOT_SUPPORTED.search(body)
        if m:
            reasons[name] = m.group(1).strip()
    m = re.search(r"^failures:\n((?:    \S+\n)+)", text, flags=re.M)
    if m:
        failed = [l.strip() for l in m.group(1).splitlines()]
    return passed, failed, reasons


def cell(run_dir, name):
    """(cell text, is_failure, detail lines)"""
    rc_file = os.path.join(run_dir, name + ".rc")
    if not os.path.exists(rc_file):
        return "not run (the guest stopped before it)", True, []
    rc, secs = open(rc_file).read().split()
    rc, secs = int(rc), int(secs)
    text = open(os.path.join(run_dir, name + ".log"), errors="replace").read()
    passed, failed, reasons = parse_log(text)
    if rc == 0:
        return f"passed ({passed}, {secs} s)", False, []
    if rc in (124, 137):
        return f"failed: timed out after {secs} s", True, tail(text)
    unsupported = [f for f in failed if f in reasons]
    broken = [f for f in failed if f not in reasons]
    why = sorted(set(reasons[f] for f in unsupported))
    if failed and not broken:
        return (
            f"not supported: {'; '.join(why)} ({len(unsupported)} tests; {passed} passed)",
            False,
            [],
        )
    if not failed:
        return f"failed: exit status {rc}, no test result", True, tail(text)
    text_cell = f"failed: {', '.join(broken)} ({passed} passed)"
    if unsupported:
        text_cell += f"; not supported: {'; '.join(why)}"
    details = []
    for f in broken:
        details += [f"  {f}:"] + ["    " + l for l in failure_message(text, f)]
    return text_cell, True, details


def failure_message(text, test):
    m = re.search(r"^---- " + re.escape(test) + r" stdout ----\n(.*?)(?=^---- |^failures:)", text, flags=re.M | re.S)
    lines = (m.group(1) if m else "").strip().splitlines()
    panic = [i for i, l in enumerate(lines) if "panicked at" in l]
    start = panic[0] if panic else max(0, len(lines) - 6)
    return lines[start : start + 6]


def tail(text):
    return ["    " + l for l in text.strip().splitlines()[-8:]]


def kernel_of(run_dir):
    try:
        lines = open(os.path.join(run_dir, "kernel")).read().splitlines()
        return f"{lines[0]} (LSMs: {lines[1] if len(lines) > 1 else '?'})"
    except (OSError, IndexError):
        return "(did not report)"


def main():
    binaries = [l.split() for l in open(sys.argv[1]) if l.strip()]
    columns = [c.split("=", 1) for c in sys.argv[2:]]
    bad = False
    header = ["test binary"] + [label for label, _ in columns]
    rows, details = [], []
    for label, exe in binaries:
        name = os.path.basename(exe)
        row = [label]
        for kernel, run_dir in columns:
            if run_dir.startswith("!"):
                row.append(run_dir[1:])
                continue
            text, failure, more = cell(run_dir, name)
            bad |= failure
            row.append(text)
            if more:
                details.append(f"{label} on {kernel}:")
                details += more
        rows.append(row)
    print("kernels:")
    for label, run_dir in columns:
        print(f"  {label}: {run_dir[1:] if run_dir.startswith('!') else kernel_of(run_dir)}")
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(c.replace("|", "/") for c in r) + " |")
    if details:
        print("\nfailures:")
        print("\n".join(details))
    cells = [c for r in rows for c in r[1:]]
    ok = sum(c.startswith("passed") for c in cells)
    failed = sum(c.startswith(("failed", "not run")) for c in cells)
    unsupported = sum(c.startswith("not supported") for c in cells)
    # Kernel x binary cells; "not supported" (the kernel lacks a feature the
    # tests need) counts as skipped, a kernel that could not boot not at all.
    print(f"\nmatrix: {ok} passed, {failed} failed, {unsupported} skipped")
    sys.exit(1 if bad else 0)


main()
