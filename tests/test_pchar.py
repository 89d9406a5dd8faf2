"""netkit pchar: the estimators on synthetic paths and on recorded samples, and the whole tool
on test beds: the 3-hop bed host -> r1 (100 Mbit/s, 1 ms) -> r2 (10 Mbit/s, 5 ms) -> target
(50 Mbit/s, 2 ms), and two with a fast link right behind a slow one (FAST_BEHIND_SLOW). The
emulated links are the independent truth; their own error (tests/test_testbed.py,
tools/testbed/linkemu.c): the emulator's copies add ~0.07 ns per byte to a link between two
routers and up to ~0.3 ns to the first and last links, i.e. at most 0.5% at 100 Mbit/s and 0.2%
at 50 Mbit/s, which the bounds here leave room for; latency +0..+25 us.
"""
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from netkit.net import pchar as pc
from tools import pchar_samples
from tools.testbed import Link, TestBed, fixture_bed

from conftest import NETKIT, assert_one_line_error, require_or_skip

PATH = [Link(100e6, 0.001), Link(10e6, 0.005), Link(50e6, 0.002)]
BW_TOL = 0.03          # issue 20's bar: every link within 3% of the emulated rate ...
LAT_TOL = 100e-6       # ... and (issue 6) latency within 100 us of it
# A fast link right behind a slow one (issue 20): 5x (its own path) and 10x, each run once (an
# adaptive run on a busy machine spends its whole budget: 6-8 s), one in each family.
FAST_BEHIND_SLOW = {
    "5x": [Link(50e6, 0.0005), Link(20e6, 0.002), Link(100e6, 0.0003), Link(10e6, 0.001)],
    "10x": [Link(50e6, 0.0005), Link(10e6, 0.002), Link(100e6, 0.0003)],
}
FAST_BEHIND_SLOW_FAMILY = {"5x": 6, "10x": 4}
# What a live run on the test bed is held to. Issue 20's 3% is the bench's measure
# (bench/pchar_probes.py: runs per shape, worst link, how many within 3%; README), not a CI
# gate: a live run's error is the emulator's as much as the walk's. Measured with python -m
# tools.pchar_samples --direct (README): on a busy machine the 100 Mbit/s link, probed alone
# from the router before it, is itself 0.6-1.9% slower than set, and its estimate from the
# difference of hops 3 and 2 spreads by 1.4-2.8% (sd) with 400-500 probes at each hop. The
# worst links seen: 10x 5.6% and 5.8% in 2 of 25 bench runs (load 1.1-4.2) and 5.8% in a
# CI-style run on a quiet machine, where 5x (IPv6) read 4.7% ten seconds later, both slow; the
# 3-hop path above 3% once in 6 CI-style runs. So the live bounds leave a margin over what
# was seen; what a live run is there to catch (an answer's bytes miscounted, a link measured
# against the wrong hop) is off by 25% or more (COARSE_TOL below). The walk's 3% is checked on
# recorded runs replayed through it, which are deterministic
# (test_adaptive_walk_over_recorded_runs_of_a_fast_link_behind_a_slow_one).
LIVE_TOL = 0.04                 # every other link live (bench: 3-hop worst 2.6%, 8 busy runs)
FAST_BEHIND_SLOW_TOL = {"5x": 0.06, "10x": 0.075}
RECORDED_5X = Path(__file__).parent / "data" / "pchar_5x_v4.json.gz"


# -- estimator (pure) -----------------------------------------------------------------------------

def synthetic_hop(ttl, links, sizes, reps, rng, reply=lambda size: 56, jitter_s=30e-6,
                  overhead_s=20e-6):
    """Samples of one hop on a path of (rate, delay) links: the min-RTT model plus a positive
    random queueing/scheduling delay on every probe, as real probes see."""
    samples, seq = [], 0
    for _ in range(reps):
        for size in sizes:
            wire = size + reply(size)
            rtt = sum(wire * 8 / rate + 2 * delay + overhead_s for rate, delay in links[:ttl])
            rtt += rng.expovariate(1 / jitter_s)
            seq += 1
            samples.append(pc.Sample(ttl, size, seq, int(rtt * 1e9), reply(size), "x",
                                     "time-exceeded"))
    return samples


def test_t95_quantiles():
    assert pc.t95(1) == 12.71 and pc.t95(10) == 2.23 and pc.t95(11) == 2.23
    assert pc.t95(1000) == 1.96
    assert all(pc.t95(d) >= pc.t95(d + 1) for d in range(1, 100))


def test_lsq_recovers_an_exact_line():
    pts = [(x, 1e-3 + 2e-8 * x) for x in (100, 500, 900, 1300)]
    fit = pc.fit_lsq(pts)
    assert fit.slope == pytest.approx(2e-8, rel=1e-9)
    assert fit.intercept == pytest.approx(1e-3, rel=1e-9)
    assert fit.se_slope == pytest.approx(0, abs=1e-15) and fit.r2 == pytest.approx(1)


def test_min_rtt_points_keep_the_fastest_probe_per_size_and_count_the_answer():
    s = [pc.Sample(1, 100, 1, 5000, 56), pc.Sample(1, 100, 2, 4000, 56),
         pc.Sample(1, 1500, 3, None), pc.Sample(1, 1500, 4, 9000, 576)]
    assert pc.min_rtt_points(s) == [(156, 4e-6), (2076, 9e-6)]


@pytest.mark.parametrize("estimator", ["lowmean", "lsq", "kendall", "lms"])
def test_estimator_recovers_a_synthetic_path(estimator):
    rng = random.Random(6)
    links = [(100e6, 0.001), (10e6, 0.005), (50e6, 0.002)]
    sizes = pc.spread_sizes(36, 1500)
    prev = None
    for ttl, (rate, delay) in enumerate(links, start=1):
        hop = synthetic_hop(ttl, links, sizes, 24, rng, reply=lambda n: 28 + min(n, 548))
        fit = pc.fit_hop(hop, estimator)
        link = pc.estimate_link(fit, prev)
        assert link.reliable, link
        assert link.bandwidth_bps == pytest.approx(rate, rel=0.05)
        assert link.latency_s == pytest.approx(delay + 10e-6, abs=10e-6)
        assert link.bandwidth_low_bps < link.bandwidth_bps < link.bandwidth_high_bps
        prev = fit


def test_robust_estimators_shrug_off_an_outlier_that_lsq_does_not():
    pts = [(x, 1e-3 + 8e-8 * x) for x in range(100, 1600, 200)]
    pts[3] = (pts[3][0], pts[3][1] + 400e-6)          # one size never met empty queues
    true = 8e-8
    assert abs(pc.fit_lsq(pts).slope / true - 1) > 0.05
    assert pc.fit_kendall(pts).slope == pytest.approx(true, rel=0.01)
    assert pc.fit_lms(pts).slope == pytest.approx(true, rel=0.01)


def test_negative_slope_difference_is_unreliable_not_a_number():
    prev = pc.fit_lsq([(x, 1e-3 + 8e-7 * x) for x in (100, 700, 1300)])
    cur = pc.fit_lsq([(x, 2e-3 + 7.9e-7 * x) for x in (100, 700, 1300)])
    link = pc.estimate_link(cur, prev)
    assert not link.reliable and link.bandwidth_bps is None
    assert "negative" in link.reason


def test_fast_link_behind_a_slow_one_is_flagged_unreliable():
    """1 Gbit/s after 10 Mbit/s: the slope difference (0.008 us/byte) drowns in the noise of
    the slow hop's fit: the interval spans zero, so no number is printed."""
    rng = random.Random(1)
    links = [(10e6, 0.001), (1e9, 0.001)]
    sizes = pc.spread_sizes(36, 1500)
    fits = [pc.fit_hop(synthetic_hop(t, links, sizes, 4, rng, jitter_s=200e-6), "lsq")
            for t in (1, 2)]
    link = pc.estimate_link(fits[1], fits[0])
    assert not link.reliable and link.bandwidth_bps is None
    assert link.reason


def test_too_few_sizes_is_unreliable():
    link = pc.estimate_link(pc.fit_hop([pc.Sample(1, 100, 1, 5000, 56)]), None)
    assert not link.reliable and link.reason == "too few answers"


def test_low_mean_averages_the_lower_part():
    mean, se, kept = pc.low_mean([float(x) for x in range(100)], 0.02, 0.40)
    assert kept == 38 and mean == sum(range(2, 40)) / 38 and se > 0
    assert pc.low_mean([5.0] * 20, *pc.LOW_TRIM) == (5.0, 0.0, 8)


@pytest.mark.parametrize("law", ["exponential", "lognormal", "two-regime"])
def test_low_mean_standard_error_matches_its_spread(law):
    """Over 2000 samples of 40 RTT-like values (positive, skewed, with a second regime of long
    waits), the spread of low_mean matches the standard error it reports, within 12%: the
    winsorized variance is the right one for a trimmed mean."""
    rng = random.Random(4)
    draw = {"exponential": lambda: rng.expovariate(1 / 20),
            "lognormal": lambda: rng.lognormvariate(2, 1),
            "two-regime": lambda: rng.expovariate(1 / 5)
            + (rng.random() < 0.3) * rng.expovariate(1 / 100)}[law]
    means, ses = [], []
    for _ in range(2000):
        mean, se, _ = pc.low_mean([draw() for _ in range(40)], *pc.LOW_TRIM)
        means.append(mean)
        ses.append(se)
    spread = statistics_stdev(means)
    reported = math.sqrt(sum(se * se for se in ses) / len(ses))
    assert reported == pytest.approx(spread, rel=0.12)


def statistics_stdev(values):
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def two_size_hop(ttl, links, rounds, rng, noise):
    """`rounds` probes of 36 and of 1500 bytes at hop `ttl` (ICMPv4-sized answers), each with
    the path's delay plus `noise()` seconds, and the bytes on the wire at each size."""
    samples = []
    for i in range(rounds):
        for size in (36, 1500):
            reply = 28 + min(size, 548)
            rtt = sum((size + reply) * 8 / rate + 2 * delay for rate, delay in links[:ttl])
            samples.append(pc.Sample(ttl, size, len(samples), int((rtt + noise()) * 1e9),
                                     reply, "x", "time-exceeded"))
    return samples


def synthetic_coverage(runs: int, rounds: int, seed: int, df: int | None = None) -> float:
    """How often the 95% interval of 100 Mbit/s right behind 20 Mbit/s holds the truth over
    `runs` synthetic runs of `rounds` rounds of two sizes per hop, with noise like the test
    bed's (a floor, a skewed spread, a second regime of long waits on a third of the probes).
    With `df`, every fit must have that many degrees of freedom."""
    rng = random.Random(seed)
    links = [(20e6, 0.002), (100e6, 0.0003)]

    def noise():
        return rng.lognormvariate(math.log(8e-6), 0.8) + \
            (rng.random() < 1 / 3) * rng.expovariate(1 / 60e-6)
    covered = 0
    for _ in range(runs):
        fits = [pc.fit_lowmean(two_size_hop(t, links, rounds, rng, noise)) for t in (1, 2)]
        assert df is None or fits[1].df == df
        link = pc.estimate_link(fits[1], fits[0])
        covered += link.reliable and link.bandwidth_low_bps <= 100e6 <= link.bandwidth_high_bps
    return covered / runs


def test_lowmean_intervals_cover_the_truth_at_their_nominal_rate():
    """400 synthetic runs, 32 rounds a hop: the link's 95% interval holds the truth in 91..99%
    of the runs (a calibrated one: 95%, +-2.2% at two standard deviations for 400 runs)."""
    assert 0.91 <= synthetic_coverage(400, 32, seed=20) <= 0.99


def test_lowmean_intervals_stay_honest_with_few_values_a_size():
    """10 rounds: each trimmed mean keeps 4 values, so Student's t has 3 degrees of freedom
    (3.18, not the 1.96 of many values). Over 2000 runs the intervals hold the truth at least
    at their nominal 95%, less two standard errors (measured: 97.9%; with the degrees of
    freedom of all the values averaged, 92%)."""
    assert synthetic_coverage(2000, 10, seed=10, df=3) >= 0.94


def test_lowmean_latency_is_the_floor_not_the_queue():
    """Four of five probes at hop 2 wait in a queue (300 us on average): the link's one-way
    latency comes from the lowest tenth of each size's RTTs, which such waits do not reach, so
    it stays within 10 us of the truth (median error measured: 1.1 us; from the 2nd-40th
    percentile the slope uses: 13 us, up to 44 us)."""
    rng = random.Random(7)
    links = [(20e6, 0.002), (100e6, 0.0003)]
    errors = []
    for _ in range(20):
        fits = []
        for ttl in (1, 2):
            def noise(queued=ttl == 2):
                return rng.lognormvariate(math.log(8e-6), 0.5) + \
                    (queued and rng.random() < 0.8) * rng.expovariate(1 / 300e-6)
            fits.append(pc.fit_lowmean(two_size_hop(ttl, links, 64, rng, noise)))
        errors.append(abs(pc.estimate_link(fits[1], fits[0]).latency_s - 0.0003))
    assert sorted(errors)[10] < 3e-6 and max(errors) < 10e-6, errors


def test_adaptive_walk_over_recorded_runs_of_a_fast_link_behind_a_slow_one():
    """Issue 20's path (100 Mbit/s right behind 20 Mbit/s), 16 runs recorded on the test bed
    (python -m tools.pchar_samples, see there: 300 rounds of the two sizes per hop, a fresh bed
    per run) and replayed through the real adaptive walk: every link of every run within 3% of
    the emulated rate, the 95% intervals holding it as often as 95% intervals do (no fewer
    than a calibrated one falls below 1 time in 400), and no run above a fifth of pchar's
    default plan. The emulator's own error (up to 0.3 ns a byte, tools/testbed/__init__.py)
    widens the truth a little."""
    rec = pchar_samples.load(RECORDED_5X)
    pchar = pc.pchar_default_probes(len(rec["links"]))
    covered, errors = 0, []
    for run in rec["runs"]:
        hops, sent = pchar_samples.replay(rec, run)
        assert sent * 5 <= pchar and [h.ttl for h in hops] == [1, 2, 3, 4]
        for hop, (rate, _) in zip(hops, rec["links"]):
            assert hop.link.reliable, hop.link
            errors.append(abs(hop.link.bandwidth_bps / rate - 1))
            slowest = 1 / (1 / rate + 0.3e-9 / 8)     # the emulator's copies make it look slower
            covered += hop.link.bandwidth_low_bps <= rate and hop.link.bandwidth_high_bps >= slowest
    assert max(errors) <= BW_TOL
    assert covered >= binomial_floor(len(errors), 0.95, 1 / 400), (covered, len(errors))


def recorded_samples(hop: dict, rounds: range) -> list:
    """The recorded probes of `rounds` of one hop (both sizes) as Samples."""
    return [pc.Sample(hop["ttl"], int(size), i, int(rtts[i] * 1000), hop["reply"][size])
            for size, rtts in hop["rtt_us"].items() for i in rounds if rtts[i] is not None]


def test_direct_recording_tells_the_links_own_error_from_the_differencing():
    """tools.pchar_samples.link_errors on a synthetic --direct recording of the 10x path where
    the 100 Mbit/s link is really 2% slower than set: read alone (from the router before it)
    and from the difference of hops 3 and 2, both see those 2%; the links set right read
    right. Jitter as on a quiet bed: positive, 5 us on average."""
    rng = random.Random(20)
    set_rates = [50e6, 10e6, 100e6]
    real = [(50e6, 0.0005), (10e6, 0.002), (100e6 / 1.02, 0.0003)]
    reply = {36: 64, 1500: 576}

    def hop(path):
        return {"ttl": 1, "responder": "x", "kind": "time-exceeded",
                "reply": {str(s): r for s, r in reply.items()},
                "rtt_us": {str(size): [round(1e6 * (sum((size + reply[size]) * 8 / rate
                                                        + 2 * delay for rate, delay in path)
                                                    + rng.expovariate(1 / 5e-6)), 1)
                                       for _ in range(200)] for size in reply}}

    rec = {"links": [[r, 0.0] for r in set_rates], "family": 4, "sizes": [36, 1500],
           "rounds": 200, "runs": [[hop(real[:k]) for k in (1, 2, 3)]],
           "direct": [[hop(real[1:2]), hop(real[2:3])]]}
    (errs,) = pchar_samples.link_errors(rec)
    assert errs["direct"][0] is None
    for kind in ("path", "direct"):
        assert errs[kind][1] == pytest.approx(0, abs=0.002), errs
        assert errs[kind][2] == pytest.approx(1 / 1.02 - 1, abs=0.005), errs
    assert errs["path"][0] == pytest.approx(0, abs=0.002), errs


def test_lowmean_beats_the_minima_of_the_same_probes():
    """The 16 recorded runs cut into windows of 64 rounds of the two sizes (4 per run), every
    link of each window from lowmean and from the line through the two sizes' minima (the
    walk's plan with pathchar's statistic): lowmean's rms error 0.44% against 0.56%, its worst
    2.5% against 4.2%."""
    rec = pchar_samples.load(RECORDED_5X)
    errors = {"lowmean": [], "minima": []}
    for run in rec["runs"]:
        for start in range(0, rec["rounds"] - 63, 64):
            prev = {"lowmean": None, "minima": None}
            for hop, (rate, _) in zip(run, rec["links"]):
                samples = recorded_samples(hop, range(start, start + 64))
                (x0, y0), (x1, y1) = pc.min_rtt_points(samples)
                fits = {"lowmean": pc.fit_lowmean(samples),
                        "minima": pc.Fit((y1 - y0) / (x1 - x0), y0, 0.0, 0.0, None, 2)}
                for name, fit in fits.items():
                    d = fit.slope - (prev[name].slope if prev[name] else 0.0)
                    errors[name].append(8 / d / rate - 1)
                    prev[name] = fit
    rms = {k: math.sqrt(sum(e * e for e in v) / len(v)) for k, v in errors.items()}
    worst = {k: max(map(abs, v)) for k, v in errors.items()}
    assert len(errors["lowmean"]) == 16 * 4 * 4
    assert rms["lowmean"] < 0.8 * rms["minima"] and worst["lowmean"] < 0.7 * worst["minima"], \
        (rms, worst)


def binomial_floor(n: int, p: float, tail: float) -> int:
    """The largest k with P(X < k) <= tail for X ~ Binomial(n, p)."""
    below, k = 0.0, 0
    while below + math.comb(n, k) * p ** k * (1 - p) ** (n - k) <= tail:
        below += math.comb(n, k) * p ** k * (1 - p) ** (n - k)
        k += 1
    return k


def test_plans_and_pchar_defaults():
    sizes = pc.sizes_from(36, 1500, 32)
    assert sizes[0] == 64 and sizes[-1] == 1472 and len(sizes) == 45
    assert pc.pchar_default_probes(3) == 4416     # pchar 1.5: 46 sizes x 32 reps x 3 hops
    assert pc.spread_sizes(36, 1500) == [36, 245, 454, 663, 873, 1082, 1291, 1500]
    lowmean = pc.adaptive_plan("lowmean", [36, 1500])
    assert (lowmean.min_rounds, lowmean.precision, lowmean.steady) == (16, 0.02, False)
    assert lowmean.budget_per_hop * 5 <= pc.pchar_default_probes(1)
    assert pc.adaptive_plan("lsq", pc.spread_sizes(36, 1500)).precision == 0.05


class CountingProber(pc.Prober):
    """Answers every probe at once with a 10 Mbit/s-per-hop line plus noise that never lets
    an interval tighten: the walk runs into its budget."""
    def __init__(self):
        self.sent, self.rng = 0, random.Random(5)

    def probe(self, ttl, size, into=None):
        self.sent += 1
        rtt = ttl * (size + 64) * 8 / 10e6 + self.rng.expovariate(1 / 0.02)
        s = pc.Sample(ttl, size, self.sent, int(rtt * 1e9), 64, "x",
                      "port-unreachable" if ttl == 4 else "time-exceeded")
        if into is not None:
            into.append(s)
        return s


def test_lowmean_walk_never_spends_more_than_a_fifth_of_pchar():
    """However noisy the path, the adaptive walk stops within a fifth of what pchar's default
    plan would send to the hops walked so far."""
    prober = CountingProber()
    hops = pc.walk(prober, pc.adaptive_plan("lowmean", [36, 1500]), 1, 4)
    assert len(hops) == 4 and hops[-1].reached
    assert prober.sent * 5 <= pc.pchar_default_probes(4)
    assert prober.sent > pc.pchar_default_probes(4) // 5 - 2 * 16    # it did use the budget


def test_bandwidth_formatting():
    from netkit.tools.pchar import fmt_bps
    assert [fmt_bps(v) for v in (None, 999.9e6, 100.4e6, 9.96e6, 1.5e9, 640, 12.3e3)] == \
        ["-", "1000 Mb/s", "100 Mb/s", "9.96 Mb/s", "1.50 Gb/s", "640 b/s", "12.3 kb/s"]


# -- the tool on the test bed ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def bed():
    yield from fixture_bed(PATH, require_or_skip)


def pchar(bed, *args, ns=None, timeout=120):
    return bed.run(ns or bed.host, [str(NETKIT), "pchar", *args], check=False, timeout=timeout)


def pchar_json(bed, *args, code=0):
    res = pchar(bed, "--json", "-n", "-g", "0", *args)
    assert res.returncode == code, res.stderr
    records = [json.loads(l) for l in res.stdout.splitlines()]
    return [r for r in records if r["type"] == "hop"], records[-1]


# A short fixed plan (3 sizes 480..1440, 48 probes each a hop: ~4 s) for the tests whose point is
# not the precision: it still reads every link of PATH within COARSE_TOL, while the bugs those
# tests look for are off by 25% to 100% (an answer's bytes miscounted, a link measured against
# the wrong hop). 15% was three standard errors on a busy machine, yet CI read the 50 Mbit/s link
# behind 10 Mbit/s 16.1% off once with 96 probes a hop, and a CI-style run 20.8% (TCP answers):
# 144 probes narrow that by a fifth (1/sqrt(1.5)); 20% keeps the bugs out, not the noise.
SHORT_PLAN = ["-R", "48", "-I", "480"]
COARSE_TOL = 0.20


def check_hops(hops, summary, bed, family, proto, tol):
    assert [h["address"] for h in hops] == bed.hop_addrs(family)
    final = {"udp": "port-unreachable", "icmp": "echo-reply", "tcp": "tcp-reset"}[proto]
    assert [h["answer"] for h in hops] == ["time-exceeded"] * 2 + [final]
    for hop, link in zip(hops, PATH):
        assert hop["reliable"] and hop["method"] == "lowmean" and hop["r2"] is None, hop
        assert hop["bandwidth_bps"] == pytest.approx(link.rate_bps, rel=tol), hop
        assert hop["latency_us"] * 1e-6 == pytest.approx(link.delay_s, abs=LAT_TOL), hop
        assert hop["bandwidth_low_bps"] <= hop["bandwidth_bps"] <= hop["bandwidth_high_bps"]
        assert hop["loss_pct"] == 0 and hop["answered"] == hop["probes"]
    assert hops[-1]["reached"] and hops[-1]["note"] == "destination"
    assert summary["reached"] and summary["protocol"] == proto and summary["family"] == family
    assert summary["probes"] == sum(h["probes"] for h in hops) and summary["unstamped"] == 0


@pytest.mark.netns
def test_each_hop_within_4pct_and_100us_of_the_truth(bed):
    """The adaptive default, as a user runs it (UDP): every link within 4% (LIVE_TOL), 5x fewer
    probes than pchar's default plan. Once, in IPv4: IPv6 runs adaptively on a FAST_BEHIND_SLOW
    bed and on this one with the short plan."""
    hops, summary = pchar_json(bed, "-4", bed.target_addr(4))
    check_hops(hops, summary, bed, 4, "udp", LIVE_TOL)
    assert summary["probes"] * 5 <= summary["pchar_default_probes"] == 4416


@pytest.mark.parametrize("proto", ["icmp", "tcp"])
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.netns
def test_icmp_and_tcp_probes_measure_each_link(bed, family, proto):
    """Echo replies as big as the probe, TCP resets of 40 or 60 bytes: each kind's answer is
    counted right (a miscount is off by 25% or more)."""
    hops, summary = pchar_json(bed, f"-{family}", "-p", proto, *SHORT_PLAN,
                               bed.target_addr(family))
    check_hops(hops, summary, bed, family, proto, COARSE_TOL)


@pytest.fixture(params=sorted(FAST_BEHIND_SLOW))
def fast_bed(request):
    """A bed of one FAST_BEHIND_SLOW shape and the family it is probed in."""
    for bed in fixture_bed(FAST_BEHIND_SLOW[request.param], require_or_skip):
        yield bed, FAST_BEHIND_SLOW_FAMILY[request.param], FAST_BEHIND_SLOW_TOL[request.param]


@pytest.mark.netns
def test_fast_link_right_behind_a_slow_one_live(fast_bed):
    """Issue 20: 100 Mbit/s right behind 20 Mbit/s (5x) or 10 Mbit/s (10x). pathchar's
    minimum-RTT lines read such a link 3.7-10.7% off after 288 probes in the issue's runs (on the
    emulator before it took arrivals from the kernel's stamps); a live run of lowmean's two-size
    plan, within a fifth of pchar's default plan for the path, must get the fast link within
    FAST_BEHIND_SLOW_TOL and the others within LIVE_TOL (see there: the 3% is the bench's)."""
    bed, family, fast_tol = fast_bed
    hops, summary = pchar_json(bed, f"-{family}", bed.target_addr(family))
    assert [h["address"] for h in hops] == bed.hop_addrs(family)
    for i, (hop, link) in enumerate(zip(hops, bed.links)):
        behind_slow = i > 0 and link.rate_bps >= 5 * bed.links[i - 1].rate_bps
        assert hop["reliable"] and hop["method"] == "lowmean", hop
        assert hop["bandwidth_bps"] == pytest.approx(
            link.rate_bps, rel=fast_tol if behind_slow else LIVE_TOL), hop
        assert hop["latency_us"] * 1e-6 == pytest.approx(link.delay_s, abs=LAT_TOL), hop
    assert summary["probes"] * 5 <= summary["pchar_default_probes"]


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.netns
def test_tcp_to_an_open_port_is_answered_by_syn_ack(bed, family):
    server = bed.popen(bed.target, [sys.executable, "-c",
                                    "import socket, time\n"
                                    "s = socket.create_server(('::', 8080), family=socket.AF_INET6,"
                                    " dualstack_ipv6=True)\nprint('listening', flush=True)\n"
                                    "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "listening"
        hops, summary = pchar_json(bed, f"-{family}", "-p", "tcp", "-P", "8080", "-R", "2",
                                   "-I", "256", bed.target_addr(family))
    finally:
        server.kill()
        server.wait()
    assert hops[-1]["answer"] == "tcp-synack"
    assert hops[-1]["reached"] and hops[-1]["answered"] == hops[-1]["probes"] == 10
    assert summary["reached"]


@pytest.mark.netns
def test_fast_link_behind_a_slow_one_is_honest():
    """pathchar's known failure: 1 Gbit/s right after 10 Mbit/s. Either the interval holds the
    truth or the link is flagged unreliable; a confident wrong number fails. The truth is
    known to 5% here: the TUN path itself costs ~0.2 ns per byte (measured against a 1 Tbit/s
    emulated link), which makes 1 Gbit/s look ~2.5% slower.

    A 95% interval that is honest misses the truth one run in twenty (measured here: 3 of 56
    runs), so the check uses the tool's own standard error at 99.9%: the interval is symmetric
    in the slope difference d = 8/bandwidth, half-width t95(df) * se (df in the JSON), and the
    truth must lie within 5.96 standard errors (t at 99.9% for 6 degrees of freedom, more than
    enough for any more)."""
    if os.geteuid() != 0:
        require_or_skip("needs root")
    with TestBed([Link(10e6, 0.001), Link(1e9, 0.0005)]) as bed:
        hops, _ = pchar_json(bed, bed.target_addr(4))
    fast = hops[1]
    assert hops[0]["bandwidth_bps"] == pytest.approx(10e6, rel=BW_TOL)
    if fast["reliable"]:
        d, d_low, d_high = (8 / fast[k] for k in ("bandwidth_bps", "bandwidth_high_bps",
                                                   "bandwidth_low_bps"))
        assert d - d_low == pytest.approx(d_high - d, rel=1e-6)      # symmetric in d
        se = (d_high - d_low) / 2 / pc.t95(fast["df"])
        truth = (8 / 1.05e9, 8 / 0.95e9)
        assert truth[0] - 5.96 * se <= d <= truth[1] + 5.96 * se, fast
    else:
        assert fast["bandwidth_bps"] is None and fast["note"].startswith("unreliable")


@pytest.mark.netns
def test_queueing_under_poisson_cross_traffic(bed):
    """Bursts of 10 datagrams of 1500 bytes (12 ms of work on the 10 Mbit/s link) at Poisson
    times, 50 ms apart on average. Probes then wait, on average, the time-average backlog of an
    M/D/1 queue of bursts (Pollaczek-Khinchine): lambda*S^2 / (2(1-rho)) = 1.89 ms at hop 2,
    ~15 us at hop 1. Tolerance: probes are few (240) and waits heavy-tailed: 6 runs gave 0.80 to
    0.98 of the formula (unseeded bursts: 0.66..1.22), so +-40%. Averaging the lower part of
    each size's RTTs keeps the bandwidths within 10% meanwhile (a burst delays probes of every
    size alike; 30 probes a size are few)."""
    burst_s, mean_gap_s = 10 * 1500 * 8 / PATH[1].rate_bps, 0.05
    rho = burst_s / mean_gap_s
    expected_s = burst_s ** 2 / mean_gap_s / (2 * (1 - rho))
    with bed.inside(bed.target):
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)    # no port-unreachables back
    with bed.inside(bed.host):
        source = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stop = threading.Event()
    rng = random.Random(6)

    def cross_traffic():
        while not stop.wait(rng.expovariate(1 / mean_gap_s)):
            for _ in range(10):
                source.sendto(bytes(1472), (bed.target_addr(4), 7000))
    with sink, source:
        sink.bind((bed.target_addr(4), 7000))
        sender = threading.Thread(target=cross_traffic)
        sender.start()
        try:
            hops, _ = pchar_json(bed, "-H", "2", "-R", "30", "-I", "184", "-g", "0.005",
                                 bed.target_addr(4), code=1)     # -H 2: target not reached
        finally:
            stop.set()
            sender.join()
    assert hops[0]["queue_us"] < 200
    assert 0.6 * expected_s < hops[1]["queue_us"] * 1e-6 < 1.4 * expected_s, hops[1]
    for hop, link in zip(hops, PATH):
        assert hop["bandwidth_bps"] == pytest.approx(link.rate_bps, rel=0.10), hop


@pytest.mark.netns
def test_fixed_plan_sends_exactly_reps_times_sizes_per_hop(bed):
    hops, summary = pchar_json(bed, "-R", "2", "-I", "256", bed.target_addr(4))
    sizes = [256, 512, 768, 1024, 1280]            # multiples of 256 up to the MTU
    assert [h["probes"] for h in hops] == [2 * len(sizes)] * 3
    assert summary["probes"] == 30 and not summary["adaptive"]


@pytest.mark.netns
def test_first_hop_2_measures_the_path_up_to_it(bed):
    """-s 2: the first link reported is the whole path to hop 2, two links in series."""
    hops, _ = pchar_json(bed, "-s", "2", *SHORT_PLAN, bed.target_addr(4))
    assert [h["hop"] for h in hops] == [2, 3]
    series = 1 / (1 / PATH[0].rate_bps + 1 / PATH[1].rate_bps)
    assert hops[0]["bandwidth_bps"] == pytest.approx(series, rel=COARSE_TOL)
    assert hops[0]["latency_us"] * 1e-6 == pytest.approx(0.006, abs=2 * LAT_TOL)


@pytest.mark.netns
def test_plain_output_is_an_aligned_table(bed):
    res = pchar(bed, "-n", "-g", "0", "-R", "4", "-I", "184", bed.target_addr(4))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split()[:4] == ["HOP", "ADDRESS", "BANDWIDTH", "95%"]
    assert [l.split()[1] for l in lines[1:4]] == bed.hop_addrs(4)
    assert "destination" in lines[3] and "probes in" in lines[-1]
    assert not any(c in res.stdout for c in "│─━")
    assert res.stderr.startswith("pchar to ")


@pytest.mark.netns
def test_ctrl_c_reports_the_hops_probed_so_far(bed):
    p = bed.popen(bed.host, [str(NETKIT), "pchar", "--json", "-n", "-g", "0", "-R", "32",
                             "-I", "32", bed.target_addr(4)],
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)                     # pchar's plan: ~15 s for hops 1-2 alone
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0 and "Traceback" not in err, err
    records = [json.loads(l) for l in out.splitlines()]
    summary, hops = records[-1], records[:-1]
    assert summary["interrupted"] and not summary["reached"]
    assert 1 <= len(hops) < 3 and hops[0]["address"] == bed.hop_addrs(4)[0]
    assert summary["probes"] == sum(h["probes"] for h in hops) < 3 * 32 * 45


@pytest.mark.netns
def test_rich_view_on_a_terminal(bed):
    cmd = f"{NETKIT} pchar -n -g 0 -R 2 -I 256 {bed.target_addr(4)}"
    res = bed.run(bed.host, ["script", "-qec", cmd, "/dev/null"], env={**os.environ,
                                                                       "COLUMNS": "160"})
    assert "Traceback" not in res.stdout
    assert "\x1b[" in res.stdout                      # styled, for a terminal
    assert all(a in res.stdout for a in bed.hop_addrs(4)) and "destination" in res.stdout


@pytest.mark.netns
def test_last_hop_short_of_the_target_is_an_error_after_the_table(bed):
    res = pchar(bed, "-n", "-g", "0", "-H", "2", bed.target_addr(4))
    assert len(res.stdout.splitlines()) >= 3          # hops 1 and 2 were still shown
    res.stderr = res.stderr.split("\n", 1)[1]          # drop the "pchar to" banner
    assert "did not answer within 2 hops" in assert_one_line_error(res, "pchar")


@pytest.mark.netns
def test_late_answers_are_not_mistaken_for_send_errors(bed):
    """Answers that come after the timeout are ignored: those hops are `*`, and the errors
    they leave on the socket are not taken for send errors."""
    res = pchar(bed, "-n", "-g", "0", "-t", "0.004", "-H", "3", bed.target_addr(4))
    res.stderr = res.stderr.split("\n", 1)[1]
    assert "did not answer within 3 hops" in assert_one_line_error(res, "pchar")
    rows = res.stdout.splitlines()[1:4]
    assert rows[0].split()[1] == bed.hop_addrs(4)[0]            # 2 ms RTT: in time
    assert rows[1].split()[1] == rows[2].split()[1] == "*"      # 12 and 16 ms: too late


@pytest.mark.netns
def test_a_pending_socket_error_does_not_fail_the_next_probe():
    """An ICMP error nobody read yet (here: port-unreachable for a datagram sent behind the
    prober's back) is the socket's pending error; Linux would hand it to the next sendto()."""
    if os.geteuid() != 0:
        require_or_skip("needs root for a private loopback namespace")
    with TestBed([Link()]) as bed, bed.inside(bed.host):
        with pc.UdpProber("127.0.0.1", timeout=1) as prober:
            prober._sendto(prober.sock, b"x", 9)      # its answer: read by no one
            time.sleep(0.05)
            sample = prober.probe(1, 100)
    assert sample.kind == "port-unreachable" and sample.rtt_ns > 0


@pytest.mark.netns
def test_unreachable_destination(bed):
    """r1 has no route to 198.19.255.1 and answers network-unreachable (the probe never leaves
    the test bed)."""
    res = pchar(bed, "-n", "-g", "0", "198.19.255.1")
    res.stderr = res.stderr.split("\n", 1)[1]
    line = assert_one_line_error(res, "pchar")
    assert "hop 1 (198.18.0.2) answered net-unreachable" in line


@pytest.mark.netns
def test_no_route(bed):
    res = pchar(bed, "-n", "198.19.255.1", ns=bed.routers[0])   # routers have no default route
    assert "no route to 198.19.255.1" in assert_one_line_error(res, "pchar")


@pytest.mark.parametrize("args,code,text", [
    (["-p", "sctp", "198.18.2.2"], 2, "'sctp' is not one of 'udp', 'icmp', 'tcp'"),
    (["-a", "median", "198.18.2.2"], 2, "'median' is not one of 'lowmean', 'lsq', 'kendall', 'lms'"),
    (["-4", "-6", "198.18.2.2"], 2, "exclude each other"),
    (["-s", "5", "-H", "3", "198.18.2.2"], 2, "beyond the last hop"),
    (["-m", "80", "-I", "32", "198.18.2.2"], 2, "no room"),
    (["-6", "198.18.2.2"], 1, "is not an IPv6 address"),
    (["--source", "198.18.9.9", "198.18.2.2"], 1, "198.18.9.9: Cannot assign requested address"),
])
@pytest.mark.netns
def test_bad_input_is_one_line(bed, args, code, text):
    assert text in assert_one_line_error(pchar(bed, *args), "pchar", code)


@pytest.mark.netns
def test_silent_hop_is_a_star_and_its_link_folds_into_the_next(bed):
    r1 = bed.routers[0]
    for cmd in ("add table inet nkpchar",
                "add chain inet nkpchar out { type filter hook output priority 0 ; }",
                "add rule inet nkpchar out icmp type time-exceeded drop"):
        bed.run(r1, ["nft", cmd])
    try:
        hops, summary = pchar_json(bed, "-t", "0.3", *SHORT_PLAN, bed.target_addr(4))
    finally:
        bed.run(r1, ["nft", "delete table inet nkpchar"])
    assert hops[0]["address"] is None and hops[0]["note"] == "no answer"
    assert hops[0]["probes"] == pc.SILENT_AFTER
    series = 1 / (1 / PATH[0].rate_bps + 1 / PATH[1].rate_bps)  # hop 2 measured against hop 0
    assert hops[1]["bandwidth_bps"] == pytest.approx(series, rel=COARSE_TOL)
    assert hops[2]["bandwidth_bps"] == pytest.approx(PATH[2].rate_bps, rel=COARSE_TOL)


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.mark.netns
def test_udp_needs_no_privilege_and_raw_kinds_say_they_do(bed):
    res = bed.run(bed.host, [*NOBODY, str(NETKIT), "pchar", "--json", "-n", "-g", "0", "-R", "2",
                             "-I", "256", bed.target_addr(4)], check=False)
    assert res.returncode == 0, res.stderr
    hops = [json.loads(l) for l in res.stdout.splitlines()][:-1]
    assert [h["address"] for h in hops] == bed.hop_addrs(4)
    res = bed.run(bed.host, [*NOBODY, str(NETKIT), "pchar", "-p", "icmp", bed.target_addr(4)],
                  check=False)
    assert "raw sockets need root" in assert_one_line_error(res, "pchar")


@pytest.mark.netns
def test_loss_counts_exactly_the_probes_the_target_dropped(bed):
    """nft on the target drops every 4th probe that reaches it (numgen counts them itself)."""
    t = bed.target
    for cmd in ("add table inet nkloss",
                "add chain inet nkloss in { type filter hook input priority 0 ; }",
                "add rule inet nkloss in udp dport 32768 numgen inc mod 4 == 0 counter drop"):
        bed.run(t, ["nft", cmd])
    try:
        hops, _ = pchar_json(bed, "-R", "2", "-I", "256", "-t", "0.3", bed.target_addr(4))
        listing = bed.run(t, ["nft", "list", "table", "inet", "nkloss"]).stdout
    finally:
        bed.run(t, ["nft", "delete table inet nkloss"])
    dropped = int(listing.split("counter packets ")[1].split()[0])
    assert hops[2]["probes"] == 10 and dropped == 3           # probes 0, 4 and 8 at hop 3
    assert hops[2]["answered"] == 7 and hops[2]["loss_pct"] == 30.0
    assert hops[0]["loss_pct"] == hops[1]["loss_pct"] == 0


@pytest.mark.parametrize("proto", ["udp", "icmp"])
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.netns
def test_probe_above_a_router_mtu_is_a_clear_error(family, proto):
    """The link r1 -> target carries 1400 bytes at most: r1 answers frag-needed / packet-too-big
    to the 1500-byte probes that reach it with TTL 2."""
    if os.geteuid() != 0:
        require_or_skip("needs root")
    with TestBed([Link(), Link()]) as bed:
        bed.run(bed.routers[0], ["ip", "link", "set", "l1t", "mtu", "1400"])
        bed.run(bed.target, ["ip", "link", "set", "l1h", "mtu", "1400"])
        res = pchar(bed, f"-{family}", "-p", proto, "-n", "-g", "0", bed.target_addr(family))
        ok = pchar(bed, f"-{family}", "-p", proto, "-n", "-g", "0", "-m", "1400",
                   bed.target_addr(family))
    res.stderr = res.stderr.split("\n", 1)[1]
    line = assert_one_line_error(res, "pchar")
    assert f"hop 2 ({bed.hop_addrs(family)[0]}) cannot forward 1500-byte probes (MTU 1400)" in line
    assert ok.returncode == 0, ok.stderr


@pytest.mark.netns
def test_rate_limited_router_is_detected():
    """Kernel defaults on r1 (icmp_ratelimit 1000 ms, a burst of 6 per peer): the router answers
    the first time-exceeded at once, then about one a second."""
    if os.geteuid() != 0:
        require_or_skip("needs root")
    with TestBed([Link(), Link()], lift_icmp_limits=False) as bed:
        res = pchar(bed, "--json", "-n", "-g", "0", "-t", "0.2", "-R", "2", "-I", "200",
                    "-H", "1", bed.target_addr(4))
    hop = json.loads(res.stdout.splitlines()[0])
    assert hop["address"] == bed.hop_addrs(4)[0] and hop["answer"] == "time-exceeded"
    assert hop["rate_limited"] and "rate-limited" in hop["note"]
    assert 0 < hop["answered"] < hop["probes"] == 14
