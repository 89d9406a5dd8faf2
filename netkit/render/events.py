"""Tools that print one line per event: a header and fixed-width rows in text, one object per
event with --json, and at the end the events that never reached netkit (a summary object with
lost_events in JSON, a line on stderr in text). Events that carry a "result" (a syscall's: OK,
ECONNREFUSED...) are counted by it for the summary."""
from __future__ import annotations

import time
from collections import Counter
from typing import Sequence

from netkit.render.output import Column


class EventLines:
    """Rows under a header printed once. With `timestamps` (-t) each row starts with TIME(s),
    the seconds from the start of tracing to the event (a bpf_ktime_get_ns() stamp)."""

    def __init__(self, out, columns: Sequence[Column], timestamps: bool = False):
        from netkit.render.fields import KernelClock
        from netkit.render.output import StreamTable
        self.out = out
        self.clock = KernelClock()
        self.timestamps = timestamps
        self.start_ns = time.monotonic_ns()        # CLOCK_MONOTONIC, as bpf_ktime_get_ns()
        lead = [Column("TIME(s)", 9, "<", style="dim")] if timestamps else []
        self.table = StreamTable(out, lead + list(columns))
        self.count = 0
        self.results: Counter = Counter()

    def event(self, record: dict, cells: list, stamp_ns: int) -> None:
        """One event: `record` (its JSON object, without ts) or the row `cells`."""
        self.count += 1
        if "result" in record:
            self.results[record["result"]] += 1
        if self.out.mode == "json":
            from netkit.render.fields import iso
            self.out.record({"ts": iso(self.clock.wall(stamp_ns), "microseconds"), **record})
            return
        lead = [f"{(stamp_ns - self.start_ns) / 1e9:.6f}"] if self.timestamps else []
        self.table.row(lead + cells)

    def summary(self, tool: str, seconds: float, lost: int, what: str = "events",
                **fields) -> None:
        if self.out.mode == "json":
            results = {"results": dict(self.results)} if self.results else {}
            self.out.record({"type": "summary", "duration_s": round(seconds, 3),
                             "events": self.count, **results, **fields, "lost_events": lost})
        self.out.lost(tool, lost, what)
