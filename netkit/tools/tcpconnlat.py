"""TCP handshake latency, SYN sent to ESTABLISHED: one line per connect with the process and
destination, or (--hist) log2 histograms per destination.

sock:inet_sock_set_state through BTF (CLOSE -> SYN_SENT in the connecting task, SYN_SENT ->
ESTABLISHED). Like bcc's tcpconnlat: an optional minimum in ms, -t, -L, -p.
"""
from __future__ import annotations

from typing import Annotated, NamedTuple, Optional

import typer

from netkit.cli.options import (MAX_SECONDS, CgroupOpt, CountArg, DurationOpt, Ipv4Opt, Ipv6Opt,
                                JsonOpt, LportColumnOpt, NameOpt, NoColorOpt, Number, PidOpt,
                                TimestampOpt, VerboseOpt, family_of)
from netkit.cli.runs import export_source_of, run_counting, run_events, sampler
from netkit.cli.tool import ManPage, open_output
from netkit.engine.errors import UsageError
from netkit.export import ExportHub, export_options
from netkit.render.output import Column
from netkit.render.tcp import endpoints

SUMMARY = "TCP handshake latency (SYN to ESTABLISHED) per connect or per destination."

MIN_INTERVAL = 0.01

MAN = ManPage(
    description=(
        "tcpconnlat measures how long active TCP opens take to complete their handshake: from "
        "the moment the socket enters SYN_SENT in connect(2), just before the SYN is built, to "
        "ESTABLISHED, when the SYN-ACK has been processed. That is the network's round trip "
        "plus the time the peer took to answer, without the time the connecting process "
        "waited to be scheduled (netkit soconnlat times the whole connect() call instead). "
        "One line per completed connect, or only those that took at least MIN_MS "
        "milliseconds; with --hist, one log2 histogram of latency per destination (address "
        "and port) for the whole run or every INTERVAL, printed at the end or each "
        "interval.\n\n"
        "bcc's tcpconnlat puts kprobes on tcp_v4_connect/tcp_v6_connect (start) and "
        "tcp_rcv_state_process (end: the first packet that arrives in SYN_SENT). netkit uses "
        "the sock:inet_sock_set_state tracepoint for both ends, so no kprobe is needed; the "
        "start is the same moment within connect(), and the end comes after the SYN-ACK is "
        "processed rather than before (microseconds). Unlike bcc, a handshake answered by a "
        "RST or that times out is not counted as a latency (netkit tcpconnect --failed and "
        "soconnlat show those). PID and COMM are the connecting process, also when the "
        "SYN-ACK arrives in softirq while another task runs. Filters (-p, -n, -c, -4/-6) "
        "apply to the connecting task and the family; an IPv4-mapped destination counts as "
        "IPv4.\n\n"
        "With --prometheus, --textfile or --graphite it exports the latency as a histogram "
        "per destination port, every second (or INTERVAL with --hist)."),
    examples=[
        ("netkit tcpconnlat", "every completed connect until Ctrl-C"),
        ("netkit tcpconnlat 10 -t -L", "connects that took 10 ms or more, with time and port"),
        ("netkit tcpconnlat --hist 5 12", "histograms per destination, every 5 s for a minute"),
        ("netkit tcpconnlat -p 1234 --json", "one process, as NDJSON"),
    ],
    output=(
        "Columns: TIME(s) (seconds since tracing began, with -t), PID, COMM, IP (4 or 6), "
        "SADDR, LPORT (with -L), DADDR, DPORT, LAT(ms).\n\n"
        "With --hist: for each destination (ADDR:PORT) a log2 histogram of latency in "
        "microseconds, titled with its count and average.\n\n"
        "JSON: one object per connect with type \"event\", ts (ISO 8601), pid, comm, saddr, "
        "lport, daddr, dport, latency_us (float) and cgroup (the connecting task's cgroup "
        "v2 path). "
        "With --hist, objects with type \"hist\", scope (\"interval\" or \"run\"), interval_s or "
        "duration_s, family, daddr, dport, count, latency_us_sum, latency_us_avg and "
        "latency_us, the histogram: a list of objects with low, high and count for the bucket "
        "[low, high). At the end one object with type \"summary\", duration_s, events "
        "(connects shown; with --hist connects, those counted) and lost_events (connects the "
        "ring buffer or the histogram map could not take; text output says them on stderr).\n\n"
        "Exported: netkit_tcpconnlat_latency_seconds, a histogram with label dport."),
    see_also=["tcpconnlat(8) (bcc)", "netkit-soconnlat(8)", "netkit-tcpconnect(8)", "tcp(7)"],
)

MinOrIntervalArg = Annotated[Optional[float], typer.Argument(
    metavar="[MIN_MS | INTERVAL]", click_type=Number(0.0, MAX_SECONDS * 1000, name="number"),
    show_default=False,
    help="Without --hist: show only connects that took at least this many milliseconds. "
         "With --hist: seconds between outputs.")]
HistOpt = Annotated[bool, typer.Option(
    "--hist", help="Log2 histograms of latency per destination instead of one line per "
                   "connect; [INTERVAL [COUNT]] prints them every INTERVAL seconds.")]


class Dest(NamedTuple):
    family: int
    daddr: str
    dport: int


def destination_hists(obj):
    """The per-destination histograms (slots in us, sums in ns), read per interval."""
    from netkit.engine.devhist import histograms
    from netkit.render.fields import ip_address
    return histograms(obj.map("hists"), lambda k: Dest(k.family, ip_address(k.family, k.raddr),
                                                        k.rport))


def snapshot(ts: float, totals: dict):
    """Handshake latency per destination port since the start, for the exporters."""
    from netkit.engine.devhist import metric_histograms
    from netkit.metrics import Snapshot
    return Snapshot("tcpconnlat", ts, histograms=metric_histograms(
        "tcpconnlat_latency", "TCP handshake latency, SYN_SENT to ESTABLISHED", totals,
        lambda dest: {"dport": str(dest.dport)}, unit_seconds=1e-6, sum_scale=1e-3))


def _open(pid, name, cgroup, family=0, events=True, min_ms=0.0):
    from netkit.engine.bpfobject import BPFObject, Filters
    return BPFObject("tcpconnlat", Filters(pid, name, cgroup),
                     rodata={"filter_family": family, "emit_events": events,
                             "min_ns": int(min_ms * 1e6)})


# For `netkit export`: tcpconnlat's probes without events, its histograms as snapshots.
export_source = export_source_of(
    lambda pid, name, cgroup: _open(pid, name, cgroup, events=False),
    lambda obj: sampler(destination_hists(obj), snapshot))


def hist_view(out):
    from netkit.render.fields import ip_version, with_port
    from netkit.render.histsets import HistSets
    return HistSets(out, "latency_us", "us", title=lambda d: with_port(d.daddr, d.dport),
                    fields=lambda d: {"family": ip_version(d.family), "daddr": d.daddr,
                                      "dport": d.dport},
                    sum_scale=1e-3, empty="(no connects)")


class ConnlatView:
    def __init__(self, out, timestamp: bool, lport: bool):
        from netkit.render.events import EventLines
        from netkit.render.sockets import Owners
        self.owners = Owners()
        self.lport = lport
        self.lines = EventLines(out, [
            Column("PID", 7), Column("COMM", 15, "<", style="bold"), Column("IP", 2),
            Column("SADDR", 16, "<")] + ([Column("LPORT", 6)] if lport else []) + [
            Column("DADDR", 16, "<"), Column("DPORT", 5),
            Column("LAT(ms)", 8, fmt=lambda v: f"{v:.2f}", style="bold")], timestamp)

    def event(self, e) -> None:
        owner, ends = self.owners.of_socket(e.owner), endpoints(e.tuple)
        self.lines.event(
            {"type": "event", "pid": owner.pid, "comm": owner.comm, "saddr": ends.laddr,
             "lport": ends.lport, "daddr": ends.raddr, "dport": ends.rport,
             "latency_us": round(e.latency_ns / 1000, 3), "cgroup": owner.cgroup},
            [*owner.cells, ends.family, ends.laddr] + ([ends.lport] if self.lport else []) +
            [ends.raddr, ends.rport, e.latency_ns / 1e6], e.ts_ns)


@export_options("tcpconnlat")
def command(
    min_or_interval: MinOrIntervalArg = None,
    count: CountArg = None,
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    ipv4: Ipv4Opt = False,
    ipv6: Ipv6Opt = False,
    timestamp: TimestampOpt = False,
    lport: LportColumnOpt = False,
    hist: HistOpt = False,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
    exporters: ExportHub = None,
):
    family = family_of(ipv4, ipv6)
    interval = min_or_interval if hist else None
    if hist and interval is not None and interval < MIN_INTERVAL:
        raise UsageError(f"INTERVAL must be at least {MIN_INTERVAL} s")
    if not hist and count is not None:
        raise UsageError("COUNT is for --hist (tcpconnlat --hist INTERVAL COUNT)")
    min_ms = 0.0 if hist else (min_or_interval or 0.0)
    out = open_output(json, no_color, verbose)
    with _open(pid, name, cgroup, family, not hist, min_ms) as obj:
        if duration == 0:
            return
        hists = destination_hists(obj)
        if hist:
            run_counting(out, hists, hist_view(out).show, snapshot=snapshot,
                         banner="Tracing TCP handshake latency... Hit Ctrl-C to end.",
                         run_title="Handshake latency over {seconds:.1f} s:",
                         interval=interval, count=count, duration=duration,
                         exporters=exporters,
                         summary=lambda totals: {
                             "connects": sum(h.count for h in totals.values()),
                             "lost_events": obj.lost_events()})
            out.lost("tcpconnlat", obj.lost_events(), "connects", "the histogram map was full")
            return
        view = ConnlatView(out, timestamp, lport)
        banner = ("Tracing TCP handshake latency" +
                  (f" of {min_ms:g} ms or more" if min_ms else "") + "... Hit Ctrl-C to end.")
        seconds = run_events(out, obj, "events", "tcpconnlat_event", view.event, duration,
                             banner, exporters, sampler(hists, snapshot))
        view.lines.summary("tcpconnlat", seconds, obj.lost_events(), "connects")
