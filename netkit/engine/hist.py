"""Histograms read from BPF maps: `struct log2_hist` values (common.h) as Log2Hist objects."""
from __future__ import annotations

from dataclasses import dataclass, field

MAX_SLOTS = 32      # common.h's MAX_SLOTS (tests/test_engine.py ties the two)


@dataclass
class Log2Hist:
    """Counts per log2 slot (slot i holds [2^i, 2^(i+1)), slot 0 holds 0 and 1) with the exact
    count and sum of the values recorded. Cumulative values subtract (the change since an
    earlier read) and add (totals); a histogram is true when it holds any value."""
    slots: list[int] = field(default_factory=lambda: [0] * MAX_SLOTS)
    count: int = 0
    sum: int = 0

    @classmethod
    def from_value(cls, value) -> "Log2Hist":
        """From a struct log2_hist, or a per-CPU list of them (summed)."""
        parts = value if isinstance(value, list) else [value]
        return sum((cls(list(part.slots), part.count, part.sum) for part in parts), cls())

    @classmethod
    def of_values(cls, values) -> "Log2Hist":
        """Integer values slotted in Python as common.h's log2_slot() does in the kernel."""
        hist = cls()
        for value in values:
            hist.slots[min(MAX_SLOTS - 1, max(0, int(value).bit_length() - 1))] += 1
            hist.count += 1
            hist.sum += value
        return hist

    def __add__(self, other: "Log2Hist") -> "Log2Hist":
        return Log2Hist([a + b for a, b in zip(self.slots, other.slots)],
                        self.count + other.count, self.sum + other.sum)

    def __sub__(self, earlier: "Log2Hist") -> "Log2Hist":
        return Log2Hist([a - b for a, b in zip(self.slots, earlier.slots)],
                        self.count - earlier.count, self.sum - earlier.sum)

    def __bool__(self) -> bool:
        return self.count != 0

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else 0.0
