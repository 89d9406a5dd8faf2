"""Histograms that packet tools keep per network device (bpf_programs/devhist.h), read as
intervals and run totals, and handed to exporters.

A device is its namespace's inode and its ifindex (ifindexes repeat across namespaces), with
the name the kernel saw; without --dev a namespace's devices share one histogram (ifindex 0).
A latency histogram's slots count microseconds (or milliseconds) and its sum is exact, in ns.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from netkit.engine.counters import CumulativeMap
from netkit.engine.hist import Log2Hist


class Device(NamedTuple):
    netns: int
    ifindex: int            # 0: every device of the namespace
    name: str               # "" with ifindex 0

    @classmethod
    def of(cls, key) -> "Device":
        """From a struct dev_key."""
        from netkit.render.fields import comm
        return cls(key.netns, key.ifindex, comm(key.name) if key.ifindex else "")


def histograms(bpf_map, decode_key: Callable[[object], tuple]) -> CumulativeMap:
    """A map of key -> struct log2_hist (per CPU), read per interval; keys become what
    decode_key makes of them (a NamedTuple that sorts in display order)."""
    return CumulativeMap(bpf_map, lambda key, value: (decode_key(key), Log2Hist.from_value(value)))


def metric_histograms(name: str, help: str, totals: dict, labels: Callable[[object], dict],
                      unit_seconds: float, unit: str = "seconds", sum_scale: float = 1.0) -> list:
    """The run's histograms as exporter Histograms, one per key; `sum_scale` turns a histogram's
    sum into slot units (1/1000 for an ns sum of microsecond slots). Keys whose labels are the
    same (a device renamed back) are added together."""
    from netkit.metrics import Histogram
    merged: dict[tuple, Log2Hist] = {}
    for key, hist in totals.items():
        group = tuple(sorted(labels(key).items()))
        merged[group] = merged[group] + hist if group in merged else hist
    return [Histogram(name, help, tuple(hist.slots), hist.sum * sum_scale, unit_seconds,
                      dict(group), unit=unit)
            for group, hist in sorted(merged.items())]


def device_labels(device: Device, all_netns: bool) -> dict[str, str]:
    """Exporter labels of a device: its name (with --dev) and namespace (with --all-netns)."""
    labels = {}
    if device.ifindex:
        labels["dev"] = device.name
    if all_netns:
        labels["netns"] = str(device.netns)
    return labels
