#!/usr/bin/env python3
"""Kernel-side cost per drop of `netkit skbdrop` against a bpftrace script doing skbdrop's work
on the same tracepoint (skb:kfree_skb: leave out consumed and unspecified frees, count by
reason and protocol), both attached during one flood of UDP datagrams to a closed port on the
loopback of a namespace made for the run (reason NO_SOCKET). Target (issue 14): netkit <= 0.8x
bpftrace per event.

Measured with kernel.bpf_stats_enabled: run_time_ns / run_cnt of each program, from one run
with both attached (FIELD-NOTES: compare ratios from one run, never ns across runs), through
bench/_bpfcost.py as tcplife's cost is."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

from _bpfcost import bpf_stats, compare

# Written for this comparison, after the shape of skbdrop.bt (BPF Performance Tools, ch. 10),
# counting in the kernel as netkit does rather than printing a stack per drop.
BPFTRACE_SCRIPT = r"""
tracepoint:skb:kfree_skb /args->reason > 2/
{
    @drops[args->reason, args->protocol] = count();
}
"""


def setns(fd: int) -> None:
    import ctypes
    if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def flood(ns: str, datagrams: int) -> str:
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    setns(target)
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    finally:
        setns(own)
        os.close(own)
        os.close(target)
    with sock:
        for _ in range(datagrams):
            sock.sendto(b"d", ("127.0.0.1", 9))
    return f"{datagrams} UDP datagrams to a closed port in {ns}"


def main(datagrams: int = 200000) -> None:
    if not shutil.which("bpftrace"):
        sys.exit("bpftrace is not installed (apt-get install bpftrace)")
    ns = f"nkbench{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                        "net.ipv4.icmp_ratelimit=1000000"], check=True)
        with bpf_stats():
            result = compare(["skbdrop", "--netns", ns], BPFTRACE_SCRIPT,
                             lambda: flood(ns, datagrams))
    finally:
        subprocess.run(["ip", "netns", "del", ns])
    text, ratio = result.report("skb:kfree_skb", "skbdrop_free")
    print(text)
    print(f"target <= 0.80x: {'met' if ratio <= 0.8 else 'NOT met'}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200000)
