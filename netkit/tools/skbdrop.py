"""Packets the kernel dropped, counted by the reason it gives, with the kernel stacks that dropped
them (-s) and the SNMP counters that moved meanwhile (as nstat shows them).

One BTF tracepoint, skb:kfree_skb, for every protocol; the reasons are named from the running
kernel's BTF (enum skb_drop_reason). Counts are kept in the kernel, per reason and protocol.
"""
from __future__ import annotations

import contextlib
from typing import Annotated, NamedTuple

import typer

from netkit.cli.loop import Loop
from netkit.cli.options import (AllNetnsOpt, CgroupOpt, CountArg, DurationOpt, IntervalArg,
                                JsonOpt, NameOpt, NetnsOpt, NoColorOpt, PidOpt, VerboseOpt)
from netkit.cli.tool import ManPage, open_output
from netkit.export import ExportHub, export_options
from netkit.render.output import Column

SUMMARY = "Dropped packets by kernel drop reason, with stacks and SNMP counters (tracepoint)."

MAN = ManPage(
    description=(
        "skbdrop counts the packets the kernel drops, by the reason it gives. Every protocol is "
        "seen: TCP, UDP, ICMP, ARP, whatever a device or the stack frees as dropped. The reason "
        "comes with the skb:kfree_skb tracepoint (Linux 5.17 and later) and is named from the "
        "running kernel's BTF (enum skb_drop_reason), so a reason a newer kernel adds is named "
        "too: NO_SOCKET (no socket listens on the port), SOCKET_RCVBUFF (the socket's receive "
        "buffer was full), NETFILTER_DROP (a firewall rule), TCP_LISTEN_OVERFLOW, "
        "QDISC_DROP... With -s each reason is split by the kernel stack that dropped the packet, "
        "symbolized from /proc/kallsyms. At the end the SNMP counters of the traced network "
        "namespace that moved during the run are listed as nstat(8) shows them (/proc/net/snmp, "
        "/proc/net/netstat and /proc/net/snmp6: UdpNoPorts, UdpRcvbufErrors, TcpExtTCPBacklogDrop, "
        "...), the kernel's own account to set the drops beside.\n\n"
        "Normal frees are not drops. A packet the stack is done with is freed through "
        "skb:consume_skb (reason CONSUMED), which skbdrop does not trace. A free with the reason "
        "NOT_SPECIFIED says nothing: drops the kernel has not named yet, but also packets some "
        "drivers and older code free when they are simply done with them (a transmit "
        "completion through dev_kfree_skb_any, vsock). They are counted apart and shown as "
        "\"unspecified\"; --unspecified counts them as drops.\n\n"
        "Packets are counted in the network namespace they were dropped in: the receiving "
        "socket's, else the device's, else the sending socket's. By default that is netkit's "
        "own namespace; --netns traces another, --all-netns all of them with a NETNS column. "
        "-p, -n and -c select by the task the kernel was running for when it dropped the "
        "packet: the sender for drops on the way out, and on loopback and veth, whose receive "
        "path runs in the sending task at the end of its send, for drops on the way in too, "
        "unless the kernel hands that work to ksoftirqd/N (softirq work that ran over its 2 ms "
        "budget; before Linux 6.5 also whenever ksoftirqd is already running on that CPU, as on "
        "a busy machine): those drops are ksoftirqd's. A packet from a real network device is "
        "received in softirq on whichever task it interrupted (or ksoftirqd), so select by "
        "namespace there, not by process.\n\n"
        "Against the book's skbdrop.bt (a kprobe-free tool already: skb:kfree_skb and nstat): "
        "the same tracepoint, counted in the kernel by reason instead of printing every stack, "
        "stacks on demand, and no nstat process. The drop reason needs Linux 5.17, the "
        "receiving socket (which places a drop in its namespace) 6.10."),
    examples=[
        ("netkit skbdrop", "drops by reason until Ctrl-C, then the SNMP counters that moved"),
        ("netkit skbdrop 1 10", "ten one-second intervals"),
        ("netkit skbdrop -s -d 10", "ten seconds, with the kernel stack of each drop"),
        ("netkit skbdrop --all-netns", "every network namespace (containers too)"),
        ("netkit skbdrop --netns web --json", "one named namespace, as NDJSON"),
    ],
    output=(
        "Intervals: TIME, REASON, IP (4 or 6; - for a packet that is not IP), PROTOCOL (TCP, "
        "UDP, ICMP, ICMPv6... for IP packets, else the EtherType: ARP, LLDP, 0x88cc), DROPS, and NETNS with --all-netns. At the end the same "
        "for the whole run, the number of NOT_SPECIFIED frees left out, each stack with -s "
        "(frames innermost first), and SNMP COUNTER, CHANGE.\n\n"
        "JSON: per interval an object with type \"interval\", interval_s, drops (a list of "
        "objects with reason, protocol, family (\"IPv4\", \"IPv6\" or null), count, and netns "
        "with --all-netns, stack (a list of symbols) with -s), unspecified; at the end type "
        "\"summary\" with duration_s, netns (null with --all-netns), drops and unspecified for "
        "the run, total (drops), snmp (counter name to change, only those that moved) and "
        "lost_events (stacks the kernel could not store, with -s)."),
    see_also=["netkit-tcpdrop(8)", "nstat(8)", "dropwatch(1)", "perf-trace(1)",
              "skbdrop.bt (BPF Performance Tools, ch. 10)"],
)

StackOpt = Annotated[bool, typer.Option("-s", "--stack", help="Split drops by the kernel stack "
                                                               "that dropped them.")]
UnspecifiedOpt = Annotated[bool, typer.Option(
    "--unspecified", help="Count frees with reason NOT_SPECIFIED as drops (some are normal "
                          "frees).")]


ARRAY_REASONS = 256         # skbdrop.h's (tests/test_c_constants.py ties the two)


class Drop(NamedTuple):
    """One key of the counts map, decoded."""
    reason: str
    protocol: str
    family: str | None
    netns: int
    stack_id: int


class DropCounts:
    """Both maps the kernel counts drops in, read together: the counts hash (any key) and the
    by_reason array (common protocols, one slot per reason and class; skbdrop.h)."""

    def __init__(self, obj, reasons):
        from netkit.engine.counters import CumulativeMap
        from netkit.render.fields import ip_version
        from netkit.render.packets import protocol_name

        def decode(k, per_cpu):
            return (Drop(reasons.name(k.reason), protocol_name(k.ethertype, k.family, k.l4),
                         ip_version(k.family) if k.family else None, k.netns, k.stack_id),
                    sum(v.value for v in per_cpu))
        classes = {value: name.removeprefix("drop_class_").upper().split("_")
                   for name, value in obj.enum("drop_class").items()
                   if name.startswith("drop_class_") and name != "drop_class_none"}
        n_classes = obj.enum("drop_class")["n_drop_classes"]
        protocols = {"ICMPV6": "ICMPv6"}
        families = {"IPV4": "IPv4", "IPV6": "IPv6", "NONE": None}

        def decode_slot(index, per_cpu):
            reason, cls = divmod(index, n_classes)
            protocol, family = classes[cls]
            return (Drop(reasons.name(reason), protocols.get(protocol, protocol),
                         families[family], 0, -1), sum(v.value for v in per_cpu))
        slots = [reason * n_classes + cls for reason in reasons.names
                 if reason < ARRAY_REASONS for cls in classes]
        self.maps = [CumulativeMap(obj.map("counts"), decode),
                     CumulativeMap(Slots(obj.map("by_reason"), slots), decode_slot)]

    def read(self) -> dict:
        changes: dict = {}
        for m in self.maps:
            for drop, n in m.read().items():
                changes[drop] = changes.get(drop, 0) + n
        return changes

    def totals(self) -> dict:
        totals: dict = {}
        for m in self.maps:
            for drop, n in m.totals().items():
                if n:
                    totals[drop] = totals.get(drop, 0) + n
        return totals


class Slots:
    """Chosen slots of a BPF array, with the items() a CumulativeMap reads."""

    def __init__(self, bpf_map, indices: list[int]):
        self.map, self.indices = bpf_map, indices

    def items(self):
        for index in self.indices:
            value = self.map.lookup(index)
            if value is not None:
                yield index, value


def merged(counts: dict[Drop, int], with_stacks: bool) -> list[tuple[Drop, int]]:
    """Counts by reason and protocol (and namespace), stacks summed unless they are asked for;
    the most frequent first."""
    total: dict[Drop, int] = {}
    for drop, n in counts.items():
        key = drop if with_stacks else drop._replace(stack_id=-1)
        total[key] = total.get(key, 0) + n
    return sorted(total.items(), key=lambda kv: (-kv[1], kv[0].reason, kv[0].protocol))


class Unspecified:
    """The per-CPU count of NOT_SPECIFIED frees left out, read as a cumulative counter."""

    def __init__(self, bpf_map):
        self.map, self.last = bpf_map, 0

    def total(self) -> int:
        per_cpu = self.map.lookup(0)
        return sum(v.value for v in per_cpu) if per_cpu else 0

    def interval(self) -> int:
        now = self.total()
        change, self.last = now - self.last, now
        return change


def open_drops(pid, name, cgroup, netns: int | None, stacks=False, unspecified=False,
          tcp_family: int | None = None):
    """netns: the inode of the namespace to trace, None for all. tcp_family: tcpdrop's events
    (0 for both families, 4 or 6) instead of skbdrop's counts."""
    from netkit.engine import netns as namespaces
    from netkit.engine import sockowners
    from netkit.engine.bpfobject import OBJECT_DIR, BPFObject, Filters
    tcpdrop = tcp_family is not None
    rodata = {**namespaces.rodata(netns), "with_stacks": stacks,
              "count_unspecified": unspecified, "key_netns": netns is None,
              "count_drops": not tcpdrop, "tcp_events": tcpdrop,
              "filter_family": tcp_family or 0}
    # tcpdrop runs skbdrop's object: its errors must name the tool the user ran.
    return BPFObject("tcpdrop" if tcpdrop else "skbdrop", Filters(pid, name, cgroup),
                     rodata=rodata, manual=sockowners.unattached(tcpdrop),
                     path=OBJECT_DIR / "skbdrop.bpf.o",
                     arg_types={"kfree_skb": (3, "struct sock *")})   # rx_sk: 6.11


def snapshot(ts: float, totals: dict[Drop, int], unspecified: int):
    from netkit.metrics import Counter, Snapshot
    counters = [Counter("skbdrop_drops", "Packets dropped, by kernel drop reason and protocol",
                        n, {"reason": d.reason, "protocol": d.protocol})
                for d, n in merged(totals, False)]
    counters.append(Counter("skbdrop_unspecified_frees", "Packets freed with reason "
                            "NOT_SPECIFIED (drops or normal frees; not counted as drops)",
                            unspecified))
    return Snapshot("skbdrop", ts, counters=counters)


@contextlib.contextmanager
def export_source(pid: int | None = None, name: str | None = None, cgroup: str | None = None):
    """For `netkit export`: drops by reason and protocol in netkit's network namespace."""
    from netkit.engine import netns
    from netkit.engine.dropreasons import kernel_drop_reasons
    reasons = kernel_drop_reasons()
    with open_drops(pid, name, cgroup, netns.current()) as obj:
        counts = DropCounts(obj, reasons)
        unspecified = Unspecified(obj.map("unspecified"))

        def sample(ts: float):
            counts.read()
            return snapshot(ts, counts.totals(), unspecified.total())
        yield sample


class SkbdropView:
    def __init__(self, out, all_netns: bool, stacks: bool, symbols, stack_map):
        from netkit.engine.kallsyms import StackNames
        from netkit.render.output import StreamTable
        self.out, self.all_netns, self.stacks = out, all_netns, stacks
        self.stack = StackNames(stack_map, symbols)
        where = [Column("NETNS", 10)] if all_netns else []
        self.columns = [Column("REASON", 24, "<", style="bold"), Column("IP", 2, "<"),
                        Column("PROTOCOL", 8, "<")] + where + [Column("DROPS", 8)]
        self.stream = StreamTable(out, [Column("TIME", 8, "<", style="dim")] + self.columns)

    def _json(self, rows) -> list[dict]:
        records = []
        for d, n in rows:
            record = {"reason": d.reason, "protocol": d.protocol, "family": d.family, "count": n}
            if self.all_netns:
                record["netns"] = d.netns
            if self.stacks:
                record["stack"] = self.stack(d.stack_id)
            records.append(record)
        return records

    def _cells(self, d: Drop, n: int) -> list:
        ip = d.family.removeprefix("IPv") if d.family else "-"
        return [d.reason, ip, d.protocol] + ([d.netns] if self.all_netns else []) + [n]

    def interval(self, ts: float, seconds: float, delta: dict, unspecified: int) -> None:
        from netkit.render.fields import clock
        rows = merged(delta, self.stacks)
        if self.out.mode == "json":
            self.out.record({"type": "interval", "interval_s": round(seconds, 3),
                             "drops": self._json(rows), "unspecified": unspecified})
            return
        if not rows:
            self.stream.row([clock(ts), "(no drops)"] + [""] * (len(self.columns) - 1))
        for d, n in merged(delta, False):
            self.stream.row([clock(ts)] + self._cells(d, n))

    def summary(self, seconds: float, netns, totals: dict, unspecified: int,
                snmp: dict[str, int], lost: int) -> None:
        rows = merged(totals, self.stacks)
        if self.out.mode == "json":
            self.out.record({"type": "summary", "duration_s": round(seconds, 3), "netns": netns,
                             "drops": self._json(rows), "total": sum(totals.values()),
                             "unspecified": unspecified, "snmp": snmp, "lost_events": lost})
            return
        self.out.line()
        plain = merged(totals, False)
        if plain:
            self.out.table(self.columns, [self._cells(d, n) for d, n in plain],
                           title=f"Drops over {seconds:.1f} s:")
        else:
            self.out.line(f"No drops in {seconds:.1f} s.")
        if unspecified:
            self.out.line(f"Frees with reason NOT_SPECIFIED, not counted: {unspecified} "
                          f"(--unspecified counts them)")
        if self.stacks:
            for d, n in rows:
                self.out.line()
                where = f" in netns {d.netns}" if self.all_netns else ""
                ip = f" {d.family}" if d.family else ""
                self.out.line(f"{d.reason} {d.protocol}{ip}{where}: {n}", style="bold")
                for frame in self.stack(d.stack_id):
                    self.out.line(f"    {frame}")
        self.out.line()
        if snmp:
            self.out.table([Column("SNMP COUNTER", 28, "<"), Column("CHANGE", 10)],
                           sorted(snmp.items()), title="SNMP counters that moved:")
        else:
            self.out.line("No SNMP counter moved.")
        self.out.lost("skbdrop", lost, "stacks", "the stack map was full or two stacks shared "
                                                  "a slot")


@export_options("skbdrop")
def command(
    interval: IntervalArg = None,
    count: CountArg = None,
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    stack: StackOpt = False,
    unspecified: UnspecifiedOpt = False,
    netns: NetnsOpt = None,
    all_netns: AllNetnsOpt = False,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
    exporters: ExportHub = None,
):
    from netkit.cli.options import netns_of
    from netkit.engine import snmp
    from netkit.engine.dropreasons import kernel_drop_reasons
    from netkit.engine.kallsyms import KernelSymbols

    traced = netns_of(netns, all_netns)
    out = open_output(json, no_color, verbose)
    reasons = kernel_drop_reasons()
    symbols = KernelSymbols() if stack else None
    counters = snmp.Counters(traced)
    with open_drops(pid, name, cgroup, traced, stack, unspecified) as obj:
        if duration == 0:
            return
        view = SkbdropView(out, traced is None, stack, symbols, obj.map("stacks"))
        counts = DropCounts(obj, reasons)
        frees = Unspecified(obj.map("unspecified"))

        def tick(ts: float, seconds: float, show: bool):
            delta = counts.read()
            left_out = frees.interval()
            if show:
                view.interval(ts, seconds, delta, left_out)
            return snapshot(ts, counts.totals(), frees.total()) if exporters else None

        loop = Loop(out, interval=interval, count=count, duration=duration, exporters=exporters)
        where = "every network namespace" if traced is None else f"network namespace {traced}"
        seconds = loop.run(tick, f"Tracing packet drops in {where}... Hit Ctrl-C to end.")
        totals = counts.totals()
        lost = sum(n for d, n in totals.items() if d.stack_id < 0) if stack else 0
        view.summary(seconds, traced, totals, frees.total(), counters.total(), lost)
