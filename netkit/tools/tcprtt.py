"""Histograms of TCP's smoothed round-trip time (srtt), for all connections or per local or
remote address, as bcc's tcprtt (tracepoint tcp:tcp_probe).
"""
from __future__ import annotations

import ipaddress
from typing import Annotated, NamedTuple, Optional

import typer

from netkit.cli.options import (CgroupOpt, CountArg, DportOpt, DurationOpt, IntervalArg,
                                Ipv4Opt, Ipv6Opt, JsonOpt, LportOpt, MillisecondsOpt, NameOpt,
                                NoColorOpt, PidOpt, VerboseOpt, family_of, ports_of, seconds)
from netkit.cli.tool import ManPage, open_output
from netkit.engine.errors import UsageError
from netkit.export import ExportHub, export_options

SUMMARY = "Histograms of TCP smoothed RTT, all or per local/remote address (tracepoint)."

MAN = ManPage(
    description=(
        "tcprtt shows the smoothed round-trip time (srtt) that TCP keeps for each connection "
        "as log2 histograms: one for all connections, or one per local (-b) or remote (-B) "
        "address, for the whole run or every INTERVAL. A sample is taken each time a segment "
        "arrives on an established connection, so a busy connection weighs more than an idle "
        "one, as in bcc's tcprtt. srtt is TCP's own estimate (RFC 6298: an average of RTT "
        "samples with gain 1/8), not one packet's RTT; it is at least the path's round trip "
        "(twice the one-way delay) plus the time the peer holds its ACK.\n\n"
        "bcc's tcprtt reads tcp_sock.srtt_us at the entry of tcp_rcv_established with a kprobe "
        "(or fentry). netkit uses the tcp:tcp_probe tracepoint, which that function calls first "
        "with the socket, and reads the same field: the same samples, on kernels without "
        "kprobes. What neither sees: connections before ESTABLISHED and segments handled "
        "elsewhere (a SYN-ACK, a FIN in other states).\n\n"
        "bcc's letters that changed: -p and -P (local and remote port) are -L/--lport and "
        "-D/--dport here, as in netkit's other tools; -p, -n and -c select by the socket's "
        "owner (the process netkit saw connect, listen, accept or send on it; segments arrive "
        "in softirq, where the current task is any), and connections whose owner netkit has "
        "not seen since it started are then left out. -T (the "
        "time of day) and -e (count and average) are accepted, and always on: every output is "
        "headed by the time of day and every histogram titled with its count and exact mean. "
        "-a, -A, -b, -B, -m, -d, -i, -4 and -6 are bcc's; bcc's -D (debug: print the generated "
        "C) has nothing to print, the program being built once. INTERVAL may also be given as "
        "the first argument, as in netkit's other tools; the histograms of the whole run follow "
        "at the end (Ctrl-C, SIGTERM, -d or COUNT)."),
    examples=[
        ("netkit tcprtt", "one histogram of every connection's srtt, at Ctrl-C"),
        ("netkit tcprtt -i 1 -d 10", "every second for ten seconds (bcc's form)"),
        ("netkit tcprtt -B -e", "per remote address, with the average"),
        ("netkit tcprtt -D 443 -m", "connections to port 443, in milliseconds"),
        ("netkit tcprtt -A 10.0.0.7 --json", "one remote host, as NDJSON"),
    ],
    output=(
        "Text: a heading (the time of day, or the run's length), then per histogram a title "
        "(all connections, local address ADDR with -b, remote address ADDR with -B) with its "
        "count and average srtt, and the log2 buckets of srtt in us (ms with -m), each a "
        "[low, high) range with a count and a bar.\n\n"
        "JSON: one object per histogram with type \"hist\", scope (\"interval\" or \"run\"), "
        "ts, interval_s or duration_s, laddr (-b) or raddr (-B), count, srtt_us_sum, "
        "srtt_us_avg and srtt_us, the histogram: a list of objects with low, high and count for "
        "the bucket [low, high) (srtt_ms_* with -m). At the end one object with type "
        "\"summary\", duration_s, samples and lost_events (always 0: nothing is streamed).\n\n"
        "Exporters: netkit_tcprtt_srtt_seconds, a histogram (labels laddr or raddr with -b or "
        "-B)."),
    see_also=["tcprtt(8)", "ss(8)", "netkit-tcpwin(8)"],
)

EveryOpt = Annotated[Optional[float], typer.Option(
    "-i", "--interval", metavar="SECONDS", click_type=seconds(0.01), show_default=False,
    help="Seconds between outputs (bcc's -i; the same as the INTERVAL argument).")]
TimeOpt = Annotated[bool, typer.Option("-T", "--time", help="bcc's -T: the time of day heads "
                                                             "each output here in any case.")]
LaddrOpt = Annotated[Optional[str], typer.Option(
    "-a", "--laddr", metavar="ADDR", show_default=False,
    help="Only connections with this local address.")]
RaddrOpt = Annotated[Optional[str], typer.Option(
    "-A", "--raddr", metavar="ADDR", show_default=False,
    help="Only connections with this remote address.")]
ByLaddrOpt = Annotated[bool, typer.Option("-b", "--byladdr", help="One histogram per local "
                                                                    "address.")]
ByRaddrOpt = Annotated[bool, typer.Option("-B", "--byraddr", help="One histogram per remote "
                                                                    "address.")]
ExtendedOpt = Annotated[bool, typer.Option("-e", "--extension", help="bcc's -e: each "
                                             "histogram's count and average are shown in any case.")]

KEY_NONE, KEY_LADDR, KEY_RADDR = 0, 1, 2        # tcprtt.h's enum rtt_key_by


def address_of(text: str | None, option: str) -> tuple[int, bytes]:
    """An -a/-A address as (family 4 or 6, 16 bytes with IPv4 first); (0, b'') for none."""
    if text is None:
        return 0, b""
    try:
        address = ipaddress.ip_address(text.strip().split("%")[0])
    except ValueError:
        raise UsageError(f"{option} {text}: not an IPv4 or IPv6 address") from None
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.version, address.packed.ljust(16, b"\0")


class Key(NamedTuple):
    address: str            # "" for all connections


def histograms(hists_map):
    from netkit.engine.counters import CumulativeMap
    from netkit.engine.hist import Log2Hist
    from netkit.render.fields import ip_address

    def decode(k, value):
        return (Key(ip_address(k.family, k.addr) if k.family else ""),
                Log2Hist.from_value(value))
    return CumulativeMap(hists_map, decode)


def _open(dports=(), lports=(), family=0, laddr=(0, b""), raddr=(0, b""), key_by=KEY_NONE,
          ms=False, pid=None, name=None, cgroup=None):
    from netkit.engine import sockowners
    from netkit.engine.bpfobject import BPFObject, Filters
    owners = sockowners.process_filtered(pid, name, cgroup)
    rodata = {"key_by": key_by, "filter_ip": family, "unit_us": 1000 if ms else 1,
              "filter_laddr_family": laddr[0], "filter_raddr_family": raddr[0]}
    if laddr[0]:
        rodata["filter_laddr"] = laddr[1]
    if raddr[0]:
        rodata["filter_raddr"] = raddr[1]
    return BPFObject("tcprtt", Filters(pid, name, cgroup, dports=list(dports),
                                       lports=list(lports)), rodata=rodata,
                     manual=sockowners.unattached(owners))


def snapshot(ts: float, totals: dict, key_by: int, ms: bool):
    from netkit.metrics import Histogram, Snapshot
    unit = 1e-3 if ms else 1e-6
    label = {KEY_LADDR: "laddr", KEY_RADDR: "raddr"}.get(key_by)
    return Snapshot("tcprtt", ts, histograms=[
        Histogram("tcprtt_srtt", "TCP smoothed round-trip time, sampled at each segment "
                  "received on an established connection", tuple(h.slots), h.sum, unit,
                  {label: key.address} if label else {})
        for key, h in sorted(totals.items())])


def export_source():
    """For `netkit export`: one srtt histogram of all connections, in microseconds."""
    from netkit.cli.histloop import exported_histograms
    return exported_histograms(_open(), lambda obj: histograms(obj.map("hists")),
                               lambda ts, totals: snapshot(ts, totals, KEY_NONE, False))


def view(out, units, key_by: int):
    from netkit.render.histsets import HistSets
    side = {KEY_LADDR: "laddr", KEY_RADDR: "raddr"}.get(key_by)
    words = {KEY_LADDR: "local address", KEY_RADDR: "remote address"}.get(key_by)
    return HistSets(out, f"srtt_{units.name}", units.name,
                    title=lambda key: f"{words} {key.address}" if side else "all connections",
                    fields=lambda key: {side: key.address} if side else {},
                    empty="(no samples)")


@export_options("tcprtt")
def command(
    interval: IntervalArg = None,
    count: CountArg = None,
    every: EveryOpt = None,
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    duration: DurationOpt = None,
    time_of_day: TimeOpt = False,
    milliseconds: MillisecondsOpt = False,
    lport: LportOpt = None,
    dport: DportOpt = None,
    laddr: LaddrOpt = None,
    raddr: RaddrOpt = None,
    byladdr: ByLaddrOpt = False,
    byraddr: ByRaddrOpt = False,
    extension: ExtendedOpt = False,
    ipv4: Ipv4Opt = False,
    ipv6: Ipv6Opt = False,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
    exporters: ExportHub = None,
):
    from netkit.cli.histloop import trace_histograms
    from netkit.render.fields import Units
    if every is not None and interval is not None and every != interval:
        raise UsageError("-i and INTERVAL say different things: give one")
    interval = every if every is not None else interval
    if byladdr and byraddr:
        raise UsageError("-b and -B exclude each other")
    family = family_of(ipv4, ipv6)
    key_by = KEY_LADDR if byladdr else KEY_RADDR if byraddr else KEY_NONE
    local, remote = address_of(laddr, "-a"), address_of(raddr, "-A")
    out = open_output(json, no_color, verbose)
    units = Units(milliseconds)
    with _open(ports_of(dport, "-D"), ports_of(lport, "-L"), family, local, remote, key_by,
               milliseconds, pid, name, cgroup) as obj:
        if duration == 0:
            return
        seconds, totals = trace_histograms(
            out, histograms(obj.map("hists")), view(out, units, key_by), interval=interval,
            count=count, duration=duration, exporters=exporters,
            snapshot=lambda ts, totals: snapshot(ts, totals, key_by, milliseconds),
            banner="Tracing TCP RTT... Hit Ctrl-C to end.",
            heading="srtt over {seconds:.1f} s:")
        if out.mode == "json":
            out.record({"type": "summary", "duration_s": round(seconds, 3),
                        "samples": sum(h.count for h in totals.values()), "lost_events": 0})
