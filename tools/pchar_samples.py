"""Raw pchar samples: record them on a test bed once, replay them through the real walk offline.

    python -m tools.pchar_samples OUT.json.gz "50M:500us 20M:2ms 100M:300us 10M:1ms" [-6]
        [--runs 20] [--rounds 150]          (root; run it under flock /tmp/netkit-heavy.lock)

records RUNS runs of that path, each on a fresh test bed, every hop probed ROUNDS rounds of the
two sizes lowmean's adaptive plan sends (the smallest probe and 1500 bytes).
tests/data/pchar_5x_v4.json.gz came from the command above.

    python -m tools.pchar_samples OUT.json.gz "50M:500us 10M:2ms 100M:300us" --direct
    python -m tools.pchar_samples OUT.json.gz --compare

--direct probes, in every round and in one random order, all hops from the host and every link
after the first from the node before it (TTL 1: that link alone). The walk reads link k from
the difference of hops k and k-1; the direct probes read the same link at the same time with
no difference taken, so --compare tells the error of the differencing from the link's own
(the emulator's error and what the routers' kernels add per byte).

A recording holds, per run and per hop, the RTTs of probes of each size in the order they were
sent (several runs of one path, each on a fresh bed). ReplayProber hands them back to
netkit.net.pchar.walk as a live prober would, so estimators and stopping rules can be compared
on identical data, and the 95% intervals checked over many runs, without measuring again:

    rec = load("tests/data/pchar_5x_v4.json.gz")
    for run in rec["runs"]:
        hops = pc.walk(ReplayProber(run, rec), plan_for(rec), estimator="lowmean")

File format (JSON, gzip when the name ends in .gz): {"links": [[rate_bps, delay_s], ...],
"family": 4|6, "sizes": [...], "rounds": N, "runs": [[hop, ...], ...]} with hop =
{"ttl": k, "responder": addr, "kind": "time-exceeded"|..., "reply": {size: bytes},
"rtt_us": {size: [rtt in us, 0.1 us resolution, null for no answer]}}; with --direct also
"direct": per run one hop per link after the first (the same format, ttl 1).
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import sys
import time
from pathlib import Path

from netkit.net import pchar as pc


def load(path: str | Path) -> dict:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return json.load(f)


def save(rec: dict, path: str | Path) -> None:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt") as f:
        json.dump(rec, f, separators=(",", ":"))


def record_rounds(targets: list[tuple[pc.Prober, int]], sizes: list[int],
                  rounds: int) -> list[dict]:
    """`rounds` rounds over `targets` ((prober, ttl) pairs), each round every target at every
    size in one random order; returns one hop in the recording format per target."""
    hops = [{"ttl": ttl, "responder": None, "kind": None, "reply": {},
             "rtt_us": {str(s): [] for s in sizes}} for _, ttl in targets]
    for _ in range(rounds):
        order = [(i, size) for i in range(len(targets)) for size in sizes]
        random.shuffle(order)
        for i, size in order:
            (prober, ttl), hop = targets[i], hops[i]
            s = prober.probe(ttl, size)
            hop["rtt_us"][str(size)].append(None if s.rtt_ns is None else round(s.rtt_ns / 100) / 10)
            if s.rtt_ns is not None:
                hop["reply"][str(size)] = s.reply_size
                hop["responder"], hop["kind"] = s.responder, s.kind
    return hops


def record_run(prober: pc.Prober, hops: int, sizes: list[int], rounds: int,
               first: int = 1) -> list[dict]:
    """Probe hops first..first+hops-1 with `rounds` rounds of `sizes` each, one hop after the
    other (random order within a round, as the walk sends them); the run's hops in the
    recording format."""
    return [record_rounds([(prober, ttl)], sizes, rounds)[0]
            for ttl in range(first, first + hops)]


def hop_samples(hop: dict) -> list[pc.Sample]:
    """All the recorded probes of one hop as Samples."""
    return [pc.Sample(hop["ttl"], int(size), i, int(rtt * 1000), hop["reply"][size])
            for size, rtts in hop["rtt_us"].items() for i, rtt in enumerate(rtts)
            if rtt is not None]


def link_errors(rec: dict) -> list[dict]:
    """Per run of a recording made with --direct, each link's relative error against its set
    rate (lowmean over all the rounds): "path" from the difference of the host's hops (the
    walk's estimate), "direct" from the probes the node before the link sent over it alone
    (None for the first link, which the host probes directly anyway)."""
    out = []
    for run, direct in zip(rec["runs"], rec["direct"]):
        prev, path = None, []
        for hop, (rate, _) in zip(run, rec["links"]):
            fit = pc.fit_lowmean(hop_samples(hop))
            path.append(8 / (fit.slope - (prev.slope if prev else 0.0)) / rate - 1)
            prev = fit
        alone = [None] + [8 / pc.fit_lowmean(hop_samples(hop)).slope / rate - 1
                          for hop, (rate, _) in zip(direct, rec["links"][1:])]
        out.append({"path": path, "direct": alone})
    return out


class RecordingExhausted(Exception):
    """The walk asked for more probes of a size than the recording holds."""


class ReplayProber(pc.Prober):
    """A prober that answers from one recorded run instead of the network."""

    def __init__(self, run: list[dict], rec: dict):   # no sockets: skip Prober.__init__
        self.hops = {h["ttl"]: h for h in run}
        self.next = {(h["ttl"], int(s)): 0 for h in run for s in h["rtt_us"]}
        self.header, self.id_bytes = min(rec["sizes"]), 0      # min_size: the smallest size
        self.v6 = rec["family"] == 6
        self.address = run[-1]["responder"]
        self.sent = self.unstamped = 0
        self.seq = 0

    def close(self) -> None:
        pass

    def probe(self, ttl: int, size: int, into: list | None = None) -> pc.Sample:
        hop = self.hops.get(ttl)
        key = (ttl, size)
        if hop is None or key not in self.next or self.next[key] >= len(hop["rtt_us"][str(size)]):
            raise RecordingExhausted(f"no recorded probe {self.next.get(key, 0)} of {size} bytes "
                                     f"at hop {ttl}")
        rtt_us = hop["rtt_us"][str(size)][self.next[key]]
        self.next[key] += 1
        self.seq += 1
        self.sent += 1
        sample = pc.Sample(ttl, size, self.seq)
        if rtt_us is not None:
            sample.rtt_ns = int(rtt_us * 1000)
            sample.reply_size = hop["reply"][str(size)]
            sample.responder, sample.kind = hop["responder"], hop["kind"]
        if into is not None:
            into.append(sample)
        return sample


def replay(rec: dict, run: list[dict], estimator: str = "lowmean", precision: float | None = None,
           seed: int | None = None) -> tuple[list[pc.HopResult], int]:
    """Walk one recorded run with the adaptive plan of `estimator` (capped at the rounds the
    recording holds); with `seed`, each hop's probes of a size are taken in a shuffled order
    (another run of the same conditions). Returns the hops and the probes the walk sent."""
    if seed is not None:
        rng = random.Random(seed)
        run = [dict(h, rtt_us={s: rng.sample(v, len(v)) for s, v in h["rtt_us"].items()})
               for h in run]
    plan = pc.adaptive_plan(estimator, rec["sizes"], 0.0, precision)
    plan.max_rounds = min(plan.max_rounds, rec["rounds"])
    prober = ReplayProber(run, rec)
    hops = pc.walk(prober, plan, 1, len(run), estimator)
    return hops, prober.sent


def compare(path: str | Path) -> None:
    """Print link_errors of a recording made with --direct, and their mean and spread."""
    rec = load(path)
    errs = link_errors(rec)
    print(f"{path}: IPv{rec['family']}, {len(errs)} runs of {rec['rounds']} rounds; per link "
          f"the error in % of each run, path (differenced) / direct")
    for k, (rate, _) in enumerate(rec["links"]):
        for kind in ("path", "direct"):
            v = [e[kind][k] for e in errs if e[kind][k] is not None]
            if not v:
                continue
            mean = sum(v) / len(v)
            sd = math.sqrt(sum((x - mean) ** 2 for x in v) / max(1, len(v) - 1))
            print(f"link {k + 1} {rate / 1e6:g} Mbit/s {kind:>6}: mean {100 * mean:+.2f} "
                  f"sd {100 * sd:.2f} worst {100 * max(map(abs, v)):.2f}  "
                  + " ".join(f"{100 * x:+.1f}" for x in v))


def main(argv: list[str] | None = None) -> int:
    from tools.testbed import TestBed
    from tools.testbed.__main__ import parse_link

    ap = argparse.ArgumentParser(prog="python -m tools.pchar_samples",
                                 description="Record raw pchar samples on the test bed.")
    ap.add_argument("out")
    ap.add_argument("links", nargs="?", help='link specs, e.g. "50M:500us 20M:2ms 100M:300us"')
    ap.add_argument("-6", dest="family", action="store_const", const=6, default=4)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--direct", action="store_true",
                    help="every round: all hops from the host and each later link from the node "
                         "before it (TTL 1), in one random order")
    ap.add_argument("--compare", action="store_true",
                    help="print the per-link errors of OUT, a recording made with --direct")
    args = ap.parse_args(argv)
    if args.compare:
        compare(args.out)
        return 0
    if not args.links:
        ap.error("LINKS is needed to record")
    if os.geteuid() != 0:
        print("pchar_samples: needs root (test bed namespaces)", file=sys.stderr)
        return 1
    links = [parse_link(s) for s in args.links.split()]
    rec = {"links": [[l.rate_bps, l.delay_s] for l in links], "family": args.family,
           "rounds": args.rounds, "runs": []}
    if args.direct:
        rec["direct"] = []
    started = time.monotonic()
    for i in range(args.runs):
        with TestBed(links) as bed:
            # a prober's sockets stay in the namespace they were made in
            probers = []
            for node in bed.nodes[:len(links) if args.direct else 1]:
                with bed.inside(node):
                    probers.append(pc.UdpProber(bed.target_addr(args.family), timeout=1.0))
            try:
                rec["sizes"] = sizes = [probers[0].min_size, 1500]
                if args.direct:
                    hops = record_rounds([(probers[0], ttl) for ttl in range(1, len(links) + 1)]
                                         + [(p, 1) for p in probers[1:]], sizes, args.rounds)
                    rec["runs"].append(hops[:len(links)])
                    rec["direct"].append(hops[len(links):])
                else:
                    rec["runs"].append(record_run(probers[0], len(links), sizes, args.rounds))
            finally:
                for p in probers:
                    p.close()
        print(f"run {i + 1}/{args.runs}: {time.monotonic() - started:.0f} s, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    save(rec, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
