"""Where a tool's output goes and in which form: rich on a terminal, plain columns when piped or
with --no-color/NO_COLOR, NDJSON with --json.

rich draws box characters and wraps to 80 columns even when stdout is a file, so the plain form is
written here by hand; rich is imported only when it is used (it costs start-up time).
"""
from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from netkit.render.fields import iso
from netkit.render.hist import format_log2


def _writes(method):
    """A failed write to stdout becomes one line (a full disk, a closed descriptor) or, for a
    closed pipe, a quiet exit: see netkit.cli.tool."""
    @functools.wraps(method)
    def write(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            from netkit.cli.tool import output_failed
            raise output_failed(exc) from None
    return write


@dataclass
class Column:
    header: str
    width: int = 8
    align: str = ">"                  # ">" right (numbers), "<" left (names)
    fmt: Callable[[Any], str] = str
    style: str = ""                   # rich style on a terminal


class Output:
    def __init__(self, json_mode: bool = False, no_color: bool = False, stream=None):
        self.stream = stream or sys.stdout
        if json_mode:
            self.mode = "json"
        elif no_color or "NO_COLOR" in os.environ or not self.stream.isatty():
            self.mode = "plain"
        else:
            self.mode = "rich"
        self._console = None

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console
            self._console = Console(file=self.stream, highlight=False)
        return self._console

    # -- messages for people (stderr, so stdout stays data) -------------------------------------
    def note(self, text: str) -> None:
        try:
            print(text, file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass            # stderr is gone: nobody to tell

    def lost(self, tool: str, count: int, what: str = "events",
             why: str = "the ring buffer was full") -> None:
        """Say that `count` events never reached netkit. JSON output carries the same number
        in its summary record."""
        if count and self.mode != "json":
            self.note(f"netkit {tool}: {count} {what} lost ({why})")

    # -- JSON ------------------------------------------------------------------------------------
    @_writes
    def record(self, obj: dict) -> None:
        """One NDJSON line; `ts` first when the caller gave none."""
        if "ts" not in obj:
            obj = {"ts": iso(), **obj}
        self.stream.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self.stream.flush()

    # -- text ------------------------------------------------------------------------------------
    @_writes
    def line(self, text: str = "", style: str = "") -> None:
        if self.mode == "rich" and style:
            # One line stays one line (a StreamTable header wider than the terminal would
            # otherwise wrap while its rows, printed unwrapped, do not).
            self.console.print(text, style=style, markup=False, no_wrap=True, overflow="ignore",
                               crop=False)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    @_writes
    def table(self, columns: Sequence[Column], rows: Sequence[Sequence[Any]], title: str = "") -> None:
        """A whole table at once (summaries, top-N views)."""
        if self.mode == "rich":
            from rich.table import Table
            table = Table(title=title or None, title_justify="left", box=None, header_style="bold")
            for col in columns:
                # fold rather than cut with "…": a narrow terminal must not hide digits
                table.add_column(col.header, justify="right" if col.align == ">" else "left",
                                 style=col.style or None, overflow="fold")
            for row in rows:
                table.add_row(*(col.fmt(v) for col, v in zip(columns, row)))
            self.console.print(table)
            return
        if title:
            self.line(title)
        text_rows = [[col.fmt(v) for col, v in zip(columns, row)] for row in rows]
        widths = [max([len(col.header)] + [len(r[i]) for r in text_rows])
                  for i, col in enumerate(columns)]
        self.line(_join(columns, [c.header for c in columns], widths))
        for r in text_rows:
            self.line(_join(columns, r, widths))

    @_writes
    def hist(self, title: str, slots: Sequence[int], unit: str = "") -> None:
        """A log2 histogram in the form of bpftrace's hist()."""
        self.line(f"{title}:" if not unit else f"{title} ({unit}):",
                  style="bold" if self.mode == "rich" else "")
        for label, count, bar in format_log2(slots):
            text = f"{label:<16} {count:>8} |{bar:<52}|"
            if self.mode == "rich":
                from rich.text import Text
                t = Text(f"{label:<16} {count:>8} |")
                t.append(f"{bar:<52}", style="cyan")
                t.append("|")
                self.console.print(t)
            else:
                self.line(text)


class StreamTable:
    """Rows that arrive one at a time (per interval, per event) under a header printed once;
    widths are fixed up front so columns stay aligned in a file or a terminal."""

    def __init__(self, out: Output, columns: Sequence[Column]):
        self.out = out
        self.columns = columns
        self.widths = [max(c.width, len(c.header)) for c in columns]
        self._header_done = False

    @_writes
    def row(self, values: Sequence[Any]) -> None:
        if not self._header_done:
            self.out.line(_join(self.columns, [c.header for c in self.columns], self.widths),
                          style="bold")
            self._header_done = True
        cells = [col.fmt(v) for col, v in zip(self.columns, values)]
        if self.out.mode == "rich":
            from rich.text import Text
            text = Text()
            for i, (col, cell, width) in enumerate(zip(self.columns, cells, self.widths)):
                text.append(("" if i == 0 else " ") + f"{cell:{col.align}{width}}", style=col.style)
            self.out.console.print(text, no_wrap=True, overflow="ignore", crop=False)
        else:
            self.out.line(_join(self.columns, cells, self.widths))


def _join(columns: Sequence[Column], cells: Sequence[str], widths: Sequence[int]) -> str:
    parts = [f"{cell:{col.align}{width}}" for col, cell, width in zip(columns, cells, widths)]
    return " ".join(parts).rstrip()
