"""Counters and log2 histograms by key (a process, a process and a protocol...), shown for each
INTERVAL and for the whole run, the same way in every tool that keeps them:

    text  a blank line, a title (the interval's time, or the run's length), then a table of
          counters, or one histogram per key in the form of bpftrace's hist();
    JSON  one object per key: type (the tool's record name, or "hist"), scope ("interval" or
          "run"), interval_s or duration_s, the key's fields, then the counters, or count,
          <value>_sum, <value>_avg and <value>: the buckets (render.hist.hist_json).

The tool orders the rows and decides what a key shows; these classes only lay them out."""
from __future__ import annotations

from typing import Sequence

from netkit.render.hist import hist_json
from netkit.render.output import Column


def _scope_fields(scope: str, seconds: float) -> dict:
    return {"scope": scope,
            ("interval_s" if scope == "interval" else "duration_s"): round(seconds, 3)}


class CountTable:
    """Rows of (text cells, JSON fields), one per key."""

    def __init__(self, out, record: str, columns: Sequence[Column], empty: str):
        self.out, self.record, self.columns, self.empty = out, record, columns, empty

    def show(self, rows: list[tuple[list, dict]], scope: str, seconds: float, title: str) -> None:
        if self.out.mode == "json":
            for _, fields in rows:
                self.out.record({"type": self.record, **_scope_fields(scope, seconds), **fields})
            return
        self.out.line()
        self.out.line(title, style="bold")
        if rows:
            self.out.table(self.columns, [cells for cells, _ in rows])
        else:
            self.out.line(self.empty)


class HistList:
    """Histograms of one quantity: `value` names it in JSON keys (size -> size_bytes), `unit`
    is its unit (bytes, us, ms)."""

    def __init__(self, out, value: str, unit: str, empty: str):
        self.out, self.key, self.unit, self.empty = out, f"{value}_{unit}", unit, empty

    def show(self, hists: list[tuple[str, dict, object]], scope: str, seconds: float,
             title: str) -> None:
        """hists: (text label, JSON fields, Log2Hist) per key, in the order to show."""
        if self.out.mode == "json":
            for _, fields, hist in hists:
                self.out.record({"type": "hist", **_scope_fields(scope, seconds), **fields,
                                 "count": hist.count, f"{self.key}_sum": hist.sum,
                                 f"{self.key}_avg": round(hist.mean, 3),
                                 self.key: hist_json(hist.slots)})
            return
        self.out.line()
        self.out.line(title, style="bold")
        if not hists:
            self.out.line(self.empty)
        for label, _, hist in hists:
            self.out.line()
            self.out.hist(f"{label}: count {hist.count}, average {hist.mean:.1f} {self.unit}",
                          hist.slots)


def process_hists(hists: dict, kind_field: str | None) -> list[tuple[str, dict, object]]:
    """HistList rows of per-process histograms ({engine.perprocess.ProcKey: Log2Hist}), by
    process then kind; `kind_field` is the JSON key naming the kind (None: one kind only)."""
    rows = []
    for key in sorted(hists, key=lambda k: (k.pid, k.comm, k.kind)):
        label = f"PID {key.pid} {key.comm}" + (f", {key.kind}" if kind_field else "")
        fields = {"pid": key.pid, "comm": key.comm, **({kind_field: key.kind} if kind_field
                                                       else {})}
        rows.append((label, fields, hists[key]))
    return rows
