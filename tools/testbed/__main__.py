"""Test bed from the shell, for benchmarks and by hand (run from the repo root, as root):

  python -m tools.testbed up 100e6:1ms 10e6:5ms 50e6:2ms   # prints the namespaces, holds until ^C
  python -m tools.testbed measure 100e6:1ms 10e6:5ms       # each emulated link's achieved rate/latency
  python -m tools.testbed down                              # deletes beds left by killed processes

A link spec is RATE:DELAY (RATE in bit/s, e.g. 100e6 or 10M; DELAY like 5ms, 300us, 0.002) or
`veth` for a plain veth pair.
"""
from __future__ import annotations

import argparse
import re
import signal
import sys

from . import Link, TestBed, TestBedError, measure_link, remove_stale

_UNITS = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}


def parse_link(spec: str) -> Link:
    if spec == "veth":
        return Link()
    m = re.fullmatch(r"([\d.e+]+)([kKMG]?)(?:bit|bps)?:([\d.e+-]+)(s|ms|us)?", spec)
    if not m:
        raise argparse.ArgumentTypeError(f"bad link spec {spec!r} (want RATE:DELAY or veth)")
    rate = float(m.group(1)) * _UNITS[m.group(2)]
    delay = float(m.group(3)) * {"s": 1, None: 1, "ms": 1e-3, "us": 1e-6}[m.group(4)]
    return Link(rate_bps=rate, delay_s=delay)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.testbed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("up", "measure"):
        p = sub.add_parser(name)
        p.add_argument("links", nargs="+", type=parse_link)
        if name == "measure":
            p.add_argument("-c", "--count", type=int, default=100, help="pings per size")
    sub.add_parser("down")
    args = ap.parse_args(argv)
    if args.cmd == "down":
        for name in remove_stale():
            print(f"deleted {name}")
        return 0
    try:
        with TestBed(args.links) as bed:
            if args.cmd == "up":
                print(f"host={bed.host} target={bed.target} routers={' '.join(bed.routers)}")
                print(f"hops v4: {' '.join(bed.hop_addrs(4))}")
                print(f"hops v6: {' '.join(bed.hop_addrs(6))}")
                print("up; Ctrl-C tears it down", flush=True)
                try:
                    signal.pause()
                except KeyboardInterrupt:
                    pass
                return 0
            print(f"{'link':>4} {'fam':>3} {'rate_set':>12} {'rate_meas':>12} {'err%':>6} "
                  f"{'delay_set_us':>12} {'latency_us':>10} {'extra_us':>8}")
            for i, link in enumerate(bed.links):
                if not link.emulated:
                    continue
                for fam in (4, 6):
                    r = measure_link(bed, i, fam, count=args.count)
                    err = (100 * (r["rate_bps"] / link.rate_bps - 1)) if link.rate_bps else 0.0
                    print(f"{i:>4} {fam:>3} {link.rate_bps or 0:>12.4g} {r['rate_bps']:>12.4g} "
                          f"{err:>+6.2f} {link.delay_s * 1e6:>12.0f} {r['latency_s'] * 1e6:>10.1f} "
                          f"{(r['latency_s'] - link.delay_s) * 1e6:>+8.1f}")
        for line in bed.emulator_stats:
            print(line)
    except TestBedError as e:
        print(f"testbed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
