"""What an interval tool hands to exporters each interval: named counters and log2 histograms.

Counters are cumulative since the tool started (Prometheus counters must never go down); a
histogram carries its log2 slots (slot i holds values in [2^i, 2^(i+1) - 1], slot 0 holds 0 and 1)
in the tool's unit, the exact sum of the observed values from a BPF sum counter, and the unit's
size in seconds so exporters can publish seconds (or, for a histogram of sizes, its size in
the base unit it names: bytes).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Counter:
    name: str                       # e.g. "sockstat_connect_calls" (no prefix, no _total suffix)
    help: str
    value: float                    # cumulative since start
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Histogram:
    name: str                       # e.g. "soconnlat_latency" (exported as seconds)
    help: str
    slots: tuple[int, ...]          # cumulative counts per log2 slot, in `unit`s
    sum: float                      # cumulative sum of observed values, in `unit`s
    unit_seconds: float             # 1e-6 when slots count microseconds (1.0 for bytes)
    labels: dict[str, str] = field(default_factory=dict)
    unit: str = "seconds"           # the base unit exporters publish: "seconds" or "bytes"


@dataclass
class Snapshot:
    tool: str
    ts: float                       # unix time of the end of the interval
    counters: list[Counter] = field(default_factory=list)
    histograms: list[Histogram] = field(default_factory=list)
