#!/usr/bin/env python3
"""Kernel-side cost per TCP state change of `netkit tcplife` against a bpftrace script doing
tcplife's work on the same tracepoint (sock:inet_sock_set_state: remember when each socket was
established and who owns it, and at CLOSE read its byte counters and print one line), on one
loopback connect storm with both attached. Target (issue 13): netkit <= 0.8x bpftrace.

netkit's other programs (sockowners.h's accept and destroy hooks) run on other events; they
are listed with their own counts, and the total per session is printed beside the ratio."""
from __future__ import annotations

import shutil
import sys

from _bpfcost import ConnectStorm, bpf_stats, compare

# Written for this comparison, after the shape of tcplife.bt (BPF Performance Tools, ch. 10).
BPFTRACE_SCRIPT = r"""
tracepoint:sock:inet_sock_set_state /args->protocol == 6/
{
    $sk = args->skaddr;
    if (args->newstate < 4) { @born[$sk] = nsecs; }
    if (args->newstate == 2 || args->newstate == 9) {
        @owner[$sk] = pid;
        @name[$sk] = comm;
    }
    if (args->newstate == 7 && @born[$sk]) {
        $tp = (struct tcp_sock *)$sk;
        printf("%d %s %s %d %s %d %d %d %d\n", @owner[$sk], @name[$sk], ntop(args->saddr),
               args->sport, ntop(args->daddr), args->dport, $tp->bytes_acked,
               $tp->bytes_received, (nsecs - @born[$sk]) / 1000000);
        delete(@born[$sk]);
        delete(@owner[$sk]);
        delete(@name[$sk]);
    }
}
"""


def main(connections: int = 20000) -> None:
    if not shutil.which("bpftrace"):
        sys.exit("bpftrace is not installed (apt-get install bpftrace)")
    with bpf_stats():
        result = compare(["tcplife", "--json"], BPFTRACE_SCRIPT, ConnectStorm(connections))
    text, ratio = result.report("sock:inet_sock_set_state", "tcplife_state")
    print(text)
    sessions = 2 * connections
    ours = sum(p.ns for p in result.netkit) / sessions
    theirs = sum(p.ns for p in result.bpftrace) / sessions
    print(f"all programs per session: netkit {ours:.0f} ns, bpftrace {theirs:.0f} ns "
          f"({ours / theirs:.2f}x)")
    print(f"target: tcplife_state <= 0.80x bpftrace per event: "
          f"{'met' if ratio <= 0.8 else 'NOT met'}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
