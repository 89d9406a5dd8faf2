#!/usr/bin/env python3
"""Start-up cost of `netkit sockstat -d 0` (load, attach, detach, exit) against bpftrace attaching
the same four tracepoints, run alternately in one process tree. Prints medians and ratios of wall
time and peak RSS. Targets (issue 2): both ratios <= 0.40."""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NETKIT = [str(ROOT / ".venv" / "bin" / "netkit"), "sockstat", "-d", "0"]
# The same probes sockstat attaches (bpftrace 0.17 has no raw/BTF syscall tracepoint support,
# so raw_syscalls:sys_enter stands in for tp_btf/sys_enter), each counting into a map as sockstat
# does, and exit as soon as they are attached.
BPFTRACE_SCRIPT = """
tracepoint:raw_syscalls:sys_enter { @calls[args->id] = count(); }
tracepoint:sock:inet_sock_set_state { @state[pid] = count(); }
tracepoint:sock:sock_send_length { @tx[pid] = sum(args->ret); }
tracepoint:sock:sock_recv_length { @rx[pid] = sum(args->ret); }
BEGIN { exit(); }
"""
BPFTRACE = ["bpftrace", "-e", BPFTRACE_SCRIPT]


def measure(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one run of argv."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{argv[0]} failed: {err.strip()}")
    return wall, usage.ru_maxrss / 1024


def alternating_medians(commands: dict[str, list[str]], rounds: int) -> dict:
    """name -> (median wall s, median peak RSS MiB), the commands run in turn `rounds` times
    after one warm-up run each (page cache)."""
    for argv in commands.values():
        measure(argv)
    results = {name: [] for name in commands}
    for _ in range(rounds):
        for name, argv in commands.items():
            results[name].append(measure(argv))
    return {name: (statistics.median(w for w, _ in runs), statistics.median(r for _, r in runs))
            for name, runs in results.items()}


def main(rounds: int = 9) -> None:
    if not shutil.which("bpftrace"):
        sys.exit("bpftrace is not installed (apt-get install bpftrace)")
    med = alternating_medians({"netkit": NETKIT, "bpftrace": BPFTRACE}, rounds)
    print(f"sockstat start-up, {rounds} alternating rounds (median)")
    print(f"{'':10} {'wall s':>8} {'peak RSS MiB':>13}")
    for name, (wall, rss) in med.items():
        print(f"{name:10} {wall:8.3f} {rss:13.1f}")
    wall_ratio = med["netkit"][0] / med["bpftrace"][0]
    rss_ratio = med["netkit"][1] / med["bpftrace"][1]
    print(f"ratio netkit/bpftrace: wall {wall_ratio:.2f}x (target <= 0.40), "
          f"peak RSS {rss_ratio:.2f}x (target <= 0.40)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 9)
