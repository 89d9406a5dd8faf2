"""The run of a tool whose output is a set of in-kernel histograms: each INTERVAL the change since
the last, at the end the whole run's, the run's totals to the exporters every tick.

    seconds, totals = trace_histograms(out, hists, view, interval=..., count=..., duration=...,
                                       exporters=exporters, snapshot=lambda ts, totals: ...,
                                       banner="Tracing ...", heading="Sizes over {seconds:.1f} s:")

`hists` is a CumulativeMap of Log2Hist values (netkit.engine.devhist.histograms), `view` a
netkit.render.histsets.HistSets. `exported_histograms` is the same tool's export_source.
"""
from __future__ import annotations

import contextlib
from typing import Callable

from netkit.cli.loop import Loop


def trace_histograms(out, hists, view, *, interval: float | None, count: int | None,
                     duration: float | None, exporters, snapshot: Callable[[float, dict], object],
                     banner: str, heading: str) -> tuple[float, dict]:
    """Until COUNT, the duration or Ctrl-C; returns the run's length and its histograms."""
    from netkit.render.fields import clock

    def tick(ts: float, seconds: float, show: bool):
        delta = hists.read()
        if show:
            view.show(delta, "interval", seconds, clock(ts))
        return snapshot(ts, hists.totals()) if exporters else None

    loop = Loop(out, interval=interval, count=count, duration=duration, exporters=exporters)
    seconds = loop.run(tick, banner)
    totals = hists.totals()
    view.show(totals, "run", seconds, heading.format(seconds=seconds))
    return seconds, totals


@contextlib.contextmanager
def exported_histograms(bpf_object, read: Callable, snapshot: Callable[[float, dict], object]):
    """A tool's export_source for `netkit export`: attach `bpf_object` (a BPFObject not yet
    entered) and yield a function ts -> the Snapshot of its histograms' totals (`read(obj)`
    gives their CumulativeMap)."""
    with bpf_object as obj:
        hists = read(obj)

        def sample(ts: float):
            hists.read()
            return snapshot(ts, hists.totals())
        yield sample
