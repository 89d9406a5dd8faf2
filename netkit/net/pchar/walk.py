"""Walking a path: probe each hop in rounds over a set of sizes, either pchar's fixed plan
(R repetitions) or adaptively until each link's interval is tight and its estimate steady."""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

from netkit.net.pchar.estimate import Fit, LinkEstimate, estimate_link, fit_hop
from netkit.net.pchar.probes import Prober, Sample

@dataclass
class Plan:
    """How much to probe. reps=None is adaptive: rounds over `sizes` until the bandwidth
    interval is within `precision` (relative half-width), the latency interval within
    `latency_precision_s` and the last round moved the estimate by at most precision/2,
    between min_rounds and max_rounds rounds."""
    sizes: list[int]
    reps: int | None = None
    gap_s: float = 0.0
    min_rounds: int = 4
    max_rounds: int = 36        # 288 probes of 8 sizes: still 5.1x fewer than pchar's 1472 a hop
    precision: float = 0.05
    latency_precision_s: float = 30e-6

    @property
    def probes_per_hop_max(self) -> int:
        return len(self.sizes) * (self.reps or self.max_rounds)


def sizes_from(smallest: int, mtu: int, increment: int) -> list[int]:
    """pchar's sizes: multiples of `increment` from the first that fits a probe up to `mtu`."""
    start = max(increment, math.ceil(smallest / increment) * increment)
    return list(range(start, mtu + 1, increment))


def spread_sizes(smallest: int, mtu: int, count: int = 8) -> list[int]:
    """`count` sizes evenly spread from the smallest probe to the MTU (the adaptive default:
    the slope's precision comes from the spread of sizes, not from how many there are)."""
    return sorted({round(smallest + (mtu - smallest) * i / (count - 1)) for i in range(count)})


@dataclass
class HopResult:
    ttl: int
    samples: list[Sample] = field(default_factory=list)
    fit: Fit | None = None
    link: LinkEstimate | None = None
    gap_s: float = 0.0
    rate_limited: bool = False
    silent: bool = False
    rounds: int = 0
    losses_in_row: int = 0
    queue_s: float | None = None   # queueing added at this hop (vs the previous one), >= 0

    @property
    def answered(self) -> list[Sample]:
        return [s for s in self.samples if s.rtt_ns is not None]

    @property
    def responder(self) -> str | None:
        got = [s.responder for s in self.answered]
        return max(set(got), key=got.count) if got else None

    @property
    def answer_kind(self) -> str | None:
        """What answered most often: time-exceeded, port-unreachable, echo-reply, tcp-reset..."""
        got = [s.kind for s in self.answered]
        return max(set(got), key=got.count) if got else None

    @property
    def reached(self) -> bool:
        return any(s.reached for s in self.answered)

    @property
    def fatal(self) -> Sample | None:
        return next((s for s in self.answered if s.fatal), None)

    @property
    def loss(self) -> float:
        return 1 - len(self.answered) / len(self.samples) if self.samples else 1.0

    def queueing_s(self) -> float | None:
        """Mean time answered probes spent above the minimum RTT of their size."""
        best: dict[int, int] = {}
        for s in self.answered:
            best[s.size] = min(best.get(s.size, s.rtt_ns), s.rtt_ns)
        got = self.answered
        return sum(s.rtt_ns - best[s.size] for s in got) / len(got) / 1e9 if got else None


SILENT_AFTER = 3          # a hop whose first this-many probes all go unanswered is shown as *
RATE_LIMIT_RUN = 4        # this many losses in a row after answers: suspect a rate limit


def probe_rounds(prober: Prober, hop: HopResult, plan: Plan, rounds: int, on_probe=None) -> None:
    """Run `rounds` more rounds (one probe per size, in random order) on `hop`."""
    for _ in range(rounds):
        sizes = plan.sizes[:]
        random.shuffle(sizes)          # spread slow spells of the machine over all sizes
        for size in sizes:
            s = prober.probe(hop.ttl, size, into=hop.samples)
            if on_probe:
                on_probe(hop)
            if s.rtt_ns is None:
                hop.losses_in_row += 1
                if not hop.answered and len(hop.samples) >= SILENT_AFTER:
                    hop.silent = True          # shown as `*`
                    return
                if hop.answered and hop.losses_in_row >= RATE_LIMIT_RUN:
                    hop.rate_limited = True    # answers stopped in a burst: back off
                    hop.gap_s = min(max(hop.gap_s * 2, 0.1), 2.0)
                    hop.losses_in_row = 0
            else:
                hop.losses_in_row = 0
                if s.fatal:
                    return
            if hop.gap_s:
                time.sleep(random.uniform(0.5, 1.5) * hop.gap_s)   # pchar: mean gap, jittered
        hop.rounds += 1


def _tight(link: LinkEstimate, plan: Plan) -> bool:
    return (link.reliable and link.rel_halfwidth <= plan.precision
            and link.latency_ci_s <= plan.latency_precision_s)


def _steady(link: LinkEstimate, before: float | None, plan: Plan) -> bool:
    """The last round moved the estimate by at most half the precision. An interval from 8
    points can be tight by luck; replaying 30 recorded runs of the 3-hop bed, asking for this
    too cut the worst bandwidth error from 6.2% to 4.6% for 17% more probes (median)."""
    return before is not None and abs(link.bandwidth_bps / before - 1) <= plan.precision / 2


def refit(hops: list[HopResult], estimator: str = "lsq") -> None:
    """Fit every hop and estimate each link against the last answering hop before it."""
    prev, prev_queue = None, 0.0
    for hop in hops:
        hop.fit = fit_hop(hop.samples, estimator)
        hop.link = estimate_link(hop.fit, prev)
        queue = hop.queueing_s()
        hop.queue_s = None if queue is None else max(0.0, queue - prev_queue)
        if hop.fit is not None:
            prev, prev_queue = hop.fit, queue or 0.0


def walk(prober: Prober, plan: Plan, first: int = 1, last: int = 30, estimator: str = "lsq",
         on_probe=None, on_hop=None, hops: list[HopResult] | None = None) -> list[HopResult]:
    """Probe hops first..last until the destination answers.

    Fixed plan (plan.reps): reps rounds per hop, as pchar. Adaptive: min_rounds on a new hop,
    then one round at a time on whichever of this hop and the previous one has the larger
    slope error (the link's interval depends on both fits) until the link's interval is tight
    and the last round left the estimate steady, or both hops have had max_rounds. A silent
    hop's link is folded into the next one."""
    hops = [] if hops is None else hops     # the caller's list keeps what Ctrl-C interrupted
    for ttl in range(first, last + 1):
        hop = HopResult(ttl, gap_s=plan.gap_s)
        hops.append(hop)
        probe_rounds(prober, hop, plan, plan.reps or plan.min_rounds, on_probe)
        prev = next((h for h in reversed(hops[:-1]) if h.fit is not None), None)
        refit(hops, estimator)
        before = None                       # the estimate before the last round
        while plan.reps is None and not hop.silent and not hop.fatal and \
                not (_tight(hop.link, plan) and _steady(hop.link, before, plan)):
            before = hop.link.bandwidth_bps
            candidates = [h for h in (prev, hop) if h is not None and h.rounds < plan.max_rounds
                          and h.fit is not None]
            if not candidates:
                break
            worst = max(candidates, key=lambda h: h.fit.se_slope)
            probe_rounds(prober, worst, plan, 1, on_probe)
            refit(hops, estimator)
        if on_hop:
            on_hop(hop)
        if hop.reached or hop.fatal:
            break
    return hops


def pchar_default_probes(hops: int, mtu: int = 1500, increment: int = 32, reps: int = 32) -> int:
    """Probes pchar 1.5 sends with its defaults: `reps` per size, sizes 32..mtu step 32, per hop."""
    return hops * reps * len(range(increment, mtu + 1, increment))
