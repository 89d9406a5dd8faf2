"""Socket API activity per interval: socket(), bind(), listen(), connect(), accept(), the send
and recv syscall families, TCP state changes, and the bytes through sockets.

Counted in the kernel from BTF tracepoints only (sys_enter, sock:inet_sock_set_state,
sock:sock_send_length, sock:sock_recv_length), system-wide or for one process, command name or
cgroup. Like bcc's tools: an optional [INTERVAL [COUNT]], Ctrl-C for a summary.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from netkit.export import ExportHub, export_options
from netkit.metrics import Counter, Snapshot
from netkit.tools.common import (CgroupOpt, Column, CountArg, DurationOpt, IntervalArg, JsonOpt,
                                 ManPage, NameOpt, NoColorOpt, PidOpt, Ticker, VerboseOpt,
                                 tool_errors)

SUMMARY = "Socket syscalls, TCP state changes and bytes per interval (tracepoints)."

# (counter in struct sockstat_counts, column header, JSON key, tracepoint it needs if optional)
FIELDS = [
    ("socket", "SOCKET", "socket", None),
    ("bind", "BIND", "bind", None),
    ("listen", "LISTEN", "listen", None),
    ("connect", "CONNECT", "connect", None),
    ("accept", "ACCEPT", "accept", None),
    ("send", "SEND", "send", None),
    ("recv", "RECV", "recv", None),
    ("tcp_state", "TCPSTATE", "tcp_state_changes", "inet_sock_set_state"),
    ("tx_bytes", "TX_BYTES", "tx_bytes", "sock_send_length"),
    ("rx_bytes", "RX_BYTES", "rx_bytes", "sock_recv_length"),
]
COUNTERS = [f[0] for f in FIELDS]
CALL_COUNTERS = [name for name in COUNTERS if not name.endswith("_bytes")]   # what ranks --top
OPTIONAL_TRACEPOINTS = {f[3] for f in FIELDS if f[3]}

MAN = ManPage(
    description=(
        "sockstat counts socket API activity in the kernel and prints it once per interval: the "
        "socket(2)/socketpair(2), bind(2), listen(2), connect(2), accept(2)/accept4(2) calls, the "
        "send family (sendto, sendmsg, sendmmsg; send(2) is sendto) and the recv family "
        "(recvfrom, recvmsg, recvmmsg), TCP state transitions (sock:inet_sock_set_state), and the "
        "bytes that passed through sock_sendmsg/sock_recvmsg (sock:sock_send_length and "
        "sock:sock_recv_length, which also see write(2) and read(2) on sockets; MSG_PEEK reads "
        "are not counted). Calls are counted at syscall entry, as the original sockstat.bt did, "
        "whether they succeed or not.\n\n"
        "Only BTF tracepoints (tp_btf) are used, so it runs on kernels without kprobes: the raw "
        "sys_enter tracepoint with the syscall number (one early-exit check per syscall, and a "
        "detach that takes no RCU grace period per event), sock:inet_sock_set_state, "
        "sock:sock_send_length and sock:sock_recv_length. 32-bit (compat) syscalls of 64-bit "
        "kernels are not counted; their bytes are. A kernel older than "
        "6.3 lacks the two sock length tracepoints: the byte columns then show n/a. TCP state "
        "changes that the kernel makes in softirq context (a SYN-ACK or FIN arriving from another "
        "host) are charged to whichever task was running; system-wide totals are exact.\n\n"
        "Counters are kept per process in a per-CPU BPF hash map and read as cumulative totals, "
        "so no event is lost between two reads. The default view is one line per interval; "
        "--top N shows the busiest N processes instead. Ctrl-C (or SIGTERM, or the end of "
        "--duration or COUNT) prints the totals of the whole run."),
    examples=[
        ("netkit sockstat", "system-wide, one line a second until Ctrl-C"),
        ("netkit sockstat 5 3", "three lines, five seconds apart"),
        ("netkit sockstat -p 1234 --top 5", "one process"),
        ("netkit sockstat --top 10 -d 60", "the ten busiest processes each second, for a minute"),
        ("netkit sockstat -c system.slice/nginx.service", "one cgroup (container or unit)"),
        ("netkit sockstat --json | head -1", "one NDJSON record"),
    ],
    output=(
        "Columns: TIME (HH:MM:SS, end of the interval), SOCKET, BIND, LISTEN, CONNECT, ACCEPT, "
        "SEND, RECV (calls), TCPSTATE (TCP state transitions), TX_BYTES and RX_BYTES (bytes "
        "through sockets). With --top: PID and COMM first, one row per process.\n\n"
        "JSON: one object per interval with keys type (\"interval\"), ts (ISO 8601), "
        "interval_s, socket, bind, listen, connect, accept, send, recv, tcp_state_changes, "
        "tx_bytes, rx_bytes (null when the kernel lacks the tracepoint), and with --top a list "
        "top of objects with pid, comm and the same counters. At the end one object with type "
        "\"summary\", duration_s, the same counters for the whole run and top (all processes "
        "seen, busiest first)."),
    see_also=["ss(8)", "netstat(8)", "bpftrace(8)", "sockstat.bt (BPF Performance Tools, ch. 10)"],
)

TopOpt = Annotated[Optional[int], typer.Option("-T", "--top", metavar="N", min=1, show_default=False,
                                               help="Show the N busiest processes each interval.")]


def _sum_cpus(per_cpu) -> tuple[dict[str, int], str]:
    totals = {name: sum(getattr(v, name) for v in per_cpu) for name in COUNTERS}
    comm = next((v.comm.decode(errors="replace") for v in per_cpu if v.comm), "")
    return totals, comm


class ProcessCounts:
    """Cumulative per-process counters read from the BPF map, and what changed since last read."""

    def __init__(self, counts_map):
        self.map = counts_map
        self.last: dict[int, dict[str, int]] = {}
        self.comms: dict[int, str] = {}
        self.run_totals: dict[int, dict[str, int]] = {}

    def read_delta(self) -> dict[int, dict[str, int]]:
        delta = {}
        for key, per_cpu in self.map.items():
            tgid = key.value
            now, comm = _sum_cpus(per_cpu)
            before = self.last.get(tgid, dict.fromkeys(COUNTERS, 0))
            change = {name: now[name] - before[name] for name in COUNTERS}
            if any(change.values()):
                delta[tgid] = change
                run = self.run_totals.setdefault(tgid, dict.fromkeys(COUNTERS, 0))
                for name in COUNTERS:
                    run[name] += change[name]
            self.last[tgid], self.comms[tgid] = now, comm or self.comms.get(tgid, "")
        self._forget_exited()
        return delta

    def _forget_exited(self) -> None:
        """Drop map entries of processes that have exited (their counts are already taken)."""
        for tgid in list(self.last):
            if not Path(f"/proc/{tgid}").exists():
                self.map.delete(tgid)
                del self.last[tgid]


EXPORT_HELP = {"tcp_state": "TCP state transitions", "tx_bytes": "Bytes sent through sockets",
               "rx_bytes": "Bytes received through sockets"}


def export_snapshot(ts: float, run_totals: dict[int, dict[str, int]], unavailable) -> Snapshot:
    """System-wide totals since the start, for --prometheus/--textfile/--graphite."""
    totals = _totals(run_totals)
    return Snapshot("sockstat", ts, counters=[
        Counter(f"sockstat_{key}" if name in EXPORT_HELP else f"sockstat_{key}_calls",
                EXPORT_HELP.get(name, f"Calls of the {name}() family, counted at syscall entry"),
                totals[name])
        for name, _, key, _ in FIELDS if name not in unavailable])


@contextlib.contextmanager
def export_source(pid: int | None = None, name: str | None = None, cgroup: str | None = None):
    """For `netkit export`: attach sockstat's probes, yield a function ts -> Snapshot."""
    from netkit.engine.bpfobject import BPFObject, Filters
    with BPFObject("sockstat", Filters(pid, name, cgroup), optional=OPTIONAL_TRACEPOINTS) as obj:
        counts = ProcessCounts(obj.map("counts"))
        unavailable = {f[0] for f in FIELDS if f[3] in obj.missing}

        def sample(ts: float) -> Snapshot:
            counts.read_delta()
            return export_snapshot(ts, counts.run_totals, unavailable)
        yield sample


def _totals(per_process: dict[int, dict[str, int]]) -> dict[str, int]:
    return {name: sum(c[name] for c in per_process.values()) for name in COUNTERS}


def _busiest(per_process: dict[int, dict[str, int]], n: int | None):
    ranked = sorted(per_process.items(),
                    key=lambda kv: (sum(kv[1][f] for f in CALL_COUNTERS), kv[1]["tx_bytes"] +
                                    kv[1]["rx_bytes"]), reverse=True)
    return ranked if n is None else ranked[:n]


class SockstatView:
    def __init__(self, out, missing: list[str], top: int | None):
        from netkit.render.output import StreamTable
        self.out, self.top = out, top
        self.unavailable = {f[0] for f in FIELDS if f[3] in missing}
        fmt = self._cell
        self.count_columns = [Column(header, 9 if name.endswith("bytes") else 7,
                                     fmt=lambda v, n=name: fmt(n, v)) for name, header, _, _ in FIELDS]
        self.stream = StreamTable(out, [Column("TIME", 8, "<", style="dim")] + self.count_columns)

    def _cell(self, name: str, value) -> str:
        return "n/a" if name in self.unavailable else str(value)

    def _json_counts(self, counts: dict[str, int]) -> dict:
        return {key: (None if name in self.unavailable else counts[name])
                for name, _, key, _ in FIELDS}

    def _process_rows(self, ranked, comms):
        return [[tgid, comms.get(tgid, "")] + [c[name] for name in COUNTERS] for tgid, c in ranked]

    def interval(self, ts: float, seconds: float, delta: dict[int, dict[str, int]], comms) -> None:
        from netkit.render.output import iso_now
        totals = _totals(delta)
        if self.out.mode == "json":
            record = {"type": "interval", "ts": iso_now(), "interval_s": round(seconds, 3),
                      **self._json_counts(totals)}
            if self.top:
                record["top"] = [{"pid": tgid, "comm": comms.get(tgid, ""), **self._json_counts(c)}
                                 for tgid, c in _busiest(delta, self.top)]
            self.out.record(record)
        elif self.top and not delta:
            self.out.line(f"{time.strftime('%H:%M:%S', time.localtime(ts))}  (no socket activity)")
        elif self.top:
            self.out.table(self._process_columns(), self._process_rows(_busiest(delta, self.top), comms),
                           title=time.strftime("%H:%M:%S", time.localtime(ts)))
        else:
            self.stream.row([time.strftime("%H:%M:%S", time.localtime(ts))] +
                            [totals[name] for name in COUNTERS])

    def _process_columns(self):
        return [Column("PID", 7), Column("COMM", 15, "<", style="bold")] + self.count_columns

    def summary(self, seconds: float, run_totals: dict[int, dict[str, int]], comms) -> None:
        totals = _totals(run_totals)
        ranked = _busiest(run_totals, None)
        if self.out.mode == "json":
            self.out.record({"type": "summary", "duration_s": round(seconds, 3),
                             **self._json_counts(totals),
                             "top": [{"pid": tgid, "comm": comms.get(tgid, ""), **self._json_counts(c)}
                                     for tgid, c in ranked]})
            return
        self.out.line()
        self.out.table(self.count_columns, [[totals[name] for name in COUNTERS]],
                       title=f"Total over {seconds:.1f} s:")
        if self.top and ranked:
            self.out.line()
            self.out.table(self._process_columns(), self._process_rows(ranked[:self.top], comms),
                           title="Busiest processes over the run:")


@tool_errors("sockstat")
@export_options("sockstat")
def command(
    interval: IntervalArg = 1.0,
    count: CountArg = None,
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    duration: DurationOpt = None,
    top: TopOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
    exporters: ExportHub = None,
):
    from netkit.engine.bpfobject import BPFObject, Filters, set_verbose
    from netkit.render.output import Output

    set_verbose(verbose)
    out = Output(json_mode=json, no_color=no_color)
    with BPFObject("sockstat", Filters(pid, name, cgroup), optional=OPTIONAL_TRACEPOINTS) as obj:
        for tracepoint in obj.missing:
            out.note(f"netkit sockstat: this kernel has no tracepoint {tracepoint}; "
                     f"its column shows n/a")
        if duration == 0:
            return
        view = SockstatView(out, obj.missing, top)
        counts = ProcessCounts(obj.map("counts"))
        started = last = time.monotonic()
        try:
            out.note("Tracing socket activity... Hit Ctrl-C to end.")
            for ts in Ticker(interval, count, duration):
                now = time.monotonic()
                view.interval(ts, now - last, counts.read_delta(), counts.comms)
                if exporters:
                    exporters.publish(export_snapshot(ts, counts.run_totals, view.unavailable))
                last = now
        except KeyboardInterrupt:
            counts.read_delta()
            if exporters:
                exporters.publish(export_snapshot(time.time(), counts.run_totals, view.unavailable))
        view.summary(time.monotonic() - started, counts.run_totals, counts.comms)
