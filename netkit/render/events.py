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
    the seconds from the start of tracing to the event (a bpf_ktime_get_ns() stamp); with
    `time_of_day` (bcc's -T) with TIME, the event's HH:MM:SS, before it. With `csv` (bcc
    tcplife's -s) text rows are comma-separated values under a header line of the same kind."""

    def __init__(self, out, columns: Sequence[Column], timestamps: bool = False,
                 time_of_day: bool = False, csv: bool = False):
        from netkit.render.fields import KernelClock
        from netkit.render.output import StreamTable
        self.out = out
        self.clock = KernelClock()
        self.timestamps, self.time_of_day, self.csv = timestamps, time_of_day, csv
        self.start_ns = time.monotonic_ns()        # CLOCK_MONOTONIC, as bpf_ktime_get_ns()
        lead = (([Column("TIME", 8, "<", style="dim")] if time_of_day else []) +
                ([Column("TIME(s)", 9, "<", style="dim")] if timestamps else []))
        self.columns = lead + list(columns)
        self.table = StreamTable(out, self.columns)
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
        from netkit.render.fields import clock
        lead = (([clock(self.clock.wall(stamp_ns))] if self.time_of_day else []) +
                ([f"{(stamp_ns - self.start_ns) / 1e9:.6f}"] if self.timestamps else []))
        if not self.csv:
            self.table.row(lead + cells)
            return
        if self.count == 1:
            self.out.line(",".join(c.header for c in self.columns))
        self.out.line(",".join(col.fmt(v) for col, v in zip(self.columns, lead + cells)))

    def summary(self, tool: str, seconds: float, lost: int, what: str = "events",
                **fields) -> None:
        if self.out.mode == "json":
            results = {"results": dict(self.results)} if self.results else {}
            self.out.record({"type": "summary", "duration_s": round(seconds, 3),
                             "events": self.count, **results, **fields, "lost_events": lost})
        self.out.lost(tool, lost, what)
