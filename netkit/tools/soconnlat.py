"""Latency of IP connect() calls, per process or per destination, blocking and non-blocking.

A blocking connect() is timed from syscall entry to return; a non-blocking one (EINPROGRESS, what
every event loop does) from connect() entry to the socket's move to ESTABLISHED, or to CLOSE when
it fails. Failures are counted by cause (ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ...) with their
latency. Tracepoints only; histograms are kept in the kernel, events are streamed only with -e.
"""
from __future__ import annotations

import contextlib
import enum
from typing import Annotated, NamedTuple

import typer

from netkit.cli.loop import Loop
from netkit.cli.options import (CgroupOpt, CountArg, DportOpt, DurationOpt, Ipv4Opt, Ipv6Opt,
                                IntervalArg, JsonOpt, MillisecondsOpt, NameOpt, NoColorOpt, PidOpt,
                                VerboseOpt, family_of, ports_of)
from netkit.cli.tool import ManPage, open_output
from netkit.export import ExportHub, export_options
from netkit.render.fields import errno_name, ip_version, with_port
from netkit.render.output import Column

SUMMARY = "Latency of IP connect() calls, blocking and non-blocking, with results (tracepoints)."

RESULT_CLOSED = 4096            # soconnlat.h's enum soconnlat_result (tests/test_engine.py ties it)
MODES = ("blocking", "nonblocking")

MAN = ManPage(
    description=(
        "soconnlat measures how long IP connect(2) calls take and how they end. Blocking "
        "connects are timed from the entry of the connect syscall to its return (the time the "
        "caller was held up), as the original soconnlat.bt did. Non-blocking connects, which "
        "return EINPROGRESS at once, are timed from the connect() entry to the socket's "
        "transition to ESTABLISHED, or to CLOSE when the handshake fails (the "
        "sock:inet_sock_set_state tracepoint, keyed by the socket), which is what an event loop "
        "waits for; bcc's tcpconnlat times only the SYN to ESTABLISHED part of this. A "
        "non-blocking connect that fails at once (no route: ENETUNREACH) is timed in the call. "
        "A blocking connect interrupted by a signal is timed to the end of the handshake.\n\n"
        "Failures are kept apart by cause, each with its latency: ECONNREFUSED (a RST answered "
        "the SYN), ETIMEDOUT (the SYN retries ran out, see tcp_syn_retries and TCP_SYNCNT), "
        "EHOSTUNREACH or ENETUNREACH (an ICMP error, or no route), any other errno the call "
        "returned, and CLOSED (the owner closed a non-blocking socket before the handshake "
        "ended, as a client-side timeout does).\n\n"
        "Only TCP sockets connecting to an AF_INET or AF_INET6 address are traced (with --udp, "
        "UDP connects too, which never wait). A second connect() on a socket that is already "
        "connecting or connected (the EALREADY/EISCONN status check) is not a new connect and is "
        "not counted. Filters (-p, -n, -c, -D, -4, -6) are applied in the kernel at connect() "
        "entry; PID and COMM are those of the thread that called connect(), also when the "
        "handshake ends in softirq. FAM is the family of the sockaddr given to connect(): an "
        "IPv4-mapped address on an IPv6 socket counts as IPv6. Connects made through io_uring or "
        "inside the kernel are not seen (no connect syscall), nor is the handshake of a TCP Fast "
        "Open connect (TCP_FASTOPEN_CONNECT returns at once; the SYN leaves with the first "
        "write).\n\n"
        "The default view is one log2 histogram of latency per process and result (or per "
        "destination with --by dest) and a table of counts, printed each INTERVAL if one is "
        "given and for the whole run at the end (Ctrl-C, SIGTERM, -d or COUNT). -e prints one "
        "line per connect as it ends. Only tracepoints are used (raw syscalls and "
        "sock:inet_sock_set_state through BTF), so it runs on kernels without kprobes."),
    examples=[
        ("netkit soconnlat", "histograms per process until Ctrl-C"),
        ("netkit soconnlat -e", "one line per connect"),
        ("netkit soconnlat --by dest -m 10", "per destination, in ms, every 10 s"),
        ("netkit soconnlat -p 1234 -D 443 -D 8443", "one process, two destination ports"),
        ("netkit soconnlat -6 -d 30 --json", "IPv6 only for 30 s, as NDJSON"),
    ],
    output=(
        "Events (-e): TIME (HH:MM:SS.mmm when the connect ended), PID, COMM, FAM (IPv4/IPv6), "
        "DEST (address:port, IPv6 in brackets), LAT(us) (LAT(ms) with -m), RESULT (OK, an errno "
        "name, or CLOSED), MODE (blocking, or nonblocking for an O_NONBLOCK socket).\n\n"
        "Histograms: for each process (PID, COMM) or, with --by dest, destination (DEST), and "
        "result, a log2 histogram of latency in us (ms with -m); then a table with PID and COMM "
        "(or DEST), FAM, MODE, RESULT, COUNT and AVG(us) (exact mean, not from the buckets).\n\n"
        "JSON (--json): events as objects with type \"event\", ts (ISO 8601, when the connect "
        "ended), pid, tid, comm, family (\"IPv4\"/\"IPv6\"), dest, dport, latency_us (float; "
        "latency_ms with -m), result, errno (0 for OK, null for CLOSED), mode. Histograms as "
        "objects with type \"hist\", scope (\"interval\" or \"run\"), ts, interval_s (interval "
        "scope) or duration_s (run scope), pid and comm (or dest and dport with --by dest), "
        "family, mode, result, errno, count, latency_us_sum, latency_us_avg and latency_us, the "
        "histogram: a list of objects with low, high and count for the bucket [low, high) "
        "(latency_ms_* with -m). "
        "At the end one object with type \"summary\", duration_s, connects, results (count per "
        "result) and lost_events (events the ring buffer could not take)."),
    see_also=["tcpconnlat(8)", "tcpconnect(8)", "soconnlat.bt (BPF Performance Tools, ch. 10)",
              "connect(2)", "tcp(7)"],
)



class By(str, enum.Enum):
    process = "process"
    dest = "dest"


EventsOpt = Annotated[bool, typer.Option("-e", "--events", help="Print one line per connect.")]
ByOpt = Annotated[By, typer.Option("--by", help="Group histograms by process or by destination.")]
UdpOpt = Annotated[bool, typer.Option("--udp", help="Also count UDP connect() calls (they do "
                                                    "not wait; timed in the syscall).")]


def result_name(code: int) -> str:
    if code == 0:
        return "OK"
    if code == RESULT_CLOSED:
        return "CLOSED"
    return errno_name(code)


def result_errno(code: int) -> int | None:
    return None if code == RESULT_CLOSED else code


# -- the kernel's histograms ------------------------------------------------------------------------
class Key(NamedTuple):
    """One struct soconnlat_key, decoded (dest is "" in per-process keys, pid 0 and comm ""
    in per-destination ones)."""
    pid: int
    comm: str
    family: int
    mode: int
    result: int
    dest: str
    dport: int

    @property
    def dest_port(self) -> str:
        return with_port(self.dest, self.dport)


class Stats(NamedTuple):
    """A histogram in the user's unit with the exact sum of latencies in ns (struct
    soconnlat_value)."""
    hist: object                # Log2Hist
    sum_ns: int

    def __add__(self, other: "Stats") -> "Stats":
        return Stats(self.hist + other.hist, self.sum_ns + other.sum_ns)

    def __sub__(self, earlier: "Stats") -> "Stats":
        return Stats(self.hist - earlier.hist, self.sum_ns - earlier.sum_ns)

    def __bool__(self) -> bool:
        return bool(self.hist)


def no_stats() -> Stats:
    from netkit.engine.hist import Log2Hist
    return Stats(Log2Hist(), 0)


def histograms(hists_map, per_process: bool):
    """The `hists` map read per interval; entries of processes that exited are retired, so the
    map (10240 keys) does not fill up on a long run."""
    from netkit.engine.counters import CumulativeMap, alive
    from netkit.engine.hist import Log2Hist
    from netkit.render.fields import comm, ip_address

    def decode(k, value):
        dest = ip_address(k.family, k.daddr, unmap=False) if any(k.daddr) else ""
        key = Key(k.tgid, comm(k.comm), k.family, k.mode, k.result, dest, k.dport)
        return key, Stats(Log2Hist.from_value(value.lat), value.sum_ns)
    return CumulativeMap(hists_map, decode,
                         retire=lambda key, _: per_process and not alive(key.pid))


def snapshot(ts: float, totals: dict[Key, Stats], by_dest: bool, ms: bool):
    """The run's cumulative counters and histograms for the exporters: connects and latency by
    comm (or destination), family, mode and result. Processes with the same comm are summed."""
    from netkit.metrics import Counter, Histogram, Snapshot
    unit_ns = 1_000_000 if ms else 1_000
    merged: dict[tuple, Stats] = {}
    for key, stats in totals.items():
        who = (("dest", key.dest_port),) if by_dest else (("comm", key.comm),)
        labels = who + (("family", ip_version(key.family)), ("mode", MODES[key.mode]),
                        ("result", result_name(key.result)))
        merged[labels] = merged.get(labels, no_stats()) + stats
    counters, hists = [], []
    for labels, stats in sorted(merged.items()):
        counters.append(Counter("soconnlat_connects", "IP connect() calls that ended, by result",
                                stats.hist.count, dict(labels)))
        hists.append(Histogram("soconnlat_latency",
                               "connect() latency: syscall time for blocking connects, "
                               "connect() to ESTABLISHED/CLOSE for non-blocking ones",
                               tuple(stats.hist.slots), stats.sum_ns / unit_ns,
                               unit_ns * 1e-9, dict(labels)))
    return Snapshot("soconnlat", ts, counters=counters, histograms=hists)


def _open(pid, name, cgroup, dports=(), family=0, by_dest=False, events=False, udp=False,
          ms=False):
    from netkit.engine.bpfobject import BPFObject, Filters
    rodata = {"filter_family": family, "by_dest": by_dest, "emit_events": events,
              "include_udp": udp, "unit_ns": 1_000_000 if ms else 1_000}
    return BPFObject("soconnlat", Filters(pid, name, cgroup, dports=list(dports)), rodata=rodata)


@contextlib.contextmanager
def export_source(pid: int | None = None, name: str | None = None, cgroup: str | None = None):
    """For `netkit export`: attach soconnlat's probes (histograms by comm, microseconds, no
    events), yield a function ts -> Snapshot."""
    with _open(pid, name, cgroup) as obj:
        hists = histograms(obj.map("hists"), per_process=True)

        def sample(ts: float):
            hists.read()
            return snapshot(ts, hists.totals(), False, False)
        yield sample


# -- the view -----------------------------------------------------------------------------------
class SoconnlatView:
    def __init__(self, out, units, by_dest: bool):
        from netkit.render.fields import KernelClock
        from netkit.render.output import StreamTable
        self.out, self.units, self.by_dest = out, units, by_dest
        self.clock = KernelClock()
        self.events = StreamTable(out, [
            Column("TIME", 12, "<", style="dim"), Column("PID", 7),
            Column("COMM", 15, "<", style="bold"), Column("FAM", 4, "<"), Column("DEST", 24, "<"),
            Column(f"LAT({units.name})", 10, fmt=units.text), Column("RESULT", 12, "<"),
            Column("MODE", 11, "<")])

    # one connect
    def event(self, e) -> None:
        from netkit.render.fields import clock_ms, comm, ip_address, iso
        when = self.clock.wall(e.end_ns)
        dest = ip_address(e.family, e.daddr, unmap=False)
        if self.out.mode == "json":
            self.out.record({
                "type": "event", "ts": iso(when, "microseconds"), "pid": e.tgid, "tid": e.tid,
                "comm": comm(e.comm), "family": ip_version(e.family), "dest": dest,
                "dport": e.dport, self.units.key("latency"): self.units.value(e.lat_ns),
                "result": result_name(e.result), "errno": result_errno(e.result),
                "mode": MODES[e.mode]})
            return
        self.events.row([clock_ms(when), e.tgid, comm(e.comm), ip_version(e.family),
                         with_port(dest, e.dport), e.lat_ns, result_name(e.result),
                         MODES[e.mode]])

    # histograms
    def _who(self, key: Key) -> tuple:
        return (key.family, key.dest, key.dport) if self.by_dest else (key.pid, key.comm)

    def _who_text(self, key: Key) -> str:
        return key.dest_port if self.by_dest else f"PID {key.pid} {key.comm}"

    def _json_who(self, key: Key) -> dict:
        return ({"dest": key.dest, "dport": key.dport} if self.by_dest
                else {"pid": key.pid, "comm": key.comm})

    def histograms(self, stats: dict[Key, Stats], scope: str, seconds: float, title: str) -> None:
        from netkit.render.hist import hist_json
        u = self.units
        keys = sorted(stats, key=lambda k: (self._who(k), k.result != 0, k.result, k.family, k.mode))
        if self.out.mode == "json":
            for key in keys:
                s = stats[key]
                self.out.record({
                    "type": "hist", "scope": scope,
                    ("interval_s" if scope == "interval" else "duration_s"): round(seconds, 3),
                    **self._json_who(key), "family": ip_version(key.family),
                    "mode": MODES[key.mode], "result": result_name(key.result),
                    "errno": result_errno(key.result), "count": s.hist.count,
                    f"{u.key('latency')}_sum": u.value(s.sum_ns),
                    f"{u.key('latency')}_avg": u.value(s.sum_ns / s.hist.count),
                    u.key("latency"): hist_json(s.hist.slots)})
            return
        self.out.line()
        self.out.line(title, style="bold")
        if not keys:
            self.out.line("(no connects)")
            return
        # One histogram per (process or destination, result), families and modes together.
        merged: dict[tuple, Stats] = {}
        first: dict[tuple, Key] = {}
        for key in keys:
            group = (self._who(key), key.result)
            merged[group] = merged.get(group, no_stats()) + stats[key]
            first.setdefault(group, key)
        for group, s in merged.items():
            key = first[group]
            self.out.line()
            self.out.hist(f"{self._who_text(key)}, {result_name(key.result)}", s.hist.slots, u.name)
        self.out.line()
        who_cols = ([Column("DEST", 24, "<")] if self.by_dest else
                    [Column("PID", 7), Column("COMM", 15, "<", style="bold")])
        cols = who_cols + [Column("FAM", 4, "<"), Column("MODE", 11, "<"),
                           Column("RESULT", 12, "<"), Column("COUNT", 7),
                           Column(f"AVG({u.name})", 10, fmt=u.text)]
        rows = []
        for key in keys:
            s = stats[key]
            who = [key.dest_port] if self.by_dest else [key.pid, key.comm]
            rows.append(who + [ip_version(key.family), MODES[key.mode], result_name(key.result),
                               s.hist.count, s.sum_ns / s.hist.count])
        self.out.table(cols, rows)

    def summary(self, totals: dict[Key, Stats], seconds: float, lost: int) -> None:
        results: dict[str, int] = {}
        for key, s in totals.items():
            name = result_name(key.result)
            results[name] = results.get(name, 0) + s.hist.count
        if self.out.mode == "json":
            self.out.record({"type": "summary", "duration_s": round(seconds, 3),
                             "connects": sum(results.values()), "results": results,
                             "lost_events": lost})
        self.out.lost("soconnlat", lost)


# -- the command --------------------------------------------------------------------------------
@export_options("soconnlat")
def command(
    interval: IntervalArg = None,
    count: CountArg = None,
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    dport: DportOpt = None,
    ipv4: Ipv4Opt = False,
    ipv6: Ipv6Opt = False,
    events: EventsOpt = False,
    by: ByOpt = By.process,
    milliseconds: MillisecondsOpt = False,
    udp: UdpOpt = False,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
    exporters: ExportHub = None,
):
    family = family_of(ipv4, ipv6)
    dports = ports_of(dport, "-D")
    from netkit.render.fields import Units, clock

    by_dest = by == By.dest
    out = open_output(json, no_color, verbose)
    units = Units(milliseconds)
    with _open(pid, name, cgroup, dports, family, by_dest, events, udp, milliseconds) as obj:
        if duration == 0:
            return
        view = SoconnlatView(out, units, by_dest)
        hists = histograms(obj.map("hists"), per_process=not by_dest)
        ring = obj.ring_buffer("events", "soconnlat_event", view.event) if events else None

        def tick(ts: float, seconds: float, show: bool):
            delta = hists.read()
            if show:
                view.histograms(delta, "interval", seconds, clock(ts))
            return snapshot(ts, hists.totals(), by_dest, milliseconds) if exporters else None

        what = "IP connect() latency" + (" by destination" if by_dest else "")
        loop = Loop(out, interval=interval, count=count, duration=duration, rings=[ring],
                    exporters=exporters)
        seconds = loop.run(tick, f"Tracing {what}... Hit Ctrl-C to end.")
        totals = hists.totals()
        view.histograms(totals, "run", seconds, f"Connect latency over {seconds:.1f} s:")
        view.summary(totals, seconds, obj.lost_events())
