#!/usr/bin/env python3
"""Probes and wall time of `netkit pchar` (adaptive) against pchar 1.5's default plan on the
3-hop test bed host -> r1 (100 Mbit/s, 1 ms) -> r2 (10 Mbit/s, 5 ms) -> target (50 Mbit/s, 2 ms).

pchar 1.5's defaults: 32 repetitions x sizes 32..1500 step 32 (46 sizes) per hop, a mean gap of
0.25 s. That plan is run here by netkit's own prober (`-R 32 -I 32`, gap 0, so the wall time is
the probing itself; the gap pchar would add is computed on top) to compare accuracy at equal
footing. Target (issue 6): >= 5x fewer probes at equal accuracy. Needs root.
Usage: bench/pchar_probes.py [RUNS]   (adaptive runs per family, default 3)
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from netkit.net.pchar import pchar_default_probes  # noqa: E402
from tools.testbed import Link, TestBed  # noqa: E402

NETKIT = str(ROOT / ".venv" / "bin" / "netkit")
PATH = [Link(100e6, 0.001), Link(10e6, 0.005), Link(50e6, 0.002)]
PCHAR_GAP_S = 0.25


def run(bed: TestBed, family: int, *args: str) -> dict:
    res = bed.run(bed.host, [NETKIT, "pchar", "--json", "-n", "-g", "0", *args,
                             bed.target_addr(family)], timeout=600)
    recs = [json.loads(l) for l in res.stdout.splitlines()]
    hops = [r for r in recs if r["type"] == "hop"]
    bw_errs = [abs(h["bandwidth_bps"] / l.rate_bps - 1) if h["reliable"] else float("inf")
               for h, l in zip(hops, PATH)]
    bw_err = max(bw_errs)
    lat_err = max(abs(h["latency_us"] * 1e-6 - l.delay_s) for h, l in zip(hops, PATH))
    return {"probes": recs[-1]["probes"], "wall_s": recs[-1]["wall_s"], "bw_err": bw_err,
            "worst_hop": bw_errs.index(bw_err) + 1, "lat_err_us": lat_err * 1e6,
            "per_hop": " ".join(f"{h['probes']}" for h in hops)}


def main(bed: TestBed) -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    default_probes = pchar_default_probes(len(PATH))
    print(f"path: {' -> '.join(f'{l.rate_bps / 1e6:g} Mbit/s {l.delay_s * 1e3:g} ms' for l in PATH)}"
          f"; load average {os.getloadavg()[0]:.2f} (2 cores, shared: timings are noisy)")
    print(f"{'plan':<28} {'fam':>3} {'probes':>7} {'wall_s':>8} {'max_bw_err%':>11} "
          f"{'max_lat_err_us':>14}")
    worst_ratio = None
    for family in (4, 6):
        fixed = run(bed, family, "-R", "32", "-I", "32")
        # pchar would wait its mean gap after every probe on top of the probing itself
        pchar_wall = fixed["wall_s"] + default_probes * PCHAR_GAP_S
        print(f"{'pchar default, netkit prober':<28} {family:>3} {fixed['probes']:>7} "
              f"{fixed['wall_s']:>8.1f} {100 * fixed['bw_err']:>11.2f} {fixed['lat_err_us']:>14.1f}")
        print(f"{'pchar 1.5 default (computed)':<28} {family:>3} {default_probes:>7} "
              f"{pchar_wall:>8.1f} {'':>11} {'':>14}")
        for i in range(runs):
            a = run(bed, family)
            ratio = default_probes / a["probes"]
            worst_ratio = ratio if worst_ratio is None else min(worst_ratio, ratio)
            print(f"{f'netkit adaptive #{i + 1}':<28} {family:>3} {a['probes']:>7} "
                  f"{a['wall_s']:>8.1f} {100 * a['bw_err']:>11.2f} {a['lat_err_us']:>14.1f}"
                  f"   {ratio:.1f}x fewer probes; worst hop {a['worst_hop']}, "
                  f"probes per hop {a['per_hop']}")
    print(f"worst probe ratio vs pchar's default plan: {worst_ratio:.1f}x (target >= 5x)")
    return 0 if worst_ratio >= 5 else 1


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("pchar_probes: needs root (test bed namespaces, raw sockets)")
    with TestBed(PATH) as bed:
        sys.exit(main(bed))
