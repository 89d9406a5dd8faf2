"""log2 histograms as text in the form of bpftrace's hist() (a range, a count and a bar), and as
JSON.

log2 slot i holds values in [2^i, 2^(i+1) - 1], slot 0 holds 0 and 1 (see bpf_programs/common.h),
so slot i is labelled [2^i, 2^(i+1)) and slot 0 [0, 2).
"""
from __future__ import annotations

from typing import Sequence

BAR_WIDTH = 52


def _short(n: int) -> str:
    """1024 -> 1K, 1048576 -> 1M, as bpftrace labels its buckets."""
    for suffix, size in (("P", 1 << 50), ("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{suffix}"
    return str(n)


def log2_label(slot: int) -> str:
    low = 0 if slot == 0 else 1 << slot
    return f"[{_short(low)}, {_short(1 << (slot + 1))})"


def _bars(counts: Sequence[int]) -> list[str]:
    peak = max(counts) if counts else 0
    return ["@" * (c * BAR_WIDTH // peak) if peak else "" for c in counts]


def format_log2(slots: Sequence[int]) -> list[tuple[str, int, str]]:
    """(label, count, bar) for each slot from the first non-empty one to the last."""
    used = [i for i, c in enumerate(slots) if c]
    if not used:
        return []
    span = range(used[0], used[-1] + 1)
    counts = [slots[i] for i in span]
    return [(log2_label(i), c, bar) for i, c, bar in zip(span, counts, _bars(counts))]


def hist_json(slots: Sequence[int]) -> list[dict]:
    """A log2 histogram in JSON, the same shape in every tool: the non-empty buckets as objects
    {"low", "high", "count"}, bucket [low, high). The unit is in the name of the key holding
    the list (latency_us, hist_us)."""
    return [{"low": 0 if i == 0 else 1 << i, "high": 1 << (i + 1), "count": c}
            for i, c in enumerate(slots) if c]
