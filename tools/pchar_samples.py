"""Raw pchar samples: record them on a test bed once, replay them through the real walk offline.

    python -m tools.pchar_samples OUT.json.gz "50M:500us 20M:2ms 100M:300us 10M:1ms" [-6]
        [--runs 20] [--rounds 150]          (root; run it under flock /tmp/netkit-heavy.lock)

records RUNS runs of that path, each on a fresh test bed, every hop probed ROUNDS rounds of the
two sizes lowmean's adaptive plan sends (the smallest probe and 1500 bytes).
tests/data/pchar_5x_v4.json.gz came from the command above.

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
"rtt_us": {size: [rtt in us, 0.1 us resolution, null for no answer]}}.
"""
from __future__ import annotations

import argparse
import gzip
import json
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


def record_run(prober: pc.Prober, hops: int, sizes: list[int], rounds: int,
               first: int = 1) -> list[dict]:
    """Probe hops first..first+hops-1 with `rounds` rounds of `sizes` each (random order within
    a round, as the walk sends them) and return the run's hops in the recording format."""
    run = []
    for ttl in range(first, first + hops):
        rtts: dict[int, list] = {s: [] for s in sizes}
        reply: dict[int, int] = {}
        hop = {"ttl": ttl, "responder": None, "kind": None}
        for _ in range(rounds):
            for size in random.sample(sizes, len(sizes)):
                s = prober.probe(ttl, size)
                rtts[size].append(None if s.rtt_ns is None else round(s.rtt_ns / 100) / 10)
                if s.rtt_ns is not None:
                    reply[size] = s.reply_size
                    hop["responder"], hop["kind"] = s.responder, s.kind
        hop["reply"] = {str(k): v for k, v in reply.items()}
        hop["rtt_us"] = {str(k): v for k, v in rtts.items()}
        run.append(hop)
    return run


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


def main(argv: list[str] | None = None) -> int:
    from tools.testbed import TestBed
    from tools.testbed.__main__ import parse_link

    ap = argparse.ArgumentParser(prog="python -m tools.pchar_samples",
                                 description="Record raw pchar samples on the test bed.")
    ap.add_argument("out")
    ap.add_argument("links", help='link specs, e.g. "50M:500us 20M:2ms 100M:300us"')
    ap.add_argument("-6", dest="family", action="store_const", const=6, default=4)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=150)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("pchar_samples: needs root (test bed namespaces)", file=sys.stderr)
        return 1
    links = [parse_link(s) for s in args.links.split()]
    rec = {"links": [[l.rate_bps, l.delay_s] for l in links], "family": args.family,
           "rounds": args.rounds, "runs": []}
    started = time.monotonic()
    for i in range(args.runs):
        with TestBed(links) as bed:
            with bed.inside(bed.host):
                prober = pc.UdpProber(bed.target_addr(args.family), timeout=1.0)
            with prober:
                rec["sizes"] = [prober.min_size, 1500]
                rec["runs"].append(record_run(prober, len(links), rec["sizes"], args.rounds))
        print(f"run {i + 1}/{args.runs}: {time.monotonic() - started:.0f} s, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    save(rec, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
