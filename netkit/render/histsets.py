"""A set of log2 histograms, one per key (a device, a point, a qdisc kind...), shown each interval
and for the whole run: in text each as bpftrace prints one, under a title, in JSON one record
each.

    view = HistSets(out, "latency_us", "us", title=lambda key: ..., fields=lambda key: {...},
                    sum_scale=1e-3)
    view.show(hists, "interval", seconds, clock(ts))

JSON records: {"type": "hist", "scope": "interval"|"run", "interval_s"|"duration_s", the key's
fields, "count", "<value_key>_sum", "<value_key>_avg", "<value_key>": [{"low", "high",
"count"}]}; the unit is in value_key's name (size_bytes, latency_us).
"""
from __future__ import annotations

from typing import Callable

from netkit.render.hist import hist_json


class HistSets:
    def __init__(self, out, value_key: str, unit: str, title: Callable[[object], str],
                 fields: Callable[[object], dict], sum_scale: float = 1.0,
                 empty: str = "(nothing counted)"):
        self.out = out
        self.value_key = value_key
        self.unit = unit
        self.title = title
        self.fields = fields
        self.sum_scale = sum_scale          # a histogram's sum * sum_scale is in `unit`s
        self.empty = empty

    def show(self, hists: dict, scope: str, seconds: float, heading: str) -> None:
        keys = sorted(key for key, hist in hists.items() if hist)
        if self.out.mode == "json":
            span = "interval_s" if scope == "interval" else "duration_s"
            for key in keys:
                hist = hists[key]
                total = hist.sum * self.sum_scale
                self.out.record({"type": "hist", "scope": scope, span: round(seconds, 3),
                                 **self.fields(key), "count": hist.count,
                                 f"{self.value_key}_sum": round(total, 3),
                                 f"{self.value_key}_avg": round(total / hist.count, 3),
                                 self.value_key: hist_json(hist.slots)})
            return
        self.out.line()
        self.out.line(heading, style="bold")
        if not keys:
            self.out.line(self.empty)
        for key in keys:
            hist = hists[key]
            self.out.line()
            self.out.hist(f"{self.title(key)}, count {hist.count}, average "
                          f"{hist.sum * self.sum_scale / hist.count:.1f} {self.unit}", hist.slots)


def device_title(device, all_netns: bool) -> str:
    """How a histogram's device reads in its title: its name, or all devices; and with every
    namespace traced, which one."""
    where = device.name if device.ifindex else "all devices"
    return f"netns {device.netns} {where}" if all_netns else where


def device_fields(device) -> dict:
    """A device in JSON: the namespace's inode always, the device with --dev (else null)."""
    return {"netns": device.netns, "dev": device.name if device.ifindex else None,
            "ifindex": device.ifindex or None}


def traced_namespaces(inode: int | None) -> str:
    """The banner's words for what --netns/--all-netns chose."""
    return "every network namespace" if inode is None else f"network namespace {inode}"
