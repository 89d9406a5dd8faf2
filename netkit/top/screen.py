"""netkit top's interactive screen, in curses.

curses rather than rich's Live: it reads keys (rich does not), reports resizes as a key
(KEY_RESIZE), waits for a key or the next refresh in one poll without a thread or a busy loop,
and draws only the cells that changed; a frame costs well under a millisecond of CPU, where
rendering rich tables costs milliseconds (netkit top's own CPU is held to 3% of a core).
endwin() in a finally restores the terminal on q, Ctrl-C and SIGTERM (netkit turns SIGTERM
into the same KeyboardInterrupt as Ctrl-C).

Keys: q quit, 1-5 or Tab focus a panel, s cycle the focused panel's sort, / filter by process
name or port (Enter applies, Esc cancels, an empty filter clears it), p pause, h or ? help.
"""
from __future__ import annotations

import curses
import os
import time

from netkit.engine import signals
from netkit.top import Top
from netkit.top.panels import Panel

HELP = [
    "netkit top: keys",
    "",
    "q          quit",
    "1-5, Tab   focus a panel (Shift-Tab: back)",
    "s          cycle the focused panel's sort column",
    "/          filter by process name or port (Enter applies,",
    "           Esc cancels, an empty filter clears it)",
    "p          pause / resume the display",
    "h, ?       this help (any key closes it)",
    "",
    "Rates are per second over the last refresh interval;",
    "P50/P99 are the upper ends of log2 latency buckets.",
]
ESC, TAB, ENTER_KEYS, BACKSPACE_KEYS = 27, 9, (10, 13, curses.KEY_ENTER), (8, 127,
                                                                         curses.KEY_BACKSPACE)


class Screen:
    def __init__(self, top: Top, interval: float, duration: float | None = None):
        self.top = top
        self.interval = interval
        self.duration = duration
        self.focus = 1                      # the TCP flows panel
        self.filter = ""
        self.typing: str | None = None      # the filter being typed after `/`
        self.paused = False
        self.help = False
        self.last_refresh = time.time()
        self.frozen: list[list[dict]] | None = None   # the rows shown while paused

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        try:
            stdscr = curses.initscr()
        except curses.error as exc:
            from netkit.engine.errors import NetkitError
            raise NetkitError(f"cannot draw on this terminal (TERM={os.environ.get('TERM', '')}"
                              f"): {exc}; --batch prints plain snapshots") from None
        try:
            curses.noecho()
            curses.cbreak()
            stdscr.keypad(True)
            curses.set_escdelay(25)
            try:
                curses.curs_set(0)
            except curses.error:
                pass                            # a terminal without an invisible cursor
            if curses.has_colors():
                curses.start_color()
                curses.use_default_colors()
            self._loop(stdscr)
        except KeyboardInterrupt:
            pass
        finally:
            stdscr.keypad(False)
            curses.nocbreak()
            curses.echo()
            curses.endwin()

    def _loop(self, stdscr) -> None:
        last = time.monotonic()
        deadline = last + self.interval
        end = last + self.duration if self.duration is not None else float("inf")
        self.draw(stdscr)
        while True:
            if time.monotonic() >= end:
                return
            wait_ms = max(0, int((min(deadline, end) - time.monotonic()) * 1000))
            stdscr.timeout(wait_ms)
            signals.raise_if_lost()
            key = stdscr.getch()
            if key != -1:
                if self.on_key(key) == "quit":
                    return
                self.draw(stdscr)
                continue
            now = time.monotonic()
            if now < deadline:
                continue
            self.top.refresh(now - last)
            self.last_refresh = time.time()
            last = now
            # Absolute deadlines: no drift; after a stop (SIGSTOP) start afresh.
            deadline = deadline + self.interval if now - deadline < self.interval else \
                now + self.interval
            self.draw(stdscr)

    # -- keys ---------------------------------------------------------------------------------
    def on_key(self, key: int) -> str | None:
        if self.typing is not None:
            if key == ESC:
                self.typing = None
            elif key in ENTER_KEYS:
                self.filter, self.typing = self.typing.strip(), None
                self.top.filter = self.filter
            elif key in BACKSPACE_KEYS:
                self.typing = self.typing[:-1]
            elif 32 <= key < 127:
                self.typing += chr(key)
            return None
        if self.help:
            self.help = False
            return None
        panels = len(self.top.panels)
        if key in (ord("q"), ord("Q")):
            return "quit"
        if ord("1") <= key < ord("1") + panels:
            self.focus = key - ord("1")
        elif key == TAB:
            self.focus = (self.focus + 1) % panels
        elif key == curses.KEY_BTAB:
            self.focus = (self.focus - 1) % panels
        elif key == ord("s"):
            self.top.panels[self.focus].next_sort()
        elif key == ord("/"):
            self.typing = self.filter
        elif key == ord("p"):
            self.paused = not self.paused
            self.frozen = [list(p.rows) for p in self.top.panels] if self.paused else None
        elif key in (ord("h"), ord("?")):
            self.help = True
        return None

    # -- drawing ------------------------------------------------------------------------------
    def heights(self, rows: list[int], available: int) -> list[int]:
        """Lines per panel (title and header included): each gets what it needs when all fit;
        else each gets what it needs up to an even share (at least 3: title, header, one row),
        and the lines left go to the focused panel first, then to the others in order. On a
        very small screen only the focused panel is shown."""
        want = [2 + max(1, n) for n in rows]
        if sum(want) <= available:
            return want
        if available < 3 * len(rows):
            return [available if i == self.focus else 0 for i in range(len(rows))]
        share = max(3, available // len(rows))
        got = [min(w, share) for w in want]
        left = available - sum(got)
        for i in [self.focus] + [i for i in range(len(rows)) if i != self.focus]:
            extra = max(0, min(left, want[i] - got[i]))
            got[i] += extra
            left -= extra
        return got

    def draw(self, stdscr) -> None:
        stdscr.erase()
        height, width = stdscr.getmaxyx()
        shown = []
        for i, panel in enumerate(self.top.panels):
            rows = self.frozen[i] if self.frozen else panel.rows
            shown.append(_ordered(panel, rows, self.filter))
        y = 0
        for i, (panel, rows, lines) in enumerate(zip(self.top.panels, shown,
                                                     self.heights([len(r) for r in shown],
                                                                  height - 1))):
            if lines:
                self._panel(stdscr, y, width, i, panel, rows, lines)
            y += lines
        self._status(stdscr, height - 1, width)
        if self.help:
            self._help(stdscr, height, width)
        stdscr.noutrefresh()
        curses.doupdate()

    def _panel(self, stdscr, y: int, width: int, i: int, panel: Panel, rows: list[dict],
               lines: int) -> None:
        focused = i == self.focus
        title = f" {i + 1} {panel.title}  sort: {panel.sort_name}"
        if self.filter and panel.filterable:
            title += f"  filter: {self.filter}"
        if panel.note:
            title += f"  [{panel.note}]"
        _put(stdscr, y, 0, title.ljust(width), width,
             curses.A_REVERSE if focused else curses.A_BOLD)
        header = " ".join(f"{c.header:{c.align}{c.width}}" for c in panel.columns)
        _put(stdscr, y + 1, 0, header, width, curses.A_UNDERLINE)
        if not rows:
            _put(stdscr, y + 2, 0, "  (none)", width, curses.A_DIM)
        for n, row in enumerate(rows[:lines - 2]):
            _put(stdscr, y + 2 + n, 0, " ".join(f"{c.fmt(row.get(c.key)):{c.align}{c.width}}"
                                                for c in panel.columns), width)

    def _status(self, stdscr, y: int, width: int) -> None:
        if self.typing is not None:
            _put(stdscr, y, 0, f"filter (name or port): {self.typing}_", width, curses.A_BOLD)
            return
        when = time.strftime("%H:%M:%S", time.localtime(self.last_refresh))
        state = "  PAUSED (p resumes)" if self.paused else ""
        text = (f" {when}  every {self.interval:g} s{state}   q quit  1-5/Tab focus  s sort  "
                f"/ filter  p pause  h help")
        _put(stdscr, y, 0, text.ljust(width), width, curses.A_REVERSE)

    def _help(self, stdscr, height: int, width: int) -> None:
        box_w = max(len(line) for line in HELP) + 4
        top, left = max(0, (height - len(HELP) - 2) // 2), max(0, (width - box_w) // 2)
        for n, line in enumerate([""] + HELP + [""]):
            _put(stdscr, top + n, left, f"  {line}".ljust(box_w), width - left,
                 curses.A_REVERSE)


def _ordered(panel: Panel, rows: list[dict], text: str) -> list[dict]:
    saved, panel.rows = panel.rows, rows
    try:
        return panel.ordered(text)
    finally:
        panel.rows = saved


def _put(stdscr, y: int, x: int, text: str, width: int, attr: int = 0) -> None:
    """Text cut at the screen's edge; curses refuses to write the last cell of the screen,
    which a full-width line on the bottom row does (and then reports an error it has done)."""
    try:
        stdscr.addnstr(y, x, text, max(0, width - x), attr)
    except curses.error:
        pass
