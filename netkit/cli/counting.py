"""The life of a tool that counts by key in the kernel (per process, per protocol...) and shows
the counts for each INTERVAL and for the whole run: the tick that reads the cumulative map,
the exporters' snapshot of the totals, the run's view at the end. The tool gives the reader
(a netkit.engine.counters.CumulativeMap), how to show a set of counts and how to snapshot the
totals:

    seconds, totals = run_intervals(out, counts, show, snapshot, loop, banner,
                                    "Connections over {seconds:.1f} s:")

show(values, scope, seconds, title) is called with the interval's changes (scope "interval",
title the time of day) and at the end with the run's totals (scope "run").
"""
from __future__ import annotations

from typing import Callable


def run_intervals(out, counts, show: Callable, snapshot: Callable | None, loop, banner: str,
                  run_title: str) -> tuple[float, dict]:
    """Run `loop` (a netkit.cli.loop.Loop); returns the run's length and its totals."""
    from netkit.render.fields import clock

    def tick(ts: float, seconds: float, showing: bool):
        delta = counts.read()
        if showing:
            show(delta, "interval", seconds, clock(ts))
        return snapshot(ts, counts.totals()) if loop.exporters and snapshot else None

    seconds = loop.run(tick, banner)
    totals = counts.totals()
    show(totals, "run", seconds, run_title.format(seconds=seconds))
    return seconds, totals


def sampler(counts, snapshot: Callable) -> Callable:
    """For a tool's export_source(): ts -> the Snapshot of the totals so far."""
    def sample(ts: float):
        counts.read()
        return snapshot(ts, counts.totals())
    return sample
