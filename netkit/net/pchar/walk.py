"""Walking a path: probe each hop in rounds over a set of sizes, either pchar's fixed plan
(R repetitions) or adaptively until each link's interval is tight.

The adaptive plan of the default estimator (lowmean) probes two sizes only, the smallest probe
and the MTU: a line is pinned down best by points at its two ends. Replaying 18 recorded runs of
a 100 Mbit/s link right behind a 20 Mbit/s one at 128 probes a hop, its rms error was 2.0% with
8 sizes x 16 rounds of minima (the shape of pathchar's plan), 2.8% with 16 x 8, and 0.85% with
the minima of 2 sizes x 64 rounds (1.3% with lowmean, which is the steadier of the two when
the machine is busy: estimate.py). Two sizes cannot show that RTT is not linear in size; -R, or
-I with -a lsq, probes every size for that."""
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
    interval is within `precision` (relative half-width) and the latency interval within
    `latency_precision_s` (with `steady`, the last round must also have moved the estimate by
    at most precision/2), between min_rounds and max_rounds rounds a hop, and with
    `budget_per_hop`, never more probes than that many for each hop walked so far."""
    sizes: list[int]
    reps: int | None = None
    gap_s: float = 0.0
    min_rounds: int = 4
    max_rounds: int = 36        # 288 probes of 8 sizes: still 5.1x fewer than pchar's 1472 a hop
    precision: float = 0.05
    latency_precision_s: float = 30e-6
    steady: bool = True
    budget_per_hop: int | None = None

    @property
    def probes_per_hop_max(self) -> int:
        return len(self.sizes) * (self.reps or self.max_rounds)


# pchar 1.5 sends 32 x 46 = 1472 probes a hop; lowmean's adaptive plan spends at most a fifth of
# that per hop walked, on average over the hops so far (a hop may use what those before it left).
PCHAR_PROBES_PER_HOP = 32 * 46
LOWMEAN_BUDGET_PER_HOP = PCHAR_PROBES_PER_HOP // 5


def adaptive_plan(estimator: str, sizes: list[int], gap_s: float = 0.0,
                  precision: float | None = None) -> Plan:
    """The adaptive plan for `estimator`: lowmean's (precision 2%: a 95% interval within +-2%
    leaves an error above 3% to about one link in 300; 16 rounds at least, so that each
    trimmed mean averages 7 values) or the one of the fits through minima (precision 5%, 4 to
    36 rounds, the last round must leave the estimate steady)."""
    if estimator == "lowmean":
        return Plan(sizes, None, gap_s, min_rounds=16, max_rounds=288,
                    precision=0.02 if precision is None else precision, steady=False,
                    budget_per_hop=LOWMEAN_BUDGET_PER_HOP)
    return Plan(sizes, None, gap_s, precision=0.05 if precision is None else precision)


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
    too cut the worst bandwidth error from 6.2% to 4.6% for 17% more probes (median).
    lowmean's intervals rest on all the probes, not on 6 degrees of freedom: it need not."""
    if not plan.steady:
        return True
    return before is not None and abs(link.bandwidth_bps / before - 1) <= plan.precision / 2


def _next_hop(candidates: list[HopResult], estimator: str) -> HopResult:
    """Which of the two hops around the link gets the next round. lowmean: the one whose slope
    variance a round cuts most (variance / rounds: the variance goes as 1 / rounds), this hop
    on a tie, as it also serves the next link. The fits through minima: the larger error."""
    if estimator == "lowmean":
        return max(candidates, key=lambda h: (h.fit.se_slope ** 2 / max(1, h.rounds), h.ttl))
    return max(candidates, key=lambda h: h.fit.se_slope)


def refit(hops: list[HopResult], estimator: str = "lowmean") -> None:
    """Fit every hop and estimate each link against the last answering hop before it."""
    prev, prev_queue = None, 0.0
    for hop in hops:
        hop.fit = fit_hop(hop.samples, estimator)
        hop.link = estimate_link(hop.fit, prev)
        queue = hop.queueing_s()
        hop.queue_s = None if queue is None else max(0.0, queue - prev_queue)
        if hop.fit is not None:
            prev, prev_queue = hop.fit, queue or 0.0


def walk(prober: Prober, plan: Plan, first: int = 1, last: int = 30, estimator: str = "lowmean",
         on_probe=None, on_hop=None, hops: list[HopResult] | None = None) -> list[HopResult]:
    """Probe hops first..last until the destination answers.

    Fixed plan (plan.reps): reps rounds per hop, as pchar. Adaptive: min_rounds on a new hop,
    then one round at a time on this hop or the previous one (_next_hop: the link's interval
    depends on both fits) until the link's interval is tight (and steady, if the plan asks),
    or both hops have had max_rounds, or the budget so far is spent; with a budget, what is
    left of it at the end goes to the links still short (_refine). A silent hop's link is
    folded into the next one."""
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
            if plan.budget_per_hop is not None and sum(len(h.samples) for h in hops) + \
                    len(plan.sizes) > plan.budget_per_hop * len(hops):
                candidates = []
            if not candidates:
                break
            probe_rounds(prober, _next_hop(candidates, estimator), plan, 1, on_probe)
            refit(hops, estimator)
        if on_hop:
            on_hop(hop)
        if hop.reached or hop.fatal:
            break
    if plan.reps is None and plan.budget_per_hop is not None:
        _refine(prober, hops, plan, estimator, on_probe)
    return hops


def _refine(prober: Prober, hops: list[HopResult], plan: Plan, estimator: str,
            on_probe=None) -> None:
    """Once the path's length is known, spend what the walk left of its budget (budget_per_hop
    for every hop walked) on the links still short of the precision, the widest interval first.
    A hop cannot know that a later one will need less: on the 5x test-bed path the walk used
    about 660 of its 1176 probes, nearly all on the two hops around the 100 Mbit/s link, which
    then gets most of the rest."""
    answering = [h for h in hops if h.fit is not None and not h.fatal]
    while sum(len(h.samples) for h in hops) + len(plan.sizes) <= plan.budget_per_hop * len(hops):
        pending = []
        for i, hop in enumerate(answering):
            if _tight(hop.link, plan):
                continue
            around = [h for h in (answering[i - 1] if i else None, hop)
                      if h is not None and h.rounds < plan.max_rounds]
            if around:
                pending.append((hop.link.rel_halfwidth, hop.ttl, around))
        if not pending:
            return
        _, _, around = max(pending, key=lambda p: (p[0], p[1]))
        probe_rounds(prober, _next_hop(around, estimator), plan, 1, on_probe)
        refit(hops, estimator)


def pchar_default_probes(hops: int, mtu: int = 1500, increment: int = 32, reps: int = 32) -> int:
    """Probes pchar 1.5 sends with its defaults: `reps` per size, sizes 32..mtu step 32, per hop."""
    return hops * reps * len(range(increment, mtu + 1, increment))
