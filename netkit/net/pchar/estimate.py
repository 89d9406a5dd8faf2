"""Per-hop lines RTT = intercept + slope x bytes, and each link from the difference of the lines
of the two hops around it, with 95% intervals.

Two ways to get a hop's line:
- pathchar's: the smallest RTT at each size, and a line through those points (least squares,
  Theil-Sen or least median of squares); its interval from the residuals (n - 2 degrees of
  freedom). A minimum rests on the one luckiest probe of each size.
- lowmean (netkit's default): at each size, the mean of the lower part of the RTTs (from the
  2nd to the 40th percentile), weighted least squares through those means, the standard error
  of each mean from the winsorized variance of its sample. It uses hundreds of probes where the
  minimum uses one, and needs only the smallest and the largest size (see walk.py for why).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import median

from netkit.net.pchar.probes import Sample

_T95 = [(1, 12.71), (2, 4.30), (3, 3.18), (4, 2.78), (5, 2.57), (6, 2.45), (7, 2.36), (8, 2.31),
        (9, 2.26), (10, 2.23), (12, 2.18), (15, 2.13), (20, 2.09), (30, 2.04), (60, 2.00)]


def t95(df: int) -> float:
    """Two-sided 95% quantile of Student's t (conservative: the entry at or below df)."""
    q = 1.96
    for d, t in reversed(_T95):
        if df >= d:
            return q if d == 60 else t
        q = t
    return _T95[0][1]


@dataclass
class Fit:
    """The line RTT = intercept + slope * bytes of one hop, with standard errors."""
    slope: float                    # seconds per byte (probe + answer)
    intercept: float                # seconds
    se_slope: float
    se_intercept: float
    r2: float | None                # None where the line goes through its points by design
    n: int                          # points (distinct sizes)
    points: list[tuple[float, float]] = field(default_factory=list)
    method: str = "lsq"
    df: int | None = None           # degrees of freedom of the standard errors (None: n - 2)
    # The intercept latency comes from: pathchar's line through minima serves both; lowmean's
    # latency takes a lower statistic (the lowest tenth of each size) than its slope does, so
    # that queueing seen by most probes does not count as latency.
    latency_intercept: float | None = None
    se_latency_intercept: float | None = None

    def __post_init__(self):
        if self.df is None:
            self.df = self.n - 2
        if self.latency_intercept is None:
            self.latency_intercept, self.se_latency_intercept = self.intercept, self.se_intercept


def min_rtt_points(samples: list[Sample]) -> list[tuple[float, float]]:
    """(probe + answer bytes, smallest RTT in s) for every probe size that was answered."""
    best: dict[int, Sample] = {}
    for s in samples:
        if s.rtt_ns is not None and (s.size not in best or s.rtt_ns < best[s.size].rtt_ns):
            best[s.size] = s
    return sorted((s.size + s.reply_size, s.rtt_ns / 1e9) for s in best.values())


def _line_stats(points, slope: float, intercept: float) -> Fit:
    """Standard errors and r² of a given line through `points`, from its residuals."""
    n = len(points)
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    ssr = sum((y - intercept - slope * x) ** 2 for x, y in points)
    s2 = ssr / (n - 2) if n > 2 else 0.0
    se_slope = math.sqrt(s2 / sxx) if sxx > 0 else math.inf
    se_int = math.sqrt(s2 * (1 / n + mx * mx / sxx)) if sxx > 0 else math.inf
    r2 = 1 - ssr / syy if syy > 0 else 0.0
    return Fit(slope, intercept, se_slope, se_int, r2, n, list(points))


def fit_lsq(points) -> Fit:
    """Ordinary least squares (pchar's default)."""
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return _line_stats(points, slope, my - slope * mx)


def fit_kendall(points) -> Fit:
    """Theil-Sen: the median of pairwise slopes (the estimator tied to Kendall's tau)."""
    slopes = [(y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(points)
              for x2, y2 in points[i + 1:] if x2 != x1]
    slope = median(slopes) if slopes else 0.0
    return _line_stats(points, slope, median(y - slope * x for x, y in points))


def fit_lms(points) -> Fit:
    """Least median of squares: the line through two points with the smallest median squared
    residual (exhaustive; the point sets here are small)."""
    best = None
    for i, (x1, y1) in enumerate(points):
        for x2, y2 in points[i + 1:]:
            if x2 == x1:
                continue
            b = (y2 - y1) / (x2 - x1)
            a = y1 - b * x1
            m = median((y - a - b * x) ** 2 for x, y in points)
            if best is None or m < best[0]:
                best = (m, b, a)
    if best is None:
        return fit_lsq(points)
    return _line_stats(points, best[1], best[2])


# The part of each size's RTTs that lowmean averages, as quantiles. The lowest 2% go: a probe
# can come back early when its TX stamp was late. Up to 40%: the lower part of the distribution
# holds the probes that met the fewest delays, and is wide enough to average many of them.
# Five paths recorded on the test bed in quiet and in busy hours (20 runs each, 150 rounds of
# the two end sizes per hop), every link: rms error 0.22-0.77% (worst 2.9%) with 2%..40%,
# 0.22-0.79% with 0..20%, against 0.65-4.4% (worst 29%) with the minimum of the same probes.
LOW_TRIM = (0.02, 0.40)
LATENCY_TRIM = (0.0, 0.10)


def low_mean(values: list[float], lo: float, hi: float) -> tuple[float, float, int]:
    """Mean of the order statistics from quantile `lo` up to `hi` of `values`, its standard
    error and how many values it averages.

    The standard error is that of a trimmed mean: the standard deviation of the sample
    winsorized at the two cut points, over sqrt(n) and over the fraction kept (its influence
    function is the winsorized value, centred, divided by hi - lo)."""
    v = sorted(values)
    n = len(v)
    first = int(lo * n)
    last = max(first + 1, math.ceil(hi * n))        # one past the last value averaged
    kept = v[first:last]
    mean = sum(kept) / len(kept)
    if n < 2:
        return mean, math.inf, len(kept)
    low, high = v[first], v[last - 1]
    wins = [min(max(x, low), high) for x in v]
    mw = sum(wins) / n
    var = sum((x - mw) ** 2 for x in wins) / (n - 1)
    return mean, math.sqrt(var / n) / (len(kept) / n), len(kept)


def _weighted_line(points: list[tuple[float, float, float]]) -> tuple[float, float, float, float]:
    """Weighted least squares through (x, y, standard error of y): slope, intercept and their
    standard errors, with the errors of the points taken as known."""
    w = [1 / (se * se) if se > 0 else 1e30 for _, _, se in points]
    sw = sum(w)
    mx = sum(wi * x for wi, (x, _, _) in zip(w, points)) / sw
    my = sum(wi * y for wi, (_, y, _) in zip(w, points)) / sw
    sxx = sum(wi * (x - mx) ** 2 for wi, (x, _, _) in zip(w, points))
    slope = sum(wi * (x - mx) * (y - my) for wi, (x, y, _) in zip(w, points)) / sxx
    return slope, my - slope * mx, math.sqrt(1 / sxx), math.sqrt(1 / sw + mx * mx / sxx)


def fit_lowmean(samples: list[Sample]) -> Fit | None:
    """lowmean: each size's lower RTTs averaged (LOW_TRIM), a weighted line through them; the
    latency intercept from the lowest tenth (LATENCY_TRIM). Needs two sizes with 4 answers each.
    Its degrees of freedom (for Student's t) are those of the smallest trimmed mean: the
    values it keeps less one (Tukey and McLaughlin)."""
    by_size: dict[int, tuple[int, list[float]]] = {}
    for s in samples:
        if s.rtt_ns is not None:
            by_size.setdefault(s.size, (s.size + s.reply_size, []))[1].append(s.rtt_ns / 1e9)
    sizes = [(x, rtts) for x, rtts in by_size.values() if len(rtts) >= 4]
    if len(sizes) < 2 or len({x for x, _ in sizes}) < 2:
        return None
    body, floor, kept = [], [], []
    for x, rtts in sorted(sizes):
        m, se, k = low_mean(rtts, *LOW_TRIM)
        body.append((x, m, se))
        kept.append(k)
        m, se, _ = low_mean(rtts, *LATENCY_TRIM)
        floor.append((x, m, se))
    slope, intercept, se_slope, se_int = _weighted_line(body)
    _, lat_int, _, se_lat_int = _weighted_line(floor)
    return Fit(slope, intercept, se_slope, se_int, None, len(body),
               [(x, y) for x, y, _ in body], method="lowmean", df=max(1, min(kept) - 1),
               latency_intercept=lat_int, se_latency_intercept=se_lat_int)


ESTIMATORS = {"lowmean": fit_lowmean, "lsq": fit_lsq, "kendall": fit_kendall, "lms": fit_lms}


def fit_hop(samples: list[Sample], estimator: str = "lowmean") -> Fit | None:
    if estimator == "lowmean":
        return fit_lowmean(samples)
    points = min_rtt_points(samples)
    if len(points) < 3:
        return None
    fit = ESTIMATORS[estimator](points)
    fit.method = estimator
    return fit


@dataclass
class LinkEstimate:
    """Link k (between hop k-1 and hop k) from the fits of the two hops."""
    bandwidth_bps: float | None     # None when unreliable
    bandwidth_low_bps: float | None  # 95% interval (high None: unbounded)
    bandwidth_high_bps: float | None
    latency_s: float | None         # one way
    latency_ci_s: float | None      # half-width of its 95% interval
    reliable: bool
    reason: str = ""                # why it is not reliable
    df: int | None = None           # degrees of freedom of the Student's t behind the intervals

    @property
    def rel_halfwidth(self) -> float:
        """Half the relative width of the bandwidth interval (inf when unbounded)."""
        if not self.reliable or self.bandwidth_high_bps is None:
            return math.inf
        return (self.bandwidth_high_bps - self.bandwidth_low_bps) / 2 / self.bandwidth_bps


def estimate_link(fit: Fit | None, prev: Fit | None, min_r2: float = 0.9) -> LinkEstimate:
    """Bandwidth = 8 / (slope_k - slope_{k-1}); latency = (intercept_k - intercept_{k-1}) / 2.
    Unreliable (no number shown) when the slope difference is not clearly above zero at 95%,
    when a line through minima explains them poorly, or when there are too few answers."""
    if fit is None:
        return LinkEstimate(None, None, None, None, None, False, "too few answers")
    ps, pse, pi, pise = (prev.slope, prev.se_slope, prev.latency_intercept,
                         prev.se_latency_intercept) if prev else (0.0, 0.0, 0.0, 0.0)
    df = min(fit.df, prev.df if prev else fit.df)
    t = t95(df)
    d = fit.slope - ps
    se = math.hypot(fit.se_slope, pse)
    lat = (fit.latency_intercept - pi) / 2
    lat_ci = t * math.hypot(fit.se_latency_intercept, pise) / 2
    if d <= 0:
        return LinkEstimate(None, None, None, lat, lat_ci, False, "negative slope difference", df)
    if fit.r2 is not None and fit.r2 < min_r2:
        return LinkEstimate(None, None, None, lat, lat_ci, False, f"poor fit (r2 {fit.r2:.2f})", df)
    if d - t * se <= 0:
        return LinkEstimate(None, 8 / (d + t * se), None, lat, lat_ci, False,
                            "interval spans zero slope difference", df)
    return LinkEstimate(8 / d, 8 / (d + t * se), 8 / (d - t * se), lat, lat_ci, True, "", df)
