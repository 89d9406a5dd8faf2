#!/usr/bin/env python3
"""Start-up cost of the tcp* tools (`netkit TOOL -d 0`: load, attach, detach, exit) against
bpftrace attaching the same tracepoints, alternately in one process tree, as
bench/sockstat_startup.py does for sockstat. Targets (issue 13): wall time and peak RSS each
<= 0.40x bpftrace's."""
from __future__ import annotations

import shutil
import statistics
import sys

from sockstat_startup import ROOT, measure

# The tracepoints each tool attaches (bpftrace 0.17 has no tp_btf: the classic ones stand in).
TRACEPOINTS = {
    "tcpconnect": ["sock:inet_sock_set_state", "raw_syscalls:sys_exit",
                   "tcp:tcp_retransmit_skb"],
    "tcpaccept": ["raw_syscalls:sys_exit"],
    "tcplife": ["sock:inet_sock_set_state", "raw_syscalls:sys_exit", "tcp:tcp_destroy_sock"],
    "tcpstates": ["sock:inet_sock_set_state", "raw_syscalls:sys_exit", "sock:sock_send_length",
                  "tcp:tcp_destroy_sock"],
    "tcpconnlat": ["sock:inet_sock_set_state"],
}


def bpftrace_argv(tracepoints: list[str]) -> list[str]:
    probes = " ".join(f"tracepoint:{tp} {{ @n{i}[pid] = count(); }}"
                      for i, tp in enumerate(tracepoints))
    return ["bpftrace", "-e", f"{probes} BEGIN {{ exit(); }}"]


def main(rounds: int = 5) -> None:
    if not shutil.which("bpftrace"):
        sys.exit("bpftrace is not installed (apt-get install bpftrace)")
    netkit = str(ROOT / ".venv" / "bin" / "netkit")
    print(f"tcp tools' start-up, {rounds} alternating rounds each (median)")
    print(f"{'tool':11} {'netkit s':>9} {'bpftrace s':>11} {'wall':>6} {'netkit MiB':>11} "
          f"{'bpftrace MiB':>13} {'RSS':>6}")
    worst = 0.0
    for tool, tracepoints in TRACEPOINTS.items():
        ours, theirs = [netkit, tool, "-d", "0"], bpftrace_argv(tracepoints)
        measure(ours), measure(theirs)                  # warm the page cache for both
        runs = {"netkit": [], "bpftrace": []}
        for _ in range(rounds):
            runs["netkit"].append(measure(ours))
            runs["bpftrace"].append(measure(theirs))
        (nw, nr), (bw, br) = [(statistics.median(w for w, _ in r),
                               statistics.median(m for _, m in r)) for r in runs.values()]
        worst = max(worst, nw / bw, nr / br)
        print(f"{tool:11} {nw:9.3f} {bw:11.3f} {nw / bw:5.2f}x {nr:11.1f} {br:13.1f} "
              f"{nr / br:5.2f}x")
    print(f"worst ratio {worst:.2f}x (target <= 0.40): {'met' if worst <= 0.4 else 'NOT met'}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
