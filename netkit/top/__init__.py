"""netkit top: the network stack live on one screen, fed by netkit's BPF objects.

panels   what is shown: panels of rows, columns, sort orders, the filter
sources  where rows come from (one source per panel; how to add one is said there)
screen   the interactive curses screen; snapshots (batch text, NDJSON) are in Top
"""
from __future__ import annotations

import contextlib

from netkit.top.panels import Panel
from netkit.top.sources import SOURCES, Selection, open_or_explain


class Top:
    """Every panel with its source; `refresh(seconds)` reads the interval that just ended."""

    def __init__(self, selection: Selection, sources=None):
        self.selection = selection
        self.sources = [source() for source in (sources or SOURCES)]
        self.panels: list[Panel] = [source.panel() for source in self.sources]
        self.filter = ""                # the screen's `/`

    def open(self, stack: contextlib.ExitStack) -> None:
        self.sources = [open_or_explain(source, stack, self.selection) for source in self.sources]

    def refresh(self, seconds: float) -> None:
        for source, panel in zip(self.sources, self.panels):
            panel.rows, panel.note = source.read(seconds, self.filter)

    def json(self, rows: int | None) -> dict:
        """One interval's object: every panel's rows (the first `rows` in its order), with the
        values the screen shows and no formatting."""
        return {panel.key: [{k: v for k, v in row.items()} for row in panel.ordered()[:rows]]
                for panel in self.panels}

    def text(self, out, rows: int | None) -> None:
        """One plain snapshot, panel after panel (like top -b)."""
        for n, panel in enumerate(self.panels, 1):
            out.line()
            title = f"{n} {panel.title} (by {panel.sort_name})"
            out.line(title + (f": {panel.note}" if panel.note else ""))
            shown = panel.ordered()[:rows]
            if not shown:
                out.line("  (none)")
                continue
            out.line(" ".join(f"{c.header:{c.align}{c.width}}" for c in panel.columns).rstrip())
            for row in shown:
                out.line(" ".join(f"{c.fmt(row.get(c.key)):{c.align}{c.width}}"
                                  for c in panel.columns).rstrip())
