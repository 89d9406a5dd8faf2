#!/usr/bin/env python3
"""netkit pchar on several path shapes of the test bed, several runs each: probes against
pchar 1.5's default plan, worst bandwidth error and how often the 95% intervals hold the truth.

pchar 1.5's defaults: 32 repetitions x sizes 32..1500 step 32 (46 sizes) per hop, 1472 probes a
hop. Targets (issues 6 and 20): at most a fifth of that for the path; every link within 3% of the
emulated rate, also a fast link right behind a slow one. The truth is each link's set rate; the
emulator's own error: it adds 0.05-0.25 ns per byte beyond the rate (0.05-0.3% up to 100 Mbit/s,
1-3% at 1 Gbit/s), so an interval holds the truth when it meets the set rate or the rate
0.3 ns per byte slower. Errors are against the set rate.

Needs root; run it under `flock /tmp/netkit-heavy.lock` (timing on 2 shared CPUs).
Usage: bench/pchar_probes.py [--runs N] [-6] [--shapes a,b] [-a ESTIMATOR] [--pchar-plan]
                             [--repo DIR] [--netkit CMD]
  --repo DIR: run on DIR's test bed and, unless --netkit says otherwise, DIR's netkit (e.g. an
  export of an older commit, for a before/after table); its JSON may lack the newer keys.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# The emulator's own cost per byte (tools/testbed/__init__.py): an interval "holds the truth"
# when it meets the set rate or the rate that much slower.
EMULATOR_S_PER_BYTE = 0.3e-9

SHAPE_SPECS = {
    # today's bench path; its third link is 5x faster than the one before it
    "3hop": ("100M:1ms", "10M:5ms", "50M:2ms"),
    # issue 20's path: 100 Mbit/s right behind 20 Mbit/s
    "5x": ("50M:500us", "20M:2ms", "100M:300us", "10M:1ms"),
    # 100 Mbit/s right behind 10 Mbit/s
    "10x": ("50M:500us", "10M:2ms", "100M:300us"),
    # 1 Gbit/s behind 100 Mbit/s: the emulator's own error there is 1-3% (tools/testbed)
    "1g": ("100M:500us", "1G:300us", "20M:1ms"),
}


def run(bed, netkit: str, family: int, links, *args: str) -> dict:
    res = bed.run(bed.host, [netkit, "pchar", "--json", "-n", "-g", "0", f"-{family}", *args,
                             bed.target_addr(family)], timeout=900, check=False)
    recs = [json.loads(l) for l in res.stdout.splitlines() if l.startswith("{")]
    hops = [r for r in recs if r["type"] == "hop"]
    errs, covered = [], []
    for h, l in zip(hops, links):
        if not h["reliable"]:
            errs.append(float("inf"))
            continue
        errs.append(h["bandwidth_bps"] / l.rate_bps - 1)
        slowest = 1 / (1 / l.rate_bps + EMULATOR_S_PER_BYTE / 8)
        covered.append(h["bandwidth_low_bps"] <= l.rate_bps and
                       h["bandwidth_high_bps"] >= slowest)
    return {"probes": recs[-1]["probes"], "wall_s": recs[-1]["wall_s"], "errs": errs,
            "covered": covered, "per_hop": [h["probes"] for h in hops],
            "methods": sorted({h.get("method") or "?" for h in hops})}


FIXED_LABEL = "pchar's plan (-R 32 -I 32), same estimator"


def link_of(errs: list[float]) -> int:
    """The link (1-based) with the largest error, signed errors (+: read faster than set)."""
    return max(range(len(errs)), key=lambda i: abs(errs[i])) + 1


def worst_of(errs: list[float]) -> float:
    return errs[link_of(errs) - 1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("-6", dest="family", action="store_const", const=6, default=4)
    ap.add_argument("--shapes", default="3hop,5x,10x,1g")
    ap.add_argument("-a", "--estimator", default=None)
    ap.add_argument("--pchar-plan", action="store_true",
                    help="also run pchar's default plan once per shape (-R 32 -I 32, gap 0, the "
                         "same estimator)")
    ap.add_argument("--repo", type=Path, default=ROOT)
    ap.add_argument("--netkit", help="the netkit command (default: REPO/.venv/bin/netkit)")
    args = ap.parse_args()
    sys.path.insert(0, str(args.repo))
    from netkit.net.pchar import pchar_default_probes
    from tools.testbed import TestBed
    from tools.testbed.__main__ import parse_link
    netkit = args.netkit or str(args.repo / ".venv" / "bin" / "netkit")
    extra = ["-a", args.estimator] if args.estimator else []
    print(f"repo {args.repo}, IPv{args.family}, {args.runs} runs a shape, "
          f"estimator {args.estimator or 'default'}; load average {os.getloadavg()[0]:.2f} "
          f"(2 shared cores)")
    print(f"{'shape':<6} {'path':<44} {'probes med/max':>14} {'pchar':>6} {'fewer':>6} "
          f"{'worst%':>7} {'covered':>8}  per run: worst signed %@link (probes per hop)")
    ok = True
    for name in args.shapes.split(","):
        links = [parse_link(spec) for spec in SHAPE_SPECS[name]]
        path = " ".join(SHAPE_SPECS[name])
        pchar = pchar_default_probes(len(links))
        with TestBed(links) as bed:
            results = [run(bed, netkit, args.family, links, *extra) for _ in range(args.runs)]
            fixed = run(bed, netkit, args.family, links, "-R", "32", "-I", "32", *extra) \
                if args.pchar_plan else None
        probes = sorted(r["probes"] for r in results)
        worst = max(max(map(abs, r["errs"])) for r in results)
        covered = [c for r in results for c in r["covered"]]
        detail = "  ".join(f"{100 * worst_of(r['errs']):+.1f}@{link_of(r['errs'])} "
                           f"({'/'.join(map(str, r['per_hop']))})" for r in results)
        print(f"{name:<6} {path:<44} {statistics.median(probes):>6.0f}/{probes[-1]:<7} "
              f"{pchar:>6} {pchar / probes[-1]:>5.1f}x {100 * worst:>7.2f} "
              f"{sum(covered):>3}/{len(covered):<4}  {detail}  [{','.join(results[0]['methods'])}]",
              flush=True)
        if fixed:
            print(f"{'':<6} {FIXED_LABEL:<44} {fixed['probes']:>14} "
                  f"{pchar:>6} {'':>6} {100 * max(map(abs, fixed['errs'])):>7.2f} "
                  f"{sum(fixed['covered']):>3}/{len(fixed['covered']):<4}", flush=True)
        ok &= probes[-1] * 5 <= pchar
    print("probes within a fifth of pchar's default plan on every run" if ok else
          "some run used more than a fifth of pchar's default plan")
    return 0 if ok else 1


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("pchar_probes: needs root (test bed namespaces, raw sockets)")
    sys.exit(main())
