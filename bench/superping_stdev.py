"""How steady is each RTT? superping's three clocks against iputils ping, on a veth pair.

Builds two namespaces joined by veth (tools/testbed), then runs `netkit superping` and iputils
`ping` side by side towards the peer, idle and again with every core kept busy by spinning
processes. Prints the standard deviation (and median, p99) of the in-stack RTT (tracepoints),
the kernel-stamped RTT (SO_TIMESTAMPING), superping's userspace RTT and ping's RTT.
Target: in-stack stdev <= 0.2 x userspace stdev.

    sudo .venv/bin/python bench/superping_stdev.py [COUNT] [INTERVAL]     (default 1000, 0.005)
"""
from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.testbed import Link, TestBed  # noqa: E402

TARGET_RATIO = 0.2


def spin(n: int) -> list[subprocess.Popen]:
    """n processes that burn a core each (the CPU-busy load)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def run_side_by_side(bed: TestBed, count: int, interval: float) -> dict[str, list[float]]:
    addr = bed.target_addr(4)
    ping = bed.popen(bed.host, ["ping", "-c", str(count), "-i", str(interval), addr],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sp = bed.run(bed.host, [sys.executable, "-m", "netkit", "superping", "--json", "-q",
                            "-c", str(count), "-i", str(interval), "-W", "2", addr],
                 timeout=count * interval * 5 + 60)
    ping_out, _ = ping.communicate(timeout=count * interval * 5 + 60)
    replies = [r for r in map(json.loads, sp.stdout.splitlines()) if r["type"] == "reply"]
    series = {
        "in-stack (BPF)": [r["stack_rtt_us"] for r in replies if r["stack_rtt_us"] is not None],
        "kernel-stamped": [r["kernel_rtt_us"] for r in replies if r["kernel_rtt_us"] is not None],
        "superping user": [r["user_rtt_us"] for r in replies],
        "iputils ping": [float(line.split("time=")[1].split()[0]) * 1e3
                         for line in ping_out.splitlines() if "time=" in line],
    }
    return series


def describe(values: list[float]) -> tuple[int, float, float, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return len(values), statistics.median(values), p99, statistics.pstdev(values)


def report(title: str, series: dict[str, list[float]]) -> float:
    print(f"\n{title}")
    print(f"{'RTT':<16} {'n':>6} {'median_us':>10} {'p99_us':>10} {'stdev_us':>10}")
    for name, values in series.items():
        n, med, p99, sd = describe(values)
        print(f"{name:<16} {n:>6} {med:>10.1f} {p99:>10.1f} {sd:>10.1f}")
    stack = describe(series["in-stack (BPF)"])[3]
    user = describe(series["superping user"])[3]
    ping = describe(series["iputils ping"])[3]
    ratio = stack / user if user else float("nan")
    print(f"in-stack stdev / userspace stdev = {ratio:.3f}  "
          f"(target <= {TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'NOT met'}); "
          f"in-stack / ping = {stack / ping if ping else float('nan'):.3f}")
    return ratio


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 0.005
    if os.geteuid() != 0:
        print("superping_stdev: needs root (namespaces, BPF)", file=sys.stderr)
        return 1
    print(f"superping vs ping on a veth pair: {count} echoes, {interval * 1e3:g} ms apart, "
          f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.2f} at start)")
    ratios = []
    with TestBed([Link()]) as bed:
        ratios.append(report("idle", run_side_by_side(bed, count, interval)))
        spinners = spin(os.cpu_count() or 1)
        try:
            ratios.append(report(f"CPU-busy ({len(spinners)} spinning processes)",
                                 run_side_by_side(bed, count, interval)))
        finally:
            for p in spinners:
                p.send_signal(signal.SIGKILL)
                p.wait()
    return 0 if all(r <= TARGET_RATIO for r in ratios) else 1


if __name__ == "__main__":
    sys.exit(main())
