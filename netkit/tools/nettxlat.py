"""Device transmit latency: from the stack handing an skb to the driver (net:net_dev_start_xmit)
to the skb's free (skb:consume_skb or skb:kfree_skb), which on a real NIC is the transmit
completion. A log2 histogram per network namespace, or per device with --dev, per interval and
for the run; kept in the kernel.
"""
from __future__ import annotations


from netkit.cli.options import (AllNetnsOpt, CountArg, DurationOpt, IntervalArg, JsonOpt,
                                MillisecondsOpt, NetnsOpt, NoColorOpt, PerDeviceOpt, VerboseOpt)
from netkit.cli.tool import ManPage, open_output
from netkit.export import ExportHub, export_options

SUMMARY = "Device transmit latency, driver handoff to completion, per device (tracepoints)."

MAN = ManPage(
    description=(
        "nettxlat times each packet from the moment the stack hands it to a device's driver "
        "(net:net_dev_start_xmit, after the qdisc) to the moment the skb is freed "
        "(skb:consume_skb, or skb:kfree_skb, which drivers that complete with dev_kfree_skb_any() "
        "and drops fire), matched by the skb's address, and keeps a log2 histogram of the times in "
        "the kernel. On a real NIC the driver frees the skb when the hardware reports the transmit "
        "done, so the figure is the device's transmit latency: its ring, the wire, interrupt "
        "coalescing and the completion's NAPI poll. A kernel that frees an skb on the CPU that "
        "allocated it (6.18's napi_consume_skb hands one completed on another CPU back to its own) "
        "fires the free when that CPU gets to it: such a completion is counted late, by the wait "
        "for that CPU.\n\n"
        "Where it means nothing: loopback and veth do not complete a transmit, they hand the skb "
        "to the receiving side, which frees it when it is done with it. There nettxlat measures "
        "how long the receiver kept the packet: an ICMP echo request is freed by the kernel's ICMP "
        "handler microseconds later, a reply or a raw socket's packet when the application reads "
        "it. UDP and TCP sockets free what they have read through a deferred per-CPU free that "
        "fires no tracepoint (seen on 6.18), so over loopback or veth their packets are mostly not "
        "counted at all (nor timed wrongly: the next skb at that address carries another data "
        "buffer and is told apart). The same goes for any driver that frees completed skbs without "
        "skb:consume_skb or skb:kfree_skb. A stacked device (VLAN, bond, tunnel) hands the skb to "
        "the device below: the time is counted from the last device's start.\n\n"
        "A transmit belongs to the network namespace of its device. nettxlat counts the namespace "
        "it runs in; --netns NETNS counts another (a name from `ip netns list`, a namespace file "
        "such as /proc/PID/ns/net, or its inode number) and --all-netns all of them, each "
        "apart.\n\n"
        "The original nettxlat.bt pairs the same tracepoints (net_dev_start_xmit and "
        "skb:consume_skb, as classic tracepoints); netkit also ends a transmit at skb:kfree_skb, "
        "so drivers that complete transmits that way are counted, and reads the device from BTF. "
        "The histograms are printed every INTERVAL when one is given, and for the whole run at the "
        "end (Ctrl-C, SIGTERM, -d or COUNT)."),
    examples=[
        ("netkit nettxlat", "this namespace, until Ctrl-C"),
        ("netkit nettxlat --dev 5", "per device, every five seconds"),
        ("netkit nettxlat --dev -m -d 30", "per device in milliseconds, for 30 s"),
        ("netkit nettxlat --all-netns --dev --json", "every namespace, as NDJSON"),
    ],
    output=(
        "Per interval (with INTERVAL) and for the run: a heading (the time of day, or the run's "
        "length), then one histogram per device (with --dev; else one for all devices) and "
        "namespace (with --all-netns), titled with them, the count and the mean (exact, not from "
        "the buckets); rows are [low, high) ranges in us (ms with -m).\n\n"
        "JSON (--json): one object per histogram with type \"hist\", scope (\"interval\" or "
        "\"run\"), ts, interval_s or duration_s, netns (inode), dev and ifindex (null without "
        "--dev), count, latency_us_sum, latency_us_avg and latency_us, the histogram: a list of "
        "objects with low, high and count for the bucket [low, high) (latency_ms_* with -m). At "
        "the end one object with type \"summary\", duration_s, netns (null with --all-netns), "
        "transmits (all timed), consumed and kfree_skb (how their skbs were freed) and reused "
        "(skbs sent whose free no tracepoint showed: their sk_buff came back with another data "
        "buffer; not timed). In text the same counts end the output.\n\n"
        "Exporters: netkit_nettxlat_latency_seconds, a histogram with labels dev (with --dev) and "
        "netns (with --all-netns)."),
    see_also=["netkit-qdisclat(8)", "netkit-netsize(8)", "ethtool(8)",
              "nettxlat.bt (BPF Performance Tools, ch. 10)"],
)


def histograms(obj):
    from netkit.engine.devhist import Device, histograms as read
    return read(obj.map("hists"), Device.of)


def snapshot(ts: float, totals: dict, all_netns: bool, units):
    from netkit.engine.devhist import device_labels, metric_histograms
    from netkit.metrics import Snapshot
    return Snapshot("nettxlat", ts, histograms=metric_histograms(
        "nettxlat_latency", "Device transmit latency: net_dev_start_xmit to the skb's free",
        totals, lambda device: device_labels(device, all_netns),
        unit_seconds=units.ns * 1e-9, sum_scale=1 / units.ns))


def _open(inode: int | None, per_device: bool, units):
    from netkit.engine import netns as namespaces
    from netkit.engine.bpfobject import BPFObject
    return BPFObject("nettxlat", rodata={**namespaces.rodata(inode), "per_device": per_device,
                                         "unit_ns": units.ns})


def export_source():
    """For `netkit export`: transmit latency per device in netkit's own namespace (us)."""
    from netkit.cli.histloop import exported_histograms
    from netkit.engine import netns as namespaces
    from netkit.render.fields import Units
    units = Units(False)
    return exported_histograms(_open(namespaces.current(), True, units), histograms,
                               lambda ts, totals: snapshot(ts, totals, False, units))


@export_options("nettxlat")
def command(
    interval: IntervalArg = None,
    count: CountArg = None,
    dev: PerDeviceOpt = False,
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
    from netkit.engine.counters import Counts
    from netkit.render.fields import Units
    from netkit.render.histsets import HistSets, device_fields, device_title, traced_namespaces

    inode = netns_of(netns, all_netns)
    units = Units(milliseconds)
    out = open_output(json, no_color, verbose)
    with _open(inode, dev, units) as obj:
        if duration == 0:
            return
        view = HistSets(out, units.key("latency"), units.name, sum_scale=1 / units.ns,
                        title=lambda device: device_title(device, inode is None),
                        fields=device_fields, empty="(no transmit completed)")
        seconds, totals = trace_histograms(
            out, histograms(obj), view, interval=interval, count=count, duration=duration,
            exporters=exporters,
            snapshot=lambda ts, totals: snapshot(ts, totals, inode is None, units),
            banner=f"Tracing device transmits in {traced_namespaces(inode)}... "
                   f"Hit Ctrl-C to end.",
            heading="Transmit latency over {seconds:.1f} s:")
        frees = Counts.of(obj.map("counts").lookup(0), ["consumed", "kfreed", "reused"])
        timed = sum(hist.count for hist in totals.values())
        if out.mode == "json":
            out.record({"type": "summary", "duration_s": round(seconds, 3), "netns": inode,
                        "transmits": timed, "consumed": frees["consumed"],
                        "kfree_skb": frees["kfreed"], "reused": frees["reused"]})
        else:
            out.line()
            out.line(f"{timed} transmits timed ({frees['consumed']} ended by consume_skb, "
                     f"{frees['kfreed']} by kfree_skb); {frees['reused']} not timed (freed "
                     f"unseen, their sk_buff reused)")
