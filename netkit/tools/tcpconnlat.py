"""TCP handshake latency, SYN sent to ESTABLISHED: one line per connect with the process and
destination, or (--hist) log2 histograms per destination.

sock:inet_sock_set_state through BTF (CLOSE -> SYN_SENT in the connecting task, SYN_SENT ->
ESTABLISHED). Like bcc's tcpconnlat: an optional minimum in ms, -t, -L, -p.
"""
from __future__ import annotations

import contextlib
from typing import Annotated, NamedTuple, Optional

import typer

from netkit.cli.loop import Loop
from netkit.cli.options import (MAX_SECONDS, CgroupOpt, CountArg, DurationOpt, Ipv4Opt, Ipv6Opt,
                                JsonOpt, LportColumnOpt, NameOpt, NoColorOpt, Number, PidOpt,
                                TimestampOpt, VerboseOpt, family_of)
from netkit.cli.tool import ManPage, open_output
from netkit.engine.errors import UsageError
from netkit.export import ExportHub, export_options
from netkit.render.output import Column
from netkit.render.tcp import TcpEventView

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
        "With --hist: for each destination a log2 histogram of latency in microseconds, with "
        "its count and mean.\n\n"
        "JSON: one object per connect with type \"event\", ts (ISO 8601), pid, comm, saddr, "
        "daddr, dport, latency_us (float) and cgroup (the connecting task's cgroup v2 path). "
        "With --hist, objects with type \"hist\", scope (\"interval\" or \"run\"), interval_s or "
        "duration_s, family, daddr, dport, count, latency_us_sum, latency_us_avg and "
        "latency_us, the histogram: a list of objects with low, high and count for the bucket "
        "[low, high). At the end one object with type \"summary\", duration_s, connects and "
        "lost_events (connects the ring buffer or the histogram map could not take; text "
        "output says them on stderr).\n\n"
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


def destination_hists(hists_map):
    from netkit.engine.counters import CumulativeMap
    from netkit.engine.hist import Log2Hist, TimedHist
    from netkit.render.fields import ip_address

    def decode(k, v):
        return (Dest(k.family, ip_address(k.family, k.raddr), k.rport),
                TimedHist(Log2Hist.from_value(v.latency_us), v.sum_ns))
    return CumulativeMap(hists_map, decode)


def snapshot(ts: float, totals: dict):
    """Handshake latency per destination port since the start, for the exporters."""
    from netkit.engine.hist import TimedHist
    from netkit.metrics import Histogram, Snapshot
    merged: dict[int, TimedHist] = {}
    for dest, stats in totals.items():
        merged[dest.dport] = merged.get(dest.dport, TimedHist()) + stats
    return Snapshot("tcpconnlat", ts, histograms=[
        Histogram("tcpconnlat_latency", "TCP handshake latency, SYN_SENT to ESTABLISHED",
                  tuple(s.hist.slots), s.sum_ns / 1000, 1e-6, {"dport": str(dport)})
        for dport, s in sorted(merged.items())])


def _open(pid, name, cgroup, family=0, events=True, min_ms=0.0):
    from netkit.engine.bpfobject import BPFObject, Filters
    return BPFObject("tcpconnlat", Filters(pid, name, cgroup),
                     rodata={"filter_family": family, "emit_events": events,
                             "min_ns": int(min_ms * 1e6)})


@contextlib.contextmanager
def export_source(pid: int | None = None, name: str | None = None, cgroup: str | None = None):
    """For `netkit export`: attach tcpconnlat's probes (histograms only), yield
    ts -> Snapshot."""
    with _open(pid, name, cgroup, events=False) as obj:
        hists = destination_hists(obj.map("hists"))

        def sample(ts: float):
            hists.read()
            return snapshot(ts, hists.totals())
        yield sample


class ConnlatView(TcpEventView):
    def __init__(self, out, timestamp: bool, lport: bool):
        from netkit.render.output import StreamTable
        super().__init__(out, "tcpconnlat", "connects", timestamp=timestamp)
        self.lport = lport
        self.table = StreamTable(out, self.time_columns() + [
            Column("PID", 7), Column("COMM", 15, "<", style="bold"), Column("IP", 2),
            Column("SADDR", 16, "<")] + ([Column("LPORT", 6)] if lport else []) + [
            Column("DADDR", 16, "<"), Column("DPORT", 5),
            Column("LAT(ms)", 8, fmt=lambda v: f"{v:.2f}", style="bold")])

    def event(self, e) -> None:
        owner, ends = self.decode(e)
        if self.out.mode == "json":
            self.out.record({
                "type": "event", "ts": self.iso(e.ts_ns), "pid": owner.pid,
                "comm": owner.comm, "saddr": ends.laddr, "daddr": ends.raddr,
                "dport": ends.rport, "latency_us": round(e.latency_ns / 1000, 3),
                "cgroup": owner.cgroup})
            return
        self.table.row(self.time_cells(e.ts_ns) + [owner.pid_text, owner.comm_text, ends.family,
                                                   ends.laddr] +
                       ([ends.lport] if self.lport else []) +
                       [ends.raddr, ends.rport, e.latency_ns / 1e6])

    def histograms(self, stats: dict, scope: str, seconds: float,
                   title: str) -> None:
        from netkit.render.fields import ip_version, with_port
        from netkit.render.hist import hist_json
        ranked = sorted(stats.items(), key=lambda kv: (-kv[1].hist.count, kv[0]))
        if self.out.mode == "json":
            for dest, s in ranked:
                self.out.record({
                    "type": "hist", "scope": scope,
                    ("interval_s" if scope == "interval" else "duration_s"): round(seconds, 3),
                    "family": ip_version(dest.family), "daddr": dest.daddr,
                    "dport": dest.dport, "count": s.hist.count,
                    "latency_us_sum": round(s.sum_ns / 1000, 3),
                    "latency_us_avg": round(s.sum_ns / 1000 / s.hist.count, 3),
                    "latency_us": hist_json(s.hist.slots)})
            return
        self.out.line()
        self.out.line(title, style="bold")
        if not ranked:
            self.out.line("(no connects)")
        for dest, s in ranked:
            self.out.line()
            self.out.hist(f"{with_port(dest.daddr, dest.dport)}: {s.hist.count} connects, mean "
                          f"{s.sum_ns / 1000 / s.hist.count:.0f}", s.hist.slots, "usecs")


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
    from netkit.render.fields import clock

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
        view = ConnlatView(out, timestamp, lport)
        hists = destination_hists(obj.map("hists"))
        ring = None if hist else obj.ring_buffer("events", "tcpconnlat_event", view.event)

        def tick(ts: float, seconds: float, show: bool):
            delta = hists.read()
            if show:
                view.histograms(delta, "interval", seconds, clock(ts))
            return snapshot(ts, hists.totals()) if exporters else None

        banner = ("Tracing TCP handshake latency" +
                  (f" of {min_ms:g} ms or more" if min_ms else "") + "... Hit Ctrl-C to end.")
        seconds = Loop(out, interval=interval, count=count, duration=duration, rings=[ring],
                       exporters=exporters).run(tick, banner)
        totals = hists.totals()
        if hist:
            view.histograms(totals, "run", seconds, f"Handshake latency over {seconds:.1f} s:")
        view.summary(seconds, obj.lost_events(),
                     sum(s.hist.count for s in totals.values()) if hist else None)
