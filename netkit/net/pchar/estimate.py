"""pathchar's estimator: the line min-RTT = intercept + slope x bytes fitted per hop (least
squares, Theil-Sen or least median of squares), and each link from the difference of the fits
of the two hops around it, with 95% intervals."""
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
    """The line min-RTT = intercept + slope * bytes of one hop, with standard errors."""
    slope: float                    # seconds per byte (probe + answer)
    intercept: float                # seconds
    se_slope: float
    se_intercept: float
    r2: float
    n: int                          # points (distinct sizes)
    points: list[tuple[float, float]] = field(default_factory=list)


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


ESTIMATORS = {"lsq": fit_lsq, "kendall": fit_kendall, "lms": fit_lms}


def fit_hop(samples: list[Sample], estimator: str = "lsq") -> Fit | None:
    points = min_rtt_points(samples)
    if len(points) < 3:
        return None
    return ESTIMATORS[estimator](points)


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

    @property
    def rel_halfwidth(self) -> float:
        """Half the relative width of the bandwidth interval (inf when unbounded)."""
        if not self.reliable or self.bandwidth_high_bps is None:
            return math.inf
        return (self.bandwidth_high_bps - self.bandwidth_low_bps) / 2 / self.bandwidth_bps


def estimate_link(fit: Fit | None, prev: Fit | None, min_r2: float = 0.9) -> LinkEstimate:
    """Bandwidth = 8 / (slope_k - slope_{k-1}); latency = (intercept_k - intercept_{k-1}) / 2.
    Unreliable (no number shown) when the slope difference is not clearly above zero at 95%,
    when the fit explains the data poorly, or when there are too few answered sizes."""
    if fit is None:
        return LinkEstimate(None, None, None, None, None, False, "too few answers")
    ps, pse, pi, pise = (prev.slope, prev.se_slope, prev.intercept, prev.se_intercept) \
        if prev else (0.0, 0.0, 0.0, 0.0)
    t = t95(min(fit.n, prev.n if prev else fit.n) - 2)
    d = fit.slope - ps
    se = math.hypot(fit.se_slope, pse)
    lat = (fit.intercept - pi) / 2
    lat_ci = t * math.hypot(fit.se_intercept, pise) / 2
    if d <= 0:
        return LinkEstimate(None, None, None, lat, lat_ci, False, "negative slope difference")
    if fit.r2 < min_r2:
        return LinkEstimate(None, None, None, lat, lat_ci, False, f"poor fit (r2 {fit.r2:.2f})")
    if d - t * se <= 0:
        return LinkEstimate(None, 8 / (d + t * se), None, lat, lat_ci, False,
                            "interval spans zero slope difference")
    return LinkEstimate(8 / d, 8 / (d + t * se), 8 / (d - t * se), lat, lat_ci, True)
