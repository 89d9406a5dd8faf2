"""How a tracing tool's run goes, from attached probes to the summary, in the two shapes most
tools take.

A tool that prints one line per event: run_events polls its ring buffer until -d or Ctrl-C.

A tool that counts by key in the kernel (per process, per protocol...) and shows the counts for
each INTERVAL and for the whole run: run_counting does the tick that reads the cumulative map,
the exporters' snapshot of the totals, the run's view and JSON summary at the end;
export_source_of makes the tool's export_source for `netkit export`. The tool gives the reader
(a netkit.engine.counters.CumulativeMap), how to show a set of counts and how to snapshot them:

    run_counting(out, counts, show, snapshot=snapshot, summary=totals_by_call,
                 banner="Tracing ... Hit Ctrl-C to end.", run_title="... over {seconds:.1f} s:",
                 interval=interval, count=count, duration=duration, exporters=exporters)
    export_source = export_source_of(_open, lambda obj: sampler(read_counts(obj), snapshot))

show(values, scope, seconds, title) is called with the interval's changes (scope "interval",
title the time of day) and at the end with the run's totals (scope "run").
"""
from __future__ import annotations

import contextlib
from typing import Callable


def run_events(out, obj, ring: str, event_struct: str, handler: Callable,
               duration: float | None, banner: str, exporters=None,
               sample: Callable | None = None) -> float:
    """Hand each event of the object's ring buffer `ring` (a struct `event_struct`) to
    `handler` until -d or Ctrl-C; returns the run's length. With exporters, `sample(ts)` gives
    them the Snapshot of the object's counters at each tick."""
    from netkit.cli.loop import Loop
    rings = [obj.ring_buffer(ring, event_struct, handler)]
    loop = Loop(out, duration=duration, rings=rings, exporters=exporters)
    return loop.run(lambda ts, *rest: sample(ts) if exporters and sample else None, banner)


def run_counting(out, counts, show: Callable, *, snapshot: Callable | None, banner: str,
                 run_title: str, interval: float | None, count: int | None,
                 duration: float | None, exporters=None, rings=(),
                 summary: Callable | None = None) -> tuple[float, dict]:
    """Tick until COUNT, -d or Ctrl-C (polling `rings` meanwhile), show the run, and in JSON
    end with {"type": "summary", "duration_s", **summary(totals)} when `summary` is given.
    Returns the run's length and its totals."""
    from netkit.cli.loop import Loop
    from netkit.render.fields import clock

    def tick(ts: float, seconds: float, showing: bool):
        delta = counts.read()
        if showing:
            show(delta, "interval", seconds, clock(ts))
        return snapshot(ts, counts.totals()) if exporters and snapshot else None

    loop = Loop(out, interval=interval, count=count, duration=duration, rings=rings,
                exporters=exporters)
    seconds = loop.run(tick, banner)
    totals = counts.totals()
    show(totals, "run", seconds, run_title.format(seconds=seconds))
    if summary and out.mode == "json":
        out.record({"type": "summary", "duration_s": round(seconds, 3), **summary(totals)})
    return seconds, totals


def sampler(counts, snapshot: Callable) -> Callable:
    """ts -> the Snapshot of the totals so far."""
    def sample(ts: float):
        counts.read()
        return snapshot(ts, counts.totals())
    return sample


def export_source_of(open_object: Callable, sample_of: Callable) -> Callable:
    """A tool's export_source(pid=, name=, cgroup=) for `netkit export`: open_object(pid, name,
    cgroup) attaches the tool's probes, sample_of(obj) gives the function ts -> Snapshot."""
    @contextlib.contextmanager
    def export_source(pid: int | None = None, name: str | None = None,
                      cgroup: str | None = None):
        with open_object(pid, name, cgroup) as obj:
            yield sample_of(obj)
    return export_source
