"""Maps kept per process, read as intervals: counters whose key starts with the process (tgid)
and log2 histograms per (process, comm, kind) (bpf_programs/prochist.h). Entries of processes
that exited are retired (netkit.engine.counters), so a long run does not fill the map."""
from __future__ import annotations

from typing import Callable, NamedTuple

from netkit.engine.counters import CumulativeMap, alive


def comm_of(per_cpu) -> str:
    """The command name stored in a per-CPU value: the first CPU that set one."""
    from netkit.render.fields import comm
    return next((comm(v.comm) for v in per_cpu if v.comm), "")


def per_process(bpf_map, decode: Callable) -> CumulativeMap:
    """A CumulativeMap of a map whose decoded keys have a `pid`."""
    return CumulativeMap(bpf_map, decode, retire=lambda key, _: not alive(key.pid))


class ProcKey(NamedTuple):
    """A struct proc_hist_key, decoded: the kind by the tool's name for it."""
    pid: int
    comm: str
    kind: str


def process_hists(bpf_map, kinds: dict[int, str]) -> CumulativeMap:
    """A map of struct proc_hist_key -> struct log2_hist as {ProcKey: Log2Hist}; `kinds` names
    the kind numbers (an enum of the object: BPFObject.enum gives value by name)."""
    from netkit.engine.hist import Log2Hist
    from netkit.render.fields import comm

    def decode(key, value):
        return (ProcKey(key.tgid, comm(key.comm), kinds.get(key.kind, str(key.kind))),
                Log2Hist.from_value(value))
    return per_process(bpf_map, decode)


def counts_by_kind(totals: dict, kinds) -> dict[str, int]:
    """How many values the per-process histograms hold, per kind (all processes)."""
    return {kind: sum(h.count for key, h in totals.items() if key.kind == kind) for kind in kinds}


def hist_snapshot(tool: str, ts: float, totals: dict, metrics: dict[str, tuple[str, str]],
                  unit_seconds: float, unit: str = "seconds"):
    """The run's per-process histograms for the exporters, summed per comm (processes come and
    go, command names stay): one metric per kind, `metrics` giving each kind's (name, help)."""
    from netkit.engine.hist import Log2Hist
    from netkit.metrics import Histogram, Snapshot
    merged: dict[tuple[str, str], Log2Hist] = {}
    for key, hist in totals.items():
        merged[key.kind, key.comm] = merged.get((key.kind, key.comm), Log2Hist()) + hist
    return Snapshot(tool, ts, histograms=[
        Histogram(metrics[kind][0], metrics[kind][1], tuple(hist.slots), hist.sum, unit_seconds,
                  {"comm": comm}, unit)
        for (kind, comm), hist in sorted(merged.items()) if kind in metrics])
