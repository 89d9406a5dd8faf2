"""Socket API activity per interval: socket(), bind(), listen(), connect(), accept(), the send
and recv syscall families, TCP state changes, and the bytes through sockets.

Counted in the kernel from BTF tracepoints only (sys_enter, sock:inet_sock_set_state,
sock:sock_send_length, sock:sock_recv_length), system-wide or for one process, command name or
cgroup. Like bcc's tools: an optional [INTERVAL [COUNT]], Ctrl-C for a summary.
"""
from __future__ import annotations

import contextlib
from typing import NamedTuple

from netkit.cli.loop import Loop
from netkit.cli.options import (CgroupOpt, CountArg, DurationOpt, IntervalArg, JsonOpt, NameOpt,
                                NoColorOpt, PidOpt, TopOpt, VerboseOpt)
from netkit.cli.tool import ManPage, open_output
from netkit.export import ExportHub, export_options
from netkit.metrics import Counter, Snapshot
from netkit.render.output import Column

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

class Proc(NamedTuple):
    pid: int
    comm: str


def process_counts(counts_map):
    """The per-process counters (map tgid -> per-CPU struct sockstat_counts), read per interval;
    processes that exited are retired from the map."""
    from netkit.engine.counters import Counts, CumulativeMap, alive
    from netkit.render.fields import comm

    def decode(key, per_cpu):
        name = next((comm(v.comm) for v in per_cpu if v.comm), "")
        return Proc(key.value, name), Counts.of(per_cpu, COUNTERS)
    return CumulativeMap(counts_map, decode, retire=lambda proc, _: not alive(proc.pid))


EXPORT_HELP = {"tcp_state": "TCP state transitions", "tx_bytes": "Bytes sent through sockets",
               "rx_bytes": "Bytes received through sockets"}


def export_snapshot(ts: float, totals: dict, unavailable) -> Snapshot:
    """System-wide totals since the start, for --prometheus/--textfile/--graphite."""
    system = _system_wide(totals)
    return Snapshot("sockstat", ts, counters=[
        Counter(f"sockstat_{key}" if name in EXPORT_HELP else f"sockstat_{key}_calls",
                EXPORT_HELP.get(name, f"Calls of the {name}() family, counted at syscall entry"),
                system[name])
        for name, _, key, _ in FIELDS if name not in unavailable])


def _open(pid, name, cgroup):
    from netkit.engine.bpfobject import BPFObject, Filters
    return BPFObject("sockstat", Filters(pid, name, cgroup), optional=OPTIONAL_TRACEPOINTS)


def _unavailable(missing: list[str]) -> set[str]:
    return {f[0] for f in FIELDS if f[3] in missing}


@contextlib.contextmanager
def export_source(pid: int | None = None, name: str | None = None, cgroup: str | None = None):
    """For `netkit export`: attach sockstat's probes, yield a function ts -> Snapshot."""
    with _open(pid, name, cgroup) as obj:
        counts = process_counts(obj.map("counts"))

        def sample(ts: float) -> Snapshot:
            counts.read()
            return export_snapshot(ts, counts.totals(), _unavailable(obj.missing))
        yield sample


def _system_wide(per_process: dict) -> dict[str, int]:
    return {name: sum(c[name] for c in per_process.values()) for name in COUNTERS}


def _busiest(per_process: dict, n: int | None):
    """Processes with the most socket calls first, then the most bytes."""
    ranked = sorted(per_process.items(),
                    key=lambda kv: (sum(kv[1][f] for f in CALL_COUNTERS), kv[1]["tx_bytes"] +
                                    kv[1]["rx_bytes"]), reverse=True)
    return ranked if n is None else ranked[:n]


class SockstatView:
    def __init__(self, out, missing: list[str], top: int | None):
        from netkit.render.output import StreamTable
        self.out, self.top = out, top
        self.unavailable = _unavailable(missing)
        fmt = self._cell
        self.count_columns = [Column(header, 9 if name.endswith("bytes") else 7,
                                     fmt=lambda v, n=name: fmt(n, v)) for name, header, _, _ in FIELDS]
        self.stream = StreamTable(out, [Column("TIME", 8, "<", style="dim")] + self.count_columns)

    def _cell(self, name: str, value) -> str:
        return "n/a" if name in self.unavailable else str(value)

    def _json_counts(self, counts) -> dict:
        return {key: (None if name in self.unavailable else counts[name])
                for name, _, key, _ in FIELDS}

    def _json_processes(self, ranked) -> list[dict]:
        return [{"pid": proc.pid, "comm": proc.comm, **self._json_counts(c)} for proc, c in ranked]

    def _process_rows(self, ranked):
        return [[proc.pid, proc.comm] + [c[name] for name in COUNTERS] for proc, c in ranked]

    def interval(self, ts: float, seconds: float, delta: dict) -> None:
        from netkit.render.fields import clock
        system = _system_wide(delta)
        if self.out.mode == "json":
            record = {"type": "interval", "interval_s": round(seconds, 3),
                      **self._json_counts(system)}
            if self.top:
                record["top"] = self._json_processes(_busiest(delta, self.top))
            self.out.record(record)
        elif self.top and not delta:
            self.out.line(f"{clock(ts)}  (no socket activity)")
        elif self.top:
            self.out.table(self._process_columns(), self._process_rows(_busiest(delta, self.top)),
                           title=clock(ts))
        else:
            self.stream.row([clock(ts)] + [system[name] for name in COUNTERS])

    def _process_columns(self):
        return [Column("PID", 7), Column("COMM", 15, "<", style="bold")] + self.count_columns

    def summary(self, seconds: float, totals: dict) -> None:
        system = _system_wide(totals)
        ranked = _busiest(totals, None)
        if self.out.mode == "json":
            self.out.record({"type": "summary", "duration_s": round(seconds, 3),
                             **self._json_counts(system), "top": self._json_processes(ranked)})
            return
        self.out.line()
        self.out.table(self.count_columns, [[system[name] for name in COUNTERS]],
                       title=f"Total over {seconds:.1f} s:")
        if self.top and ranked:
            self.out.line()
            self.out.table(self._process_columns(), self._process_rows(ranked[:self.top]),
                           title="Busiest processes over the run:")


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
    out = open_output(json, no_color, verbose)
    with _open(pid, name, cgroup) as obj:
        for tracepoint in obj.missing:
            out.note(f"netkit sockstat: this kernel has no tracepoint {tracepoint}; "
                     f"its column shows n/a")
        if duration == 0:
            return
        view = SockstatView(out, obj.missing, top)
        counts = process_counts(obj.map("counts"))

        def tick(ts: float, seconds: float, show: bool):
            delta = counts.read()
            if show:
                view.interval(ts, seconds, delta)
            return export_snapshot(ts, counts.totals(), view.unavailable) if exporters else None

        loop = Loop(out, interval=interval, count=count, duration=duration, exporters=exporters)
        seconds = loop.run(tick, "Tracing socket activity... Hit Ctrl-C to end.")
        view.summary(seconds, counts.totals())
