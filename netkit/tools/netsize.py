"""Packet sizes where the stack meets the device, as log2 histograms: what the stack receives and
sends against what the NIC receives (before GRO) and sends (after GSO), so GRO and TSO/GSO can
be seen at work. Per interval and for the run, per network namespace or per device (--dev).
Tracepoints only (net:*), histograms kept in the kernel.
"""
from __future__ import annotations

from typing import NamedTuple

from netkit.cli.options import (AllNetnsOpt, CountArg, DurationOpt, IntervalArg, JsonOpt,
                                NetnsOpt, NoColorOpt, PerDeviceOpt, VerboseOpt)
from netkit.cli.tool import ManPage, open_output
from netkit.export import ExportHub, export_options

SUMMARY = "Packet size histograms at the stack and the NIC, send and receive, per device."

# The points in the order a packet meets them (in, then out); names from enum netsize_point.
POINTS = {"nic_recv": "napi_gro_receive_entry", "recv": "netif_receive_skb",
          "send": "net_dev_queue", "nic_send": "net_dev_xmit"}

MAN = ManPage(
    description=(
        "netsize counts the sizes of packets (skb->len, in bytes) at four points and keeps a log2 "
        "histogram of each in the kernel: nic_recv, what a driver hands to GRO "
        "(net:napi_gro_receive_entry and net:napi_gro_frags_entry); recv, what the stack receives "
        "after GRO (net:netif_receive_skb); send, what the stack hands to a device before GSO "
        "(net:net_dev_queue); nic_send, what the driver took, after GSO (net:net_dev_xmit). When "
        "GRO works, recv holds fewer and larger packets than nic_recv; when the device segments "
        "(TSO, USO), send and nic_send hold the same large packets, and when the stack must "
        "segment them itself (GSO in software), nic_send holds the MTU-sized pieces of each large "
        "send. A driver without NAPI GRO (loopback, veth without GRO) shows no nic_recv.\n\n"
        "Sizes on the send side include the link-layer header (14 bytes on Ethernet), those on the "
        "receive side do not (the driver has pulled it). A transmit the driver refused "
        "(NETDEV_TX_BUSY) is counted once, when it is taken.\n\n"
        "A packet event belongs to the network namespace of its device. netsize counts the "
        "namespace it runs in; --netns NETNS counts another (a name from `ip netns list`, a "
        "namespace file such as /proc/PID/ns/net, or its inode number) and --all-netns all of "
        "them, each apart. A packet that crosses namespaces on the host (a veth pair) is counted "
        "in each: sent in one, received in the other.\n\n"
        "The original netsize.bt uses the same tracepoints (classic ones; netkit reads the same "
        "fields through BTF), so it sees what it saw, with two differences: the NIC receive side "
        "also covers drivers that build skbs from page fragments (napi_gro_frags_entry), and a "
        "refused transmit is not counted twice. The histograms are printed every INTERVAL when one "
        "is given, and for the whole run at the end (Ctrl-C, SIGTERM, -d or COUNT)."),
    examples=[
        ("netkit netsize", "this namespace's four histograms until Ctrl-C"),
        ("netkit netsize --dev 5", "per device, every five seconds"),
        ("netkit netsize --all-netns --dev -d 10", "every namespace and device, for 10 s"),
        ("netkit netsize --netns /proc/4242/ns/net", "the namespace of process 4242"),
        ("netkit netsize --json 1 3", "three one-second intervals as NDJSON"),
    ],
    output=(
        "Per interval (with INTERVAL) and for the run: a heading (the time of day, or the run's "
        "length), then one histogram per point, device (with --dev) and namespace (with "
        "--all-netns), titled with them, the point's tracepoint, the packet count and the mean "
        "size; rows are [low, high) byte ranges with a count and a bar.\n\n"
        "JSON (--json): one object per histogram with type \"hist\", scope (\"interval\" or "
        "\"run\"), ts, interval_s or duration_s, netns (inode), dev and ifindex (null without "
        "--dev), point (nic_recv, recv, send, nic_send), tracepoint, count, size_bytes_sum, "
        "size_bytes_avg and size_bytes, the histogram: a list of objects with low, high and count "
        "for the bucket [low, high) in bytes. At the end one object with type \"summary\", "
        "duration_s, netns (null with --all-netns) and packets (the count per point).\n\n"
        "Exporters: netkit_netsize_packet_bytes, a histogram with labels point, dev (with --dev) "
        "and netns (with --all-netns)."),
    see_also=["ethtool(8)", "netkit-nettxlat(8)", "netkit-qdisclat(8)",
              "netsize.bt (BPF Performance Tools, ch. 10)"],
)


class Key(NamedTuple):
    """One histogram: a device (or all of a namespace's) and a point; sorts in display order."""
    netns: int
    ifindex: int
    order: int
    point: str
    name: str

    @property
    def device(self):
        from netkit.engine.devhist import Device
        return Device(self.netns, self.ifindex, self.name)


def histograms(obj):
    from netkit.engine.devhist import Device, histograms as read
    names = {number: name for name, number in obj.enum("netsize_point").items()}
    order = list(POINTS)

    def decode(key):
        device = Device.of(key.dev)
        point = names[key.point]
        return Key(device.netns, device.ifindex, order.index(point), point, device.name)
    return read(obj.map("hists"), decode)


def snapshot(ts: float, totals: dict, all_netns: bool):
    from netkit.engine.devhist import device_labels, metric_histograms
    from netkit.metrics import Snapshot
    return Snapshot("netsize", ts, histograms=metric_histograms(
        "netsize_packet", "Packet sizes at the stack (recv, send) and the NIC (nic_recv, nic_send)",
        totals, lambda key: {"point": key.point, **device_labels(key.device, all_netns)},
        unit_seconds=1.0, unit="bytes"))


def _open(inode: int | None, per_device: bool):
    from netkit.engine import netns as namespaces
    from netkit.engine.bpfobject import BPFObject
    return BPFObject("netsize", rodata={**namespaces.rodata(inode), "per_device": per_device})


def export_source():
    """For `netkit export`: packet sizes per device in netkit's own namespace."""
    from netkit.cli.histloop import exported_histograms
    from netkit.engine import netns as namespaces
    return exported_histograms(_open(namespaces.current(), True), histograms,
                               lambda ts, totals: snapshot(ts, totals, False))


def view(out, all_netns: bool):
    from netkit.render.histsets import HistSets, device_fields, device_title
    return HistSets(
        out, "size_bytes", "bytes",
        title=lambda key: f"{device_title(key.device, all_netns)}: {key.point} "
                          f"({POINTS[key.point]})",
        fields=lambda key: {**device_fields(key.device), "point": key.point,
                            "tracepoint": POINTS[key.point]},
        empty="(no packets)")


@export_options("netsize")
def command(
    interval: IntervalArg = None,
    count: CountArg = None,
    dev: PerDeviceOpt = False,
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
    from netkit.render.histsets import traced_namespaces

    inode = netns_of(netns, all_netns)
    out = open_output(json, no_color, verbose)
    with _open(inode, dev) as obj:
        if duration == 0:
            return
        seconds, totals = trace_histograms(
            out, histograms(obj), view(out, inode is None), interval=interval, count=count,
            duration=duration, exporters=exporters,
            snapshot=lambda ts, totals: snapshot(ts, totals, inode is None),
            banner=f"Tracing packet sizes in {traced_namespaces(inode)}... Hit Ctrl-C to end.",
            heading="Packet sizes over {seconds:.1f} s:")
        if out.mode == "json":
            packets = dict.fromkeys(POINTS, 0)
            for key, hist in totals.items():
                packets[key.point] += hist.count
            out.record({"type": "summary", "duration_s": round(seconds, 3), "netns": inode,
                        "packets": packets})
