"""How full TCP listeners' accept queues are when handshakes complete: a histogram of the backlog
per listener (its port and limit), with the kernel's ListenOverflows and ListenDrops counters
that moved. Tracepoint sock:inet_sock_set_state.
"""
from __future__ import annotations

from typing import NamedTuple

from netkit.cli.loop import Loop
from netkit.cli.options import (CgroupOpt, CountArg, DurationOpt, IntervalArg, JsonOpt, LportOpt,
                                NameOpt, NoColorOpt, PidOpt, VerboseOpt, ports_of)
from netkit.cli.tool import ManPage, open_output
from netkit.export import ExportHub, export_options

SUMMARY = "TCP accept-queue backlog per listener at each handshake, and listen overflows."

COUNTERS = {"TcpExtListenOverflows": "listen_overflows", "TcpExtListenDrops": "listen_drops"}

MAN = ManPage(
    description=(
        "tcpsynbl shows how full the accept queue of each TCP listener is whenever a handshake "
        "completes: a log2 histogram of the listener's backlog (connections that completed "
        "their handshake and wait for accept()) per listener, titled with its port and its "
        "backlog limit (listen()'s backlog argument, capped by net.core.somaxconn). A queue "
        "that reaches its limit refuses the next handshakes: the kernel then counts them in "
        "ListenOverflows and ListenDrops (nstat's TcpExtListenOverflows, "
        "TcpExtListenDrops), which tcpsynbl reads each interval and shows as they moved. A "
        "histogram with its mass at the limit and overflow counters that rise say the "
        "application does not accept() fast enough (or its backlog is too small).\n\n"
        "The book's tcpsynbl.bt samples the listener with kprobes on tcp_v4_syn_recv_sock and "
        "tcp_v6_syn_recv_sock, where the final ACK of a handshake is turned into a new "
        "socket. This kernel has no kprobes and no tracepoint in those functions; netkit "
        "samples at the same moment from the socket they make: it is a copy of the listener, "
        "made just then, and it announces itself through sock:inet_sock_set_state as it moves "
        "from LISTEN to SYN_RECV, so its backlog and limit are the listener's at the moment "
        "the book reads them (IPv4 and IPv6 alike). What is not seen: the handshakes a full "
        "queue refused, which make no socket (the book printed \"dropping a SYN\" for those "
        "of them that reached tcp_v4_syn_recv_sock); the overflow counters stand for them, "
        "for all listeners of netkit's network namespace together. A SYN cookie connection "
        "(net.ipv4.tcp_syncookies when the SYN queue is full) is sampled like any other.\n\n"
        "-p, -n and -c select listeners by their owner, the process netkit saw call listen() "
        "(handshakes complete in softirq, on any task): a listener that was already listening "
        "when netkit started is then left out. The overflow counters are the namespace's, "
        "whatever the filters."),
    examples=[
        ("netkit tcpsynbl", "backlog histograms per listener until Ctrl-C"),
        ("netkit tcpsynbl -L 80,443 5", "two listeners' ports, every five seconds"),
        ("netkit tcpsynbl -n nginx", "the listeners nginx opens from now on"),
        ("netkit tcpsynbl --json -d 60", "one minute, as NDJSON"),
    ],
    output=(
        "Per interval (with INTERVAL) and for the run: a heading (the time of day, or the "
        "run's length), one histogram per listener titled with its port, backlog limit, the "
        "number of handshakes and the average backlog they found, then the ListenOverflows "
        "and ListenDrops counters' change.\n\n"
        "JSON: per histogram an object with type \"hist\", scope (\"interval\" or \"run\"), ts, "
        "interval_s or duration_s, lport, max_backlog, count, backlog_sum, backlog_avg and "
        "backlog, the histogram: a list of objects with low, high and count for the bucket "
        "[low, high); per interval and for the run an object with type \"counters\", scope, "
        "listen_overflows and listen_drops; at the end type \"summary\" with duration_s, "
        "handshakes, listen_overflows, listen_drops and lost_events (always 0).\n\n"
        "Exporters: netkit_tcpsynbl_backlog_connections, a histogram (labels lport and "
        "max_backlog), and the counters netkit_tcpsynbl_listen_overflows_total and "
        "netkit_tcpsynbl_listen_drops_total (their change since netkit started)."),
    see_also=["ss(8)", "nstat(8)", "listen(2)", "tcpsynbl.bt (BPF Performance Tools, ch. 10)"],
)


class Listener(NamedTuple):
    lport: int
    max_backlog: int


def histograms(obj):
    from netkit.engine.devhist import histograms as read
    return read(obj.map("hists"), lambda key: Listener(key.lport, key.max_backlog))


def snapshot(ts: float, totals: dict, overflows: dict[str, int]):
    from netkit.engine.devhist import metric_histograms
    from netkit.metrics import Counter, Snapshot
    hists = metric_histograms(
        "tcpsynbl_backlog", "Accept-queue backlog of a listener when a handshake completes",
        totals, lambda key: {"lport": str(key.lport), "max_backlog": str(key.max_backlog)},
        unit_seconds=1.0, unit="connections")
    counters = [Counter(f"tcpsynbl_{key}", f"The kernel's {name} since netkit started",
                        overflows.get(name, 0)) for name, key in COUNTERS.items()]
    return Snapshot("tcpsynbl", ts, counters=counters, histograms=hists)


def _open(lports=(), pid=None, name=None, cgroup=None):
    from netkit.engine import sockowners
    from netkit.engine.bpfobject import BPFObject, Filters
    owners = sockowners.process_filtered(pid, name, cgroup)
    return BPFObject("tcpsynbl", Filters(pid, name, cgroup, lports=list(lports)),
                     manual=sockowners.unattached(owners))


def export_source():
    """For `netkit export`: every listener's backlog, and the overflow counters."""
    import contextlib

    from netkit.engine import snmp

    @contextlib.contextmanager
    def source():
        counters = snmp.Counters(names=COUNTERS)
        with _open() as obj:
            hists = histograms(obj)

            def sample(ts: float):
                hists.read()
                return snapshot(ts, hists.totals(), counters.since_start(COUNTERS))
            yield sample
    return source()


class TcpsynblView:
    def __init__(self, out):
        from netkit.render.histsets import HistSets
        self.out = out
        self.hists = HistSets(out, "backlog", "connections",
                              title=lambda k: f"port {k.lport}, backlog limit {k.max_backlog}",
                              fields=lambda k: {"lport": k.lport, "max_backlog": k.max_backlog},
                              empty="(no handshakes completed)")

    def show(self, hists: dict, moved: dict[str, int], scope: str, seconds: float,
             heading: str) -> None:
        self.hists.show(hists, scope, seconds, heading)
        counts = {key: moved.get(name, 0) for name, key in COUNTERS.items()}
        if self.out.mode == "json":
            self.out.record({"type": "counters", "scope": scope, **counts})
            return
        self.out.line()
        self.out.line(", ".join(f"{name.removeprefix('TcpExt')} +{moved.get(name, 0)}"
                                for name in COUNTERS))


@export_options("tcpsynbl")
def command(
    interval: IntervalArg = None,
    count: CountArg = None,
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    lport: LportOpt = None,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
    exporters: ExportHub = None,
):
    from netkit.engine import snmp
    from netkit.render.fields import clock

    out = open_output(json, no_color, verbose)
    counters = snmp.Counters(names=COUNTERS)
    with _open(ports_of(lport, "-L"), pid, name, cgroup) as obj:
        if duration == 0:
            return
        view = TcpsynblView(out)
        hists = histograms(obj)

        def tick(ts: float, seconds: float, show: bool):
            delta = hists.read()
            if show:
                view.show(delta, counters.interval(), "interval", seconds, clock(ts))
            if exporters:
                return snapshot(ts, hists.totals(), counters.since_start(COUNTERS))
            return None

        loop = Loop(out, interval=interval, count=count, duration=duration, exporters=exporters)
        seconds = loop.run(tick, "Tracing TCP accept backlogs... Hit Ctrl-C to end.")
        totals = hists.totals()
        moved = counters.since_start(COUNTERS)
        view.show(totals, moved, "run", seconds, f"Backlogs over {seconds:.1f} s:")
        if out.mode == "json":
            out.record({"type": "summary", "duration_s": round(seconds, 3),
                        "handshakes": sum(h.count for h in totals.values()),
                        **{key: moved.get(name, 0) for name, key in COUNTERS.items()},
                        "lost_events": 0})
