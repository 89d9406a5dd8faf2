"""Latency of IP connect() calls, per process or per destination, blocking and non-blocking.

A blocking connect() is timed from syscall entry to return; a non-blocking one (EINPROGRESS, what
every event loop does) from connect() entry to the socket's move to ESTABLISHED, or to CLOSE when
it fails. Failures are counted by cause (ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ...) with their
latency. Tracepoints only; histograms are kept in the kernel, events are streamed only with -e.
"""
from __future__ import annotations

import contextlib
import errno as _errno
import math
import time
from typing import Annotated, NamedTuple, Optional

import typer

from netkit.export import ExportHub, export_options
from netkit.tools.common import (CgroupOpt, Column, CountArg, DurationOpt, JsonOpt, ManPage,
                                 MillisecondsOpt, NameOpt, NoColorOpt, PidOpt, Ticker, VerboseOpt,
                                 fail, tool_errors)

SUMMARY = "Latency of IP connect() calls, blocking and non-blocking, with results (tracepoints)."

RESULT_CLOSED = 4096            # soconnlat.h: closed by its owner before the handshake ended
MODES = ("blocking", "nonblocking")
MAX_DPORTS = 8

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
        "family, mode, result, errno, count, latency_us_sum, latency_us_avg (latency_ms_* with "
        "-m) and buckets: a list of objects with low, high (inclusive, in the unit) and count. "
        "At the end one object with type \"summary\", duration_s, connects, results (count per "
        "result) and lost_events (events the ring buffer could not take)."),
    see_also=["tcpconnlat(8)", "tcpconnect(8)", "soconnlat.bt (BPF Performance Tools, ch. 10)",
              "connect(2)", "tcp(7)"],
)

OptionalIntervalArg = Annotated[Optional[float], typer.Argument(
    min=0.01, metavar="[INTERVAL]", show_default=False,
    help="Print histograms every INTERVAL seconds (default: only at the end).")]
DportOpt = Annotated[Optional[list[int]], typer.Option(
    "-D", "--dport", metavar="PORT", min=1, max=65535, show_default=False,
    help=f"Trace only connects to this destination port (repeat for up to {MAX_DPORTS}).")]
V4Opt = Annotated[bool, typer.Option("-4", "--ipv4", help="IPv4 destinations only.")]
V6Opt = Annotated[bool, typer.Option("-6", "--ipv6", help="IPv6 destinations only.")]
EventsOpt = Annotated[bool, typer.Option("-e", "--events", help="Print one line per connect.")]
ByOpt = Annotated[str, typer.Option("--by", metavar="process|dest",
                                    help="Group histograms by process or by destination.")]
UdpOpt = Annotated[bool, typer.Option("--udp", help="Also count UDP connect() calls (they do "
                                                    "not wait; timed in the syscall).")]


# -- naming ----------------------------------------------------------------------------------------
def result_name(code: int) -> str:
    if code == 0:
        return "OK"
    if code == RESULT_CLOSED:
        return "CLOSED"
    return _errno.errorcode.get(code, f"E{code}")


def family_name(family: int) -> str:
    return "IPv4" if family == 4 else "IPv6"


def address(family: int, raw: bytes) -> str:
    import socket
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    return socket.inet_ntop(socket.AF_INET6, raw[:16])


def dest_text(family: int, addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if family == 6 else f"{addr}:{port}"


def _comm(raw: bytes) -> str:
    return raw.split(b"\0")[0].decode(errors="replace")


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


def decode_key(k) -> Key:
    dest = address(k.family, bytes(k.daddr)) if any(k.daddr) else ""
    return Key(k.tgid, _comm(k.comm), k.family, k.mode, k.result, dest, k.dport)


class Stats:
    """A histogram with its exact sum in ns (struct soconnlat_value)."""
    __slots__ = ("hist", "sum_ns")

    def __init__(self, hist=None, sum_ns: int = 0):
        from netkit.engine.hist import Log2Hist
        self.hist = hist or Log2Hist()
        self.sum_ns = sum_ns

    def add(self, other: "Stats") -> None:
        self.hist.add(other.hist)
        self.sum_ns += other.sum_ns

    def minus(self, earlier: "Stats") -> "Stats":
        return Stats(self.hist.minus(earlier.hist), self.sum_ns - earlier.sum_ns)


class Histograms:
    """Cumulative histograms read from the `hists` map; the change since the last read.

    Entries of processes that have exited are folded into `gone` and deleted from the map, so
    the map (10240 keys) does not fill up on a long run; the run totals keep them."""

    def __init__(self, hists_map, per_process: bool):
        self.map = hists_map
        self.per_process = per_process
        self.last: dict[Key, Stats] = {}
        self.gone: dict[Key, Stats] = {}
        self.raw: dict[Key, object] = {}        # the map's own key, to delete it exactly

    def _read(self) -> dict[Key, Stats]:
        from netkit.engine.hist import Log2Hist
        now = {}
        for raw_key, value in self.map.items():
            key = decode_key(raw_key)
            self.raw[key] = raw_key
            now[key] = Stats(Log2Hist.from_value(value.lat), value.sum_ns)
        return now

    def read(self) -> tuple[dict[Key, Stats], dict[Key, Stats]]:
        """(what changed since the last read, totals since the start)."""
        from pathlib import Path
        now = self._read()
        delta = {}
        for key, stats in now.items():
            change = stats.minus(self.last[key]) if key in self.last else stats
            if change.hist.count:
                delta[key] = change
        self.last = now
        if self.per_process:
            for key in [k for k in now if not Path(f"/proc/{k.pid}").exists()]:
                self._fold(key)
        totals: dict[Key, Stats] = {}
        for part in (self.gone, self.last):
            for key, stats in part.items():
                totals.setdefault(key, Stats()).add(stats)
        return delta, totals

    def _fold(self, key: Key) -> None:
        self.map.delete(self.raw.pop(key))
        self.gone.setdefault(key, Stats()).add(self.last.pop(key))


def snapshot(ts: float, totals: dict[Key, Stats], by_dest: bool, ms: bool):
    """The run's cumulative counters and histograms for the exporters: connects and latency by
    comm (or destination), family, mode and result. Processes with the same comm are summed."""
    from netkit.metrics import Counter, Histogram, Snapshot
    unit_ns = 1_000_000 if ms else 1_000
    merged: dict[tuple, Stats] = {}
    for key, stats in totals.items():
        who = (("dest", dest_text(key.family, key.dest, key.dport)),) if by_dest else \
            (("comm", key.comm),)
        labels = who + (("family", family_name(key.family)), ("mode", MODES[key.mode]),
                        ("result", result_name(key.result)))
        merged.setdefault(labels, Stats()).add(stats)
    counters, histograms = [], []
    for labels, stats in sorted(merged.items()):
        counters.append(Counter("soconnlat_connects", "IP connect() calls that ended, by result",
                                stats.hist.count, dict(labels)))
        histograms.append(Histogram("soconnlat_latency",
                                    "connect() latency: syscall time for blocking connects, "
                                    "connect() to ESTABLISHED/CLOSE for non-blocking ones",
                                    tuple(stats.hist.slots), stats.sum_ns / unit_ns,
                                    unit_ns * 1e-9, dict(labels)))
    return Snapshot("soconnlat", ts, counters=counters, histograms=histograms)


@contextlib.contextmanager
def export_source(pid: int | None = None, name: str | None = None, cgroup: str | None = None):
    """For `netkit export`: attach soconnlat's probes (histograms by comm, microseconds, no
    events), yield a function ts -> Snapshot."""
    from netkit.engine.bpfobject import BPFObject, Filters
    rodata = _rodata(False, False, False, None, False, False, False)
    with BPFObject("soconnlat", Filters(pid, name, cgroup), rodata=rodata) as obj:
        hists = Histograms(obj.map("hists"), per_process=True)
        yield lambda ts: snapshot(ts, hists.read()[1], False, False)


# -- the view -----------------------------------------------------------------------------------
class Units:
    def __init__(self, ms: bool):
        self.name = "ms" if ms else "us"
        self.ns = 1_000_000 if ms else 1_000

    def value(self, ns: int) -> float:
        return round(ns / self.ns, 3)

    def text(self, ns: float) -> str:
        return f"{ns / self.ns:.3f}" if self.name == "ms" else f"{ns / self.ns:.1f}"


class SoconnlatView:
    def __init__(self, out, units: Units, by_dest: bool):
        from netkit.render.output import StreamTable
        self.out, self.units, self.by_dest = out, units, by_dest
        self.events = StreamTable(out, [
            Column("TIME", 12, "<", style="dim"), Column("PID", 7), Column("COMM", 15, "<", style="bold"),
            Column("FAM", 4, "<"), Column("DEST", 24, "<"),
            Column(f"LAT({units.name})", 10, fmt=units.text), Column("RESULT", 12, "<"),
            Column("MODE", 11, "<")])

    # one connect
    def event(self, e, wall_offset: float) -> None:
        from datetime import datetime
        when = datetime.fromtimestamp(e.end_ns / 1e9 + wall_offset)
        dest = address(e.family, bytes(e.daddr))
        if self.out.mode == "json":
            self.out.record({
                "type": "event", "ts": when.astimezone().isoformat(timespec="microseconds"),
                "pid": e.tgid, "tid": e.tid, "comm": _comm(e.comm), "family": family_name(e.family),
                "dest": dest, "dport": e.dport, f"latency_{self.units.name}": self.units.value(e.lat_ns),
                "result": result_name(e.result),
                "errno": None if e.result == RESULT_CLOSED else e.result, "mode": MODES[e.mode]})
            return
        self.events.row([when.strftime("%H:%M:%S.%f")[:-3], e.tgid, _comm(e.comm),
                         family_name(e.family), dest_text(e.family, dest, e.dport), e.lat_ns,
                         result_name(e.result), MODES[e.mode]])

    # histograms
    def _who(self, key: Key) -> tuple:
        if self.by_dest:
            return (key.family, key.dest, key.dport)
        return (key.pid, key.comm)

    def _who_text(self, key: Key) -> str:
        if self.by_dest:
            return dest_text(key.family, key.dest, key.dport)
        return f"PID {key.pid} {key.comm}"

    def _json_who(self, key: Key) -> dict:
        if self.by_dest:
            return {"dest": key.dest, "dport": key.dport}
        return {"pid": key.pid, "comm": key.comm}

    def histograms(self, stats: dict[Key, Stats], scope: str, seconds: float, title: str) -> None:
        u = self.units.name
        keys = sorted(stats, key=lambda k: (self._who(k), k.result != 0, k.result, k.family, k.mode))
        if self.out.mode == "json":
            for key in keys:
                s = stats[key]
                self.out.record({
                    "type": "hist", "scope": scope,
                    ("interval_s" if scope == "interval" else "duration_s"): round(seconds, 3),
                    **self._json_who(key), "family": family_name(key.family),
                    "mode": MODES[key.mode], "result": result_name(key.result),
                    "errno": None if key.result == RESULT_CLOSED else key.result,
                    "count": s.hist.count, f"latency_{u}_sum": self.units.value(s.sum_ns),
                    f"latency_{u}_avg": self.units.value(s.sum_ns / s.hist.count),
                    "buckets": [{"low": 0 if i == 0 else 1 << i, "high": (1 << (i + 1)) - 1,
                                 "count": c} for i, c in enumerate(s.hist.slots) if c]})
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
            merged.setdefault(group, Stats()).add(stats[key])
            first.setdefault(group, key)
        for group, s in merged.items():
            key = first[group]
            self.out.line()
            self.out.hist(f"{self._who_text(key)}, {result_name(key.result)}", s.hist.slots, u)
        self.out.line()
        who_cols = ([Column("DEST", 24, "<")] if self.by_dest else
                    [Column("PID", 7), Column("COMM", 15, "<", style="bold")])
        cols = who_cols + [Column("FAM", 4, "<"), Column("MODE", 11, "<"), Column("RESULT", 12, "<"), Column("COUNT", 7),
                           Column(f"AVG({u})", 10, fmt=self.units.text)]
        rows = []
        for key in keys:
            s = stats[key]
            who = [dest_text(key.family, key.dest, key.dport)] if self.by_dest else [key.pid, key.comm]
            rows.append(who + [family_name(key.family), MODES[key.mode], result_name(key.result), s.hist.count,
                               s.sum_ns / s.hist.count])
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
        if lost:
            self.out.note(f"netkit soconnlat: {lost} events were lost (the ring buffer was full)")


# -- the command --------------------------------------------------------------------------------
def _check_options(ipv4: bool, ipv6: bool, by: str, dport: list[int] | None) -> None:
    if ipv4 and ipv6:
        fail("soconnlat", "-4 and -6 exclude each other (give neither for both)", 2)
    if by not in ("process", "dest"):
        fail("soconnlat", f"--by must be process or dest, not {by!r}", 2)
    if dport and len(set(dport)) > MAX_DPORTS:
        fail("soconnlat", f"at most {MAX_DPORTS} destination ports (-D)", 2)


def _rodata(ipv4: bool, ipv6: bool, by_dest: bool, dport, events: bool, udp: bool, ms: bool) -> dict:
    ports = sorted(set(dport or []))
    values = {"filter_family": 4 if ipv4 else 6 if ipv6 else 0, "by_dest": by_dest,
              "emit_events": events, "include_udp": udp,
              "unit_ns": 1_000_000 if ms else 1_000, "n_dports": len(ports)}
    if ports:
        values["filter_dports"] = b"".join(p.to_bytes(2, "little") for p in ports)
    return values


@tool_errors("soconnlat")
@export_options("soconnlat")
def command(
    interval: OptionalIntervalArg = None,
    count: CountArg = None,
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    dport: DportOpt = None,
    ipv4: V4Opt = False,
    ipv6: V6Opt = False,
    events: EventsOpt = False,
    by: ByOpt = "process",
    milliseconds: MillisecondsOpt = False,
    udp: UdpOpt = False,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
    exporters: ExportHub = None,
):
    _check_options(ipv4, ipv6, by, dport)
    from netkit.engine.bpfobject import BPFObject, Filters, set_verbose
    from netkit.render.output import Output

    set_verbose(verbose)
    by_dest = by == "dest"
    out = Output(json_mode=json, no_color=no_color)
    units = Units(milliseconds)
    rodata = _rodata(ipv4, ipv6, by_dest, dport, events, udp, milliseconds)
    with BPFObject("soconnlat", Filters(pid, name, cgroup), rodata=rodata) as obj:
        if duration == 0:
            return
        view = SoconnlatView(out, units, by_dest)
        hists = Histograms(obj.map("hists"), per_process=not by_dest)
        wall_offset = time.time() - time.monotonic()     # bpf_ktime_get_ns is CLOCK_MONOTONIC
        ring = obj.ring_buffer("events", "soconnlat_event",
                               lambda e: view.event(e, wall_offset)) if events else None
        what = "IP connect() latency" + (" by destination" if by_dest else "")
        started = time.monotonic()
        try:
            # Inside the try: a script may send SIGINT the moment it reads this line.
            out.note(f"Tracing {what}... Hit Ctrl-C to end.")
            _loop(ring, view, hists, exporters, interval, count, duration, by_dest, milliseconds,
                  started)
        except KeyboardInterrupt:
            pass
        if ring:
            ring.poll(0)                        # what ended before the stop
        seconds = time.monotonic() - started
        _, totals = hists.read()
        if exporters:
            exporters.publish(snapshot(time.time(), totals, by_dest, milliseconds))
        view.histograms(totals, "run", seconds, f"Connect latency over {seconds:.1f} s:")
        view.summary(totals, seconds, obj.lost_events())


def _loop(ring, view, hists, exporters, interval, count, duration, by_dest, ms, started):
    """Wait for the end (Ctrl-C, duration or COUNT intervals), printing every interval and
    streaming events meanwhile. Exporters get a snapshot every interval (every second when no
    interval is printed)."""
    from netkit.render.output import clock_now
    wait = (lambda seconds: ring.poll(math.ceil(seconds * 1000))) if ring else time.sleep
    last = started
    for ts in Ticker(interval or (1.0 if exporters else None), count if interval else None,
                     duration, wait=wait):
        now = time.monotonic()
        delta, totals = hists.read()
        if interval:
            view.histograms(delta, "interval", now - last, clock_now())
        if exporters:
            exporters.publish(snapshot(ts, totals, by_dest, ms))
        last = now
