"""What netkit top shows, apart from how: panels of rows, their columns, sort orders and the
filter. A source (netkit.top.sources) fills a panel's rows each interval with plain values (the
JSON keys); the screen, the batch text and the NDJSON lines all render the same rows."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


def si(value: float | None, digits: int = 3) -> str:
    """A rate in SI steps with `digits` significant digits: 950, 9.99k, 12.5M, 1.00G."""
    if value is None:
        return "-"
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            scaled = value / factor
            return f"{scaled:.{max(0, digits - len(str(int(scaled))))}f}{suffix}"
    return f"{value:.0f}" if value == int(value) or abs(value) >= 10 else f"{value:.1f}"


def count(value) -> str:
    return "-" if value is None else str(value)


@dataclass
class Col:
    key: str                            # the row's key (and the JSON key)
    header: str
    width: int
    fmt: Callable[[object], str] = count
    align: str = ">"


@dataclass
class Panel:
    key: str                            # its key in the JSON object of an interval
    title: str
    columns: list[Col]
    sorts: list[tuple[str, str]]        # (name, row key) that `s` cycles through, largest first
    filterable: bool = True             # rows carry a comm and ports that `/` matches
    rows: list[dict] = field(default_factory=list)
    note: str = ""                      # one line under the title: totals, what is not seen
    sort: int = 0                       # index in sorts

    @property
    def sort_name(self) -> str:
        return self.sorts[self.sort][0]

    def next_sort(self) -> None:
        self.sort = (self.sort + 1) % len(self.sorts)

    def ordered(self, text: str = "") -> list[dict]:
        """The rows that match the filter `text`, in the panel's sort order."""
        key = self.sorts[self.sort][1]
        rows = [r for r in self.rows if not text or not self.filterable or matches(r, text)]
        return sorted(rows, key=lambda r: (-(r.get(key) or 0), _tiebreak(r)))


def _tiebreak(row: dict) -> tuple:
    return (row.get("pid") or 0, str(row.get("comm", "")), str(row.get("dev", "")),
            str(row.get("name", "")), row.get("lport") or 0, row.get("rport") or 0)


PORT_KEYS = ("lport", "rport", "port")


def matches(row: dict, text: str) -> bool:
    """`/` filters by process name (a part of it, any case) or port (all digits: a local or
    remote port equal to it)."""
    text = text.strip()
    if text.isdecimal():
        return any(row.get(k) == int(text) for k in PORT_KEYS)
    return text.lower() in str(row.get("comm", "")).lower()
