"""Inbound IPv4 and IPv6 packets marked Congestion Experienced (ECN CE), counted by source
address per interval, or one line each (-e). Tracepoint net:netif_receive_skb.
"""
from __future__ import annotations

from typing import Annotated, NamedTuple

import typer

from netkit.cli.loop import Loop
from netkit.cli.options import (AllNetnsOpt, CountArg, DurationOpt, IntervalArg, Ipv4Opt,
                                Ipv6Opt, JsonOpt, NetnsOpt, NoColorOpt, VerboseOpt, family_of)
from netkit.cli.tool import ManPage, open_output
from netkit.export import ExportHub, export_options
from netkit.render.output import Column

SUMMARY = "Inbound ECN Congestion Experienced packets by source address (tracepoint)."

MAN = ManPage(
    description=(
        "ipecn counts the IP packets that arrive marked Congestion Experienced: the two ECN "
        "bits of the IPv4 TOS byte or the IPv6 traffic class are 11 (RFC 3168), which a router "
        "with an AQM (fq_codel, RED, DualPI2...) sets instead of dropping a packet of an "
        "ECN-capable flow. Packets are counted per source address in the kernel and shown "
        "every INTERVAL and for the whole run; with -e one line per packet as it arrives. "
        "ECT(0) (10) and ECT(1) (01), which only say the flow can take a mark, are not "
        "counted.\n\n"
        "The book's ipecn.bt reads the IPv4 header with a kprobe on ip_rcv and prints a line "
        "per CE packet. netkit uses the net:netif_receive_skb tracepoint, which fires just "
        "before IP input for every packet the stack receives, and reads the header there, so "
        "it sees what ip_rcv sees, IPv6 included (and, like it, also packets that IP will "
        "then drop: a bad checksum, no route). Packets received through GRO are seen once per "
        "merged packet, with the mark of the first: GRO merges only segments with the same "
        "ECN bits.\n\n"
        "A packet is received in a network namespace (its device's): ipecn counts netkit's "
        "own by default, another with --netns, every one with --all-netns (a NETNS column). "
        "Packets arrive in softirq, on no process's behalf, so -p, -n and -c are not offered."),
    examples=[
        ("netkit ipecn 1", "CE packets by source, every second"),
        ("netkit ipecn -e", "one line per CE packet, as the book's ipecn"),
        ("netkit ipecn --all-netns -d 60 --json", "a minute of every namespace, as NDJSON"),
    ],
    output=(
        "Intervals: TIME, SADDR (the packets' source), NETNS (with --all-netns), CE (packets); "
        "at the end the same for the run. -e: TIME (HH:MM:SS.mmm), NETNS (with --all-netns), "
        "SADDR, DADDR.\n\n"
        "JSON: per interval an object with type \"interval\", interval_s, packets and sources, "
        "a list of objects with saddr, family (\"IPv4\" or \"IPv6\"), count (and netns with "
        "--all-netns); with -e per packet type \"event\", ts, saddr, daddr, family, netns and "
        "ifindex; at the end type \"summary\" with duration_s, netns (null with --all-netns), "
        "packets, sources and lost_events.\n\n"
        "Exporters: netkit_ipecn_ce_packets_total, labelled by saddr."),
    see_also=["tc-fq_codel(8)", "tc-red(8)", "ipecn.bt (BPF Performance Tools, ch. 10)"],
)

EventsOpt = Annotated[bool, typer.Option("-e", "--events", help="Print one line per CE "
                                                                "packet.")]


class Source(NamedTuple):
    netns: int
    family: int
    saddr: str


def ce_counts(counts_map):
    from netkit.engine.counters import CumulativeMap
    from netkit.render.fields import ip_address

    def decode(k, per_cpu):
        return (Source(k.netns, k.family, ip_address(k.family, k.saddr)),
                sum(v.value for v in per_cpu))
    return CumulativeMap(counts_map, decode)


def ranked(counts: dict) -> list:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _open(inode: int | None, family: int = 0, events: bool = False):
    from netkit.engine import netns as namespaces
    from netkit.engine.bpfobject import BPFObject
    return BPFObject("ipecn", rodata={**namespaces.rodata(inode), "key_netns": inode is None,
                                      "emit_events": events, "filter_ip": family})


def snapshot(ts: float, totals: dict):
    from netkit.metrics import Counter, Snapshot
    merged: dict[str, int] = {}
    for source, n in totals.items():
        merged[source.saddr] = merged.get(source.saddr, 0) + n
    return Snapshot("ipecn", ts, counters=[
        Counter("ipecn_ce_packets", "Inbound IP packets marked ECN Congestion Experienced",
                n, {"saddr": saddr}) for saddr, n in sorted(merged.items())])


def export_source():
    """For `netkit export`: CE packets by source in netkit's own namespace."""
    import contextlib

    from netkit.engine import netns as namespaces

    @contextlib.contextmanager
    def source():
        with _open(namespaces.current()) as obj:
            counts = ce_counts(obj.map("counts"))

            def sample(ts: float):
                counts.read()
                return snapshot(ts, counts.totals())
            yield sample
    return source()


class IpecnView:
    def __init__(self, out, all_netns: bool):
        from netkit.render.fields import KernelClock
        from netkit.render.output import StreamTable
        self.out, self.all_netns = out, all_netns
        self.clock = KernelClock()
        where = [Column("NETNS", 10)] if all_netns else []
        self.columns = [Column("SADDR", 39, "<")] + where + [Column("CE", 8)]
        self.stream = StreamTable(out, [Column("TIME", 8, "<", style="dim")] + self.columns)
        self.lines = StreamTable(out, [Column("TIME", 12, "<", style="dim")] + where +
                                 [Column("SADDR", 39, "<"), Column("DADDR", 39, "<")])

    def _json(self, counts: dict) -> list[dict]:
        from netkit.render.fields import ip_version
        return [{"saddr": s.saddr, "family": ip_version(s.family), "count": n,
                 **({"netns": s.netns} if self.all_netns else {})} for s, n in ranked(counts)]

    def _cells(self, source: Source, n: int) -> list:
        return [source.saddr] + ([source.netns] if self.all_netns else []) + [n]

    def event(self, e) -> None:
        from netkit.render.fields import clock_ms, ip_address, ip_version, iso
        when = self.clock.wall(e.ts_ns)
        saddr, daddr = ip_address(e.family, e.saddr), ip_address(e.family, e.daddr)
        if self.out.mode == "json":
            self.out.record({"type": "event", "ts": iso(when, "microseconds"), "saddr": saddr,
                             "daddr": daddr, "family": ip_version(e.family), "netns": e.netns,
                             "ifindex": e.ifindex})
            return
        self.lines.row([clock_ms(when)] + ([e.netns] if self.all_netns else []) +
                       [saddr, daddr])

    def interval(self, ts: float, seconds: float, delta: dict) -> None:
        from netkit.render.fields import clock
        if self.out.mode == "json":
            self.out.record({"type": "interval", "interval_s": round(seconds, 3),
                             "packets": sum(delta.values()), "sources": self._json(delta)})
            return
        if not delta:
            self.stream.row([clock(ts), "(no CE packets)"] + [""] * (len(self.columns) - 1))
        for source, n in ranked(delta):
            self.stream.row([clock(ts)] + self._cells(source, n))

    def summary(self, seconds: float, inode, totals: dict, lost: int) -> None:
        if self.out.mode == "json":
            self.out.record({"type": "summary", "duration_s": round(seconds, 3), "netns": inode,
                             "packets": sum(totals.values()), "sources": self._json(totals),
                             "lost_events": lost})
            return
        self.out.line()
        if totals:
            self.out.table(self.columns, [self._cells(s, n) for s, n in ranked(totals)],
                           title=f"CE packets over {seconds:.1f} s:")
        else:
            self.out.line(f"No CE packets in {seconds:.1f} s.")
        self.out.lost("ipecn", lost)


@export_options("ipecn")
def command(
    interval: IntervalArg = None,
    count: CountArg = None,
    events: EventsOpt = False,
    ipv4: Ipv4Opt = False,
    ipv6: Ipv6Opt = False,
    netns: NetnsOpt = None,
    all_netns: AllNetnsOpt = False,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
    exporters: ExportHub = None,
):
    from netkit.cli.options import netns_of
    from netkit.render.histsets import traced_namespaces

    family = family_of(ipv4, ipv6)
    inode = netns_of(netns, all_netns)
    out = open_output(json, no_color, verbose)
    with _open(inode, family, events) as obj:
        if duration == 0:
            return
        view = IpecnView(out, inode is None)
        counts = ce_counts(obj.map("counts"))
        ring = obj.ring_buffer("events", "ce_event", view.event) if events else None

        def tick(ts: float, seconds: float, show: bool):
            delta = counts.read()
            if show:
                view.interval(ts, seconds, delta)
            return snapshot(ts, counts.totals()) if exporters else None

        loop = Loop(out, interval=interval, count=count, duration=duration, rings=[ring],
                    exporters=exporters)
        seconds = loop.run(tick, f"Tracing ECN CE packets in {traced_namespaces(inode)}... "
                                 "Hit Ctrl-C to end.")
        view.summary(seconds, inode, counts.totals(), obj.lost_events())
