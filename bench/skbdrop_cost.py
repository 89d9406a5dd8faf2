#!/usr/bin/env python3
"""Kernel-side cost per drop of `netkit skbdrop` against a bpftrace script doing skbdrop's work
on the same tracepoint (skb:kfree_skb: leave out consumed and unspecified frees, count by
reason and protocol), both attached during one flood of UDP datagrams to a closed port on the
loopback of a namespace made for the run (reason NO_SOCKET). Target (issue 14): netkit <= 0.8x
bpftrace per event.

Measured with kernel.bpf_stats_enabled: run_time_ns / run_cnt of each program, from one run
with both attached (FIELD-NOTES: compare ratios from one run, never ns across runs)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NETKIT = ROOT / ".venv" / "bin" / "netkit"

# Written for this comparison, after the shape of skbdrop.bt (BPF Performance Tools, ch. 10),
# counting in the kernel as netkit does rather than printing a stack per drop.
BPFTRACE_SCRIPT = r"""
tracepoint:skb:kfree_skb /args->reason > 2/
{
    @drops[args->reason, args->protocol] = count();
}
"""


def programs() -> dict[int, dict]:
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                         check=True).stdout
    return {p["id"]: p for p in json.loads(out or "[]")}


def started(argv: list[str]) -> tuple[subprocess.Popen, set[int]]:
    """Start argv; once its programs are loaded and it settled, their ids."""
    before = set(programs())
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    new: set[int] = set()
    while not new and time.monotonic() < deadline:
        time.sleep(0.2)
        new = set(programs()) - before
    time.sleep(1.0)                     # the rest of its programs, and the attach
    return proc, set(programs()) - before


def setns(fd: int) -> None:
    import ctypes
    if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def flood(ns: str, datagrams: int) -> None:
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


def main(datagrams: int = 200000) -> None:
    if not shutil.which("bpftrace"):
        sys.exit("bpftrace is not installed (apt-get install bpftrace)")
    ns = f"nkbench{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    old_stats = stats.read_text().strip()
    procs = []
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                        "net.ipv4.icmp_ratelimit=1000000"], check=True)
        stats.write_text("1")
        ours_proc, ours = started([str(NETKIT), "skbdrop", "--netns", ns])
        theirs_proc, theirs = started(["bpftrace", "-e", BPFTRACE_SCRIPT])
        procs = [ours_proc, theirs_proc]
        before = programs()
        flood(ns, datagrams)
        after = programs()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=20)
        stats.write_text(old_stats)
        subprocess.run(["ip", "netns", "del", ns])

    def cost(ids: set[int]) -> list[tuple[str, int, float]]:
        rows = []
        for i in sorted(ids):
            runs = after[i].get("run_cnt", 0) - before[i].get("run_cnt", 0)
            ns_ = after[i].get("run_time_ns", 0) - before[i].get("run_time_ns", 0)
            if runs:
                rows.append((after[i].get("name", "?"), runs, ns_ / runs))
        return rows
    mine = [r for r in cost(ours) if r[0] == "skbdrop_free"]
    peer = cost(theirs)
    for who, rows in (("netkit", mine), ("bpftrace", peer)):
        for name, runs, per in rows:
            print(f"{who:8} {name:20} {runs:9} runs {per:7.1f} ns/run")
    ratio = mine[0][2] / peer[0][2]
    print(f"skbdrop_free / bpftrace per event: {ratio:.2f}x "
          f"(target <= 0.80x: {'met' if ratio <= 0.8 else 'NOT met'})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200000)
