"""Time packets spend in a device's queueing discipline, from qdisc:qdisc_enqueue to
qdisc:qdisc_dequeue, as log2 histograms per device and qdisc kind (tbf, htb, fq_codel, fq...),
per interval and for the run; -q KIND keeps one kind. Kept in the kernel; bulk dequeues are
walked packet by packet.
"""
from __future__ import annotations

import re
from typing import Annotated, NamedTuple, Optional

import typer

from netkit.cli.options import (AllNetnsOpt, CountArg, DurationOpt, IntervalArg, JsonOpt,
                                MillisecondsOpt, NetnsOpt, NoColorOpt, VerboseOpt)
from netkit.cli.tool import ManPage, open_output
from netkit.engine.errors import UsageError
from netkit.export import ExportHub, export_options

SUMMARY = "Time packets spend in qdiscs (any kind: fq, fq_codel, tbf, htb...), per device."

KIND_LEN = 16           # qdisclat.h's QDISC_KIND_LEN, Qdisc_ops.id (tests tie the two)
COUNTERS = ["enqueued", "dequeued", "unmatched", "dequeues", "bulk", "packets"]

MAN = ManPage(
    description=(
        "qdisclat times each packet's stay in a queueing discipline: from the moment the device's "
        "root qdisc takes it (qdisc:qdisc_enqueue) to the moment the qdisc gives it out for "
        "transmission (qdisc:qdisc_dequeue), matched by the skb's address, and keeps a log2 "
        "histogram per device and qdisc kind in the kernel. The kind is the qdisc's ops->id, the "
        "name tc(8) shows, so one tool covers every kind: fq, fq_codel, tbf, htb, cake, "
        "pfifo_fast... (the book has one tool per kind, qdisc-fq.bt and its siblings); -q KIND "
        "keeps one. Nothing in it depends on the kind: netkit's tests use tbf and htb (their "
        "machine has no sch_fq), and fq takes the same path.\n\n"
        "A dequeue may hand over several packets at once (a bulk dequeue: the tracepoint names the "
        "first and their number, the rest follow skb->next); each is timed. A dequeue that found "
        "nothing to give (the tracepoint fires then too) is ignored. What it cannot see: an empty "
        "qdisc that allows it (TCQ_F_CAN_BYPASS: pfifo_fast, pfifo, bfifo) hands a packet straight "
        "to the driver without either event, so on such a qdisc only packets that had to wait "
        "behind others are timed, and a device without a qdisc (noqueue: veth, loopback, tunnels "
        "by default) has none to time. Packets that the qdisc drops after taking them (codel and "
        "fq_codel drop at dequeue) are not timed; a packet handed back by a busy driver (requeued) "
        "is timed to its first dequeue. Only the root qdisc a packet enters is seen: for htb or a "
        "tbf with a child, the time is that of the whole tree; an mq device's per-queue qdiscs are "
        "roots themselves and share one histogram per kind.\n\n"
        "A qdisc belongs to the network namespace of its device. qdisclat traces the namespace it "
        "runs in; --netns NETNS another (a name from `ip netns list`, a namespace file such as "
        "/proc/PID/ns/net, or its inode number) and --all-netns all of them.\n\n"
        "The original qdisc-fq.bt puts a kprobe on fq_enqueue and a kretprobe on fq_dequeue, so it "
        "sees one kind, but at any depth of the tree (a child fq under htb). This version needs no "
        "kprobes and sees every kind, but only root qdiscs, and not the bypass above (fq has none: "
        "for fq both see the same packets). The histograms are printed every INTERVAL when one is "
        "given, and for the whole run at the end (Ctrl-C, SIGTERM, -d or COUNT)."),
    examples=[
        ("netkit qdisclat", "every qdisc of this namespace, until Ctrl-C"),
        ("netkit qdisclat -q fq 1", "fq qdiscs only, every second"),
        ("netkit qdisclat -q tbf -m -d 30", "tbf shapers in milliseconds, for 30 s"),
        ("netkit qdisclat --all-netns --json", "every namespace, as NDJSON"),
    ],
    output=(
        "Per interval (with INTERVAL) and for the run: a heading (the time of day, or the run's "
        "length), then one histogram per device and qdisc kind (and namespace, with --all-netns), "
        "titled with them, the packet count and the mean (exact, not from the buckets); rows are "
        "[low, high) ranges in us (ms with -m). Text output ends with the counts below.\n\n"
        "JSON (--json): one object per histogram with type \"hist\", scope (\"interval\" or "
        "\"run\"), ts, interval_s or duration_s, netns (inode), dev, ifindex, qdisc (the kind), "
        "count, latency_us_sum, latency_us_avg and latency_us, the histogram: a list of objects "
        "with low, high and count for the bucket [low, high) (latency_ms_* with -m). At the end "
        "one object with type \"summary\", duration_s, netns (null with --all-netns), qdisc (-q's "
        "kind or null), enqueued (packets taken), dequeued (packets given out and timed), "
        "unmatched (given out with no enqueue seen: taken before the start, or requeued), dequeues "
        "(dequeue events that gave packets), bulk_dequeues (those that gave several) and unwalked "
        "(packets of a bulk too long to walk; 0 unless a bulk exceeds 65536).\n\n"
        "Exporters: netkit_qdisclat_latency_seconds, a histogram with labels dev, qdisc and netns "
        "(with --all-netns)."),
    see_also=["tc(8)", "tc-fq(8)", "tc-tbf(8)", "tc-htb(8)", "netkit-nettxlat(8)",
              "qdisc-fq.bt (BPF Performance Tools, ch. 10)"],
)

QdiscOpt = Annotated[Optional[str], typer.Option(
    "-q", "--qdisc", metavar="KIND", show_default=False,
    help="Only qdiscs of this kind, as tc names it (fq, fq_codel, tbf, htb, pfifo_fast...).")]


class Key(NamedTuple):
    netns: int
    ifindex: int
    kind: str
    name: str

    @property
    def device(self):
        from netkit.engine.devhist import Device
        return Device(self.netns, self.ifindex, self.name)


def kind_of(text: str | None) -> str | None:
    if text is None:
        return None
    if not re.fullmatch(r"[a-z0-9_]{1,%d}" % (KIND_LEN - 1), text):
        raise UsageError(f"-q {text!r}: a qdisc kind is a name such as fq, tbf or fq_codel "
                         f"(lower case, at most {KIND_LEN - 1} characters)")
    return text


def histograms(obj):
    from netkit.engine.devhist import Device, histograms as read
    from netkit.render.fields import comm

    def decode(key):
        device = Device.of(key.dev)
        return Key(device.netns, device.ifindex, comm(key.kind), device.name)
    return read(obj.map("hists"), decode)


def snapshot(ts: float, totals: dict, all_netns: bool, units):
    from netkit.engine.devhist import device_labels, metric_histograms
    from netkit.metrics import Snapshot
    return Snapshot("qdisclat", ts, histograms=metric_histograms(
        "qdisclat_latency", "Time in the qdisc: qdisc_enqueue to qdisc_dequeue", totals,
        lambda key: {**device_labels(key.device, all_netns), "qdisc": key.kind},
        unit_seconds=units.ns * 1e-9, sum_scale=1 / units.ns))


def _open(inode: int | None, kind: str | None, units):
    from netkit.engine import netns as namespaces
    from netkit.engine.bpfobject import BPFObject
    rodata = {**namespaces.rodata(inode), "per_device": True, "unit_ns": units.ns}
    if kind:
        rodata["filter_kind"] = kind.encode()
    return BPFObject("qdisclat", rodata=rodata)


def export_source():
    """For `netkit export`: time in qdiscs per device and kind in netkit's own namespace."""
    from netkit.cli.histloop import exported_histograms
    from netkit.engine import netns as namespaces
    from netkit.render.fields import Units
    units = Units(False)
    return exported_histograms(_open(namespaces.current(), None, units), histograms,
                               lambda ts, totals: snapshot(ts, totals, False, units))


def summary(out, obj, seconds: float, inode: int | None, kind: str | None) -> None:
    from netkit.engine.counters import Counts
    c = Counts.of(obj.map("counts").lookup(0), COUNTERS)
    unwalked = c["packets"] - c["dequeued"] - c["unmatched"]
    if out.mode == "json":
        out.record({"type": "summary", "duration_s": round(seconds, 3), "netns": inode,
                    "qdisc": kind, "enqueued": c["enqueued"], "dequeued": c["dequeued"],
                    "unmatched": c["unmatched"], "dequeues": c["dequeues"],
                    "bulk_dequeues": c["bulk"], "unwalked": unwalked})
        return
    out.line()
    out.line(f"{c['dequeued']} packets timed ({c['enqueued']} enqueued) in {c['dequeues']} "
             f"dequeues, {c['bulk']} of them bulk; {c['unmatched']} dequeued without an "
             f"enqueue seen" + (f", {unwalked} not walked" if unwalked else ""))


@export_options("qdisclat")
def command(
    interval: IntervalArg = None,
    count: CountArg = None,
    qdisc: QdiscOpt = None,
    milliseconds: MillisecondsOpt = False,
    netns: NetnsOpt = None,
    all_netns: AllNetnsOpt = False,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
    exporters: ExportHub = None,
):
    from netkit.cli.histloop import trace_histograms
    from netkit.cli.options import netns_of
    from netkit.render.fields import Units
    from netkit.render.histsets import HistSets, device_fields, device_title, traced_namespaces

    kind = kind_of(qdisc)
    inode = netns_of(netns, all_netns)
    units = Units(milliseconds)
    out = open_output(json, no_color, verbose)
    with _open(inode, kind, units) as obj:
        if duration == 0:
            return
        view = HistSets(out, units.key("latency"), units.name, sum_scale=1 / units.ns,
                        title=lambda key: f"{device_title(key.device, inode is None)} {key.kind}",
                        fields=lambda key: {**device_fields(key.device), "qdisc": key.kind},
                        empty="(no packet left a qdisc)")
        what = f"{kind} qdiscs" if kind else "qdiscs"
        seconds, _ = trace_histograms(
            out, histograms(obj), view, interval=interval, count=count, duration=duration,
            exporters=exporters,
            snapshot=lambda ts, totals: snapshot(ts, totals, inode is None, units),
            banner=f"Tracing {what} in {traced_namespaces(inode)}... Hit Ctrl-C to end.",
            heading="Time in qdiscs over {seconds:.1f} s:")
        summary(out, obj, seconds, inode, kind)
