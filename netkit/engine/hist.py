"""Histograms read from BPF maps: `struct log2_hist` values (common.h) as Log2Hist objects."""
from __future__ import annotations

from dataclasses import dataclass, field

MAX_SLOTS = 32


@dataclass
class Log2Hist:
    slots: list[int] = field(default_factory=lambda: [0] * MAX_SLOTS)
    count: int = 0
    sum: int = 0

    @classmethod
    def from_value(cls, value) -> "Log2Hist":
        """From a struct log2_hist, or a per-CPU list of them (summed)."""
        parts = value if isinstance(value, list) else [value]
        hist = cls()
        for part in parts:
            hist.add(cls(list(part.slots), part.count, part.sum))
        return hist

    def add(self, other: "Log2Hist") -> None:
        self.slots = [a + b for a, b in zip(self.slots, other.slots)]
        self.count += other.count
        self.sum += other.sum

    def minus(self, earlier: "Log2Hist") -> "Log2Hist":
        """What was added since `earlier` (for per-interval views of cumulative maps)."""
        return Log2Hist([a - b for a, b in zip(self.slots, earlier.slots)],
                        self.count - earlier.count, self.sum - earlier.sum)

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else 0.0
