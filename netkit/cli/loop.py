"""The life of an interval tool between attach and summary: the clock, the ring-buffer polling,
the exporters and Ctrl-C, in one place.

    loop = Loop(out, interval=interval, count=count, duration=duration, rings=[ring],
                exporters=exporters)
    seconds = loop.run(tick, "Tracing ... Hit Ctrl-C to end.")
    view.summary(seconds, ...)

`tick(ts, seconds, show)` reads the kernel's counters; when `show` is true an INTERVAL has
ended and the tool prints it (`seconds` since the last one it printed). It returns what the
exporters get: a Snapshot, a list of them, or None. It is called every INTERVAL, every second
without one when exporters are on (or every `every` seconds), and once more at the end with
show=False, so the final totals reach the exporters and the summary covers the whole run.
"""
from __future__ import annotations

import math
import time
from typing import Callable

from netkit.engine import signals


class Ticker:
    """Interval clock: yields the wall time at the end of each interval until COUNT intervals
    or the duration have passed, or `done()` says so. Deadlines are absolute, so intervals don't
    drift by the time spent rendering; when the process was stopped for longer than an interval
    (SIGSTOP, a suspended VM), the missed ticks are skipped: the long interval is reported once
    and the clock starts afresh. Without an interval it yields nothing and ends with the
    duration, `done()` or Ctrl-C.

    `wait(seconds)` passes the time between ticks: time.sleep, or a ring-buffer poll that
    handles events and may return early (it is called again until the tick is due)."""

    LONGEST_WAIT = 0.5     # s; an endless wait is made of these

    def __init__(self, interval: float | None, count: int | None = None,
                 duration: float | None = None, wait=time.sleep,
                 done: Callable[[], bool] | None = None):
        self.interval = interval
        self.count = count
        self.duration = duration
        self.wait = wait
        self.done = done or (lambda: False)

    def __iter__(self):
        n, deadline = 0, time.monotonic()
        stop_at = None if self.duration is None else deadline + self.duration
        while self.count is None or n < self.count:
            deadline = deadline + self.interval if self.interval else math.inf
            if stop_at is not None:
                if time.monotonic() >= stop_at:
                    return
                deadline = min(deadline, stop_at)
            while (left := deadline - time.monotonic()) > 0:
                if self.done():
                    return
                self.wait(min(left, self.LONGEST_WAIT))
            if not self.interval or self.done():
                return
            late = time.monotonic() - deadline
            if late >= self.interval:
                deadline += late
            n += 1
            yield time.time()

    def run_out(self) -> None:
        """Wait through every tick: for a tool that prints only at the end."""
        for _ in self:
            pass


class Loop:
    """Runs a tool's ticks (see the module doc) until COUNT intervals, the duration, `until()`
    or Ctrl-C/SIGTERM, polling `rings` meanwhile so their events are handled as they come."""

    def __init__(self, out, *, interval: float | None = None, count: int | None = None,
                 duration: float | None = None, rings=(), exporters=None,
                 every: float | None = None, until: Callable[[], bool] | None = None):
        self.out = out
        self.interval = interval
        self.count = count if interval else None
        self.duration = duration
        self.rings = [r for r in rings if r is not None]
        self.exporters = exporters
        self.period = interval or every or (1.0 if exporters else None)
        self.until = until

    def _wait(self, seconds: float) -> None:
        signals.raise_if_lost()
        if not self.rings:
            time.sleep(seconds)
            return
        self.rings[0].poll(max(1, math.ceil(seconds * 1000)))
        for ring in self.rings[1:]:
            ring.poll(0)

    def _publish(self, snapshots) -> None:
        if not self.exporters or snapshots is None:
            return
        for snapshot in snapshots if isinstance(snapshots, list) else [snapshots]:
            self.exporters.publish(snapshot)

    def run(self, tick: Callable, banner: str | None = None) -> float:
        """Tick until the end; returns the seconds the run lasted."""
        if self.exporters:
            self.exporters.start()
        started = last = time.monotonic()
        try:
            if banner:
                # Inside the try: a script may send SIGINT the moment it reads this line.
                self.out.note(banner)
            for ts in Ticker(self.period, self.count, self.duration, self._wait, self.until):
                now = time.monotonic()
                self._publish(tick(ts, now - last, bool(self.interval)))
                if self.interval:
                    last = now
        except KeyboardInterrupt:
            pass
        for ring in self.rings:
            ring.poll(0)                        # what ended before the stop
        now = time.monotonic()
        self._publish(tick(time.time(), now - last, False))
        return now - started
