"""TCP bytes received and sent per flow (process, local and remote end) each INTERVAL, busiest
first, IPv4 and IPv6 apart: bcc's tcptop on the socket-layer tracepoints
sock:sock_send_length and sock:sock_recv_length.
"""
from __future__ import annotations

import enum
import heapq
import os
import time
from typing import Annotated, NamedTuple

import typer

from netkit.cli.options import (CgroupOpt, CountArg, DurationOpt, IntervalArg, Ipv4Opt, Ipv6Opt,
                                JsonOpt, NameOpt, NoColorOpt, PidOpt, VerboseOpt, family_of)
from netkit.cli.runs import export_source_of
from netkit.cli.tool import ManPage, open_output
from netkit.engine.errors import NetkitError
from netkit.export import ExportHub, export_options
from netkit.render.output import Column

SUMMARY = "TCP bytes received and sent per flow, busiest first, every interval (tracepoints)."

MAN = ManPage(
    description=(
        "tcptop shows which TCP flows move the bytes: for each process and connection (local "
        "and remote address and port), the kilobytes it received and sent in the last "
        "INTERVAL (1 s by default), busiest first, IPv4 and IPv6 flows in two blocks, the "
        "screen cleared before each (on a terminal; -C keeps the history). A line with the "
        "load averages (/proc/loadavg) heads each interval unless -S is given. Only flows that "
        "moved data in the interval are shown; -r keeps the first ROWS (20 by default), -s "
        "orders them by all bytes, bytes sent or bytes received.\n\n"
        "The bytes are what the process's send and receive calls on a TCP socket returned, "
        "counted in the kernel at the sock:sock_send_length and sock:sock_recv_length "
        "tracepoints (kernel 6.3 and later), which fire as sock_sendmsg() and sock_recvmsg() "
        "return: write, writev, send, sendto, sendmsg, read, readv, recv, recvfrom, recvmsg, "
        "io_uring, and sendfile (which sends through sock_sendmsg). Reads with MSG_PEEK are "
        "not counted (the data counts when it is read). Payload only: headers, "
        "retransmissions and ACKs are not in these figures.\n\n"
        "Not seen, against bcc's tcptop (kprobes on tcp_sendmsg and tcp_cleanup_rbuf): data "
        "received without sock_recvmsg, that is through tcp_read_sock(): splice(2) from a TCP "
        "socket (a proxy splicing to a pipe), sockmap/sk_skb redirection, kTLS's receive "
        "parser; and TCP_ZEROCOPY_RECEIVE (the pages are mapped, not copied). Sends through "
        "these paths go through sock_sendmsg and are seen. MPTCP sockets (protocol "
        "IPPROTO_MPTCP at the socket) are not counted.\n\n"
        "PID and COMM are the process that made the call: two processes sharing a socket "
        "(a forked server) show as two flows. A flow's counters live in a kernel hash map of "
        "16384 flows; a closed flow leaves it after its last interval is shown. When the map "
        "is full, new flows are not counted, and tcptop says how many were missed. Bytes read after the socket has closed (a reply read after "
        "shutdown(2), once the peer has closed too) are counted under local port 0: the "
        "kernel has released the port by then.\n\n"
        "-p, -n and -c select processes in the kernel; -4 and -6 keep one address family "
        "(the socket's: an IPv4-mapped address on an IPv6 socket is IPv6)."),
    examples=[
        ("netkit tcptop", "every second, until Ctrl-C"),
        ("netkit tcptop -C 5 3", "three 5-second intervals, without clearing the screen"),
        ("netkit tcptop -p 1234 -s received -r 5", "one process, the five flows that received "
                                                   "most"),
        ("netkit tcptop --json -d 10", "ten seconds of flows as NDJSON"),
    ],
    output=(
        "A line \"HH:MM:SS loadavg: \" and /proc/loadavg (omitted with -S), then for IPv4 "
        "flows the columns PID, COMM, LADDR, RADDR (address:port), RX_KB, TX_KB (kilobytes "
        "of 1024 bytes, rounded down as bcc does), and for IPv6 flows the same with LADDR6 "
        "and RADDR6.\n\n"
        "JSON: one object per flow and interval with type \"flow\", ts, interval_s, pid, comm, "
        "family (\"IPv4\" or \"IPv6\"), laddr, lport, raddr, rport, rx_bytes, tx_bytes (exact "
        "bytes); -r and -s apply as in text. At the end one object with type \"summary\", "
        "duration_s, flows (flows seen), rx_bytes, tx_bytes (the run's totals, all flows) and "
        "missed_flows (not counted: the flow map was full).\n\n"
        "Exporters: netkit_tcptop_rx_bytes_total and netkit_tcptop_tx_bytes_total{comm} "
        "(per command name: flows come and go)."),
    see_also=["netkit-top(8)", "netkit-socketio(8)", "tcptop(8) (bcc)", "ss(8)"],
)

ROWS_DEFAULT = 20
# A flow whose socket closed this long ago has had its last byte counted: it leaves the map.
CLOSED_GRACE_NS = 500_000_000


class Sort(str, enum.Enum):
    all = "all"
    sent = "sent"
    received = "received"


RowsOpt = Annotated[int, typer.Option(
    "-r", "--rows", metavar="ROWS", min=1, max=1_000_000,
    help="Show at most this many flows per interval.")]
SortOpt = Annotated[Sort, typer.Option(
    "-s", "--sort", help="Order flows by all bytes, bytes sent or bytes received.")]
NoClearOpt = Annotated[bool, typer.Option("-C", "--noclear",
                                          help="Do not clear the screen between intervals.")]
NoSummaryOpt = Annotated[bool, typer.Option("-S", "--nosummary",
                                            help="Do not print the load-average line.")]


class Flow(NamedTuple):
    pid: int
    comm: str
    family: int          # 4 or 6
    laddr: str
    lport: int
    raddr: str
    rport: int

    @property
    def local(self) -> str:
        from netkit.render.fields import with_port
        return with_port(self.laddr, self.lport)

    @property
    def remote(self) -> str:
        from netkit.render.fields import with_port
        return with_port(self.raddr, self.rport)


class FlowTable:
    """tcptop's flow map, read in bulk each interval (netkit.engine.batch): the change of every
    flow since the last read, on raw keys, decoded into Flows only for the rows shown. A connect
    storm that sends data makes a flow per connection end, 20,000 entries a second on loopback:
    they are summed and ranked on raw bytes, and the closed ones leave the map in one call.

    A flow leaves the map once its socket has been closed for CLOSED_GRACE_NS (its last reads
    are in), or when its process is gone."""

    def __init__(self, bpf_map):
        import struct
        from netkit.engine.batch import RawEntries
        self.raw = RawEntries(bpf_map)
        self.key_type, value = bpf_map.key_type, bpf_map.value_type
        self.pid_at = self.key_type.tgid.offset
        at, comm_at = value.rx_bytes.offset, value.comm.offset
        if (value.tx_bytes.offset, value.closed_ns.offset) != (at + 8, at + 16):
            raise NetkitError("tcptop.bpf.o: struct flow_bytes is not rx, tx, closed_ns")
        # rx_bytes, tx_bytes, closed_ns, comm
        self.value_format = (f"={at}xQQQ{comm_at - at - 24}x{value.comm.size}s"
                             f"{self.raw.value_size - comm_at - value.comm.size}x")
        self.key_format = f"{self.raw.key_size}s"
        self.iter_unpack = struct.iter_unpack
        self.last: dict[bytes, tuple[int, int]] = {}
        self.flows = 0                          # flow entries seen
        self.rx_bytes = self.tx_bytes = 0       # the run's totals
        self.by_comm: dict[bytes, list[int]] = {}

    def read(self) -> dict[bytes, tuple[int, int, bytes]]:
        """The flows that moved bytes since the last read: raw key -> (rx, tx, raw comm)."""
        changes, gone, alive = {}, [], {}
        last, by_comm = self.last, self.by_comm
        expired = time.monotonic_ns() - CLOSED_GRACE_NS
        pid_at = self.pid_at
        for keys, values in self.raw.read():
            for (key,), (rx, tx, closed_ns, comm) in zip(
                    self.iter_unpack(self.key_format, keys),
                    self.iter_unpack(self.value_format, values)):
                before = last.get(key)
                if before is None:
                    self.flows += 1
                    drx, dtx = rx, tx
                else:
                    drx, dtx = rx - before[0], tx - before[1]
                if drx or dtx:
                    changes[key] = (drx, dtx, comm)
                    sums = by_comm.get(comm)
                    if sums is None:
                        sums = by_comm[comm] = [0, 0]
                    sums[0] += drx
                    sums[1] += dtx
                if closed_ns and closed_ns <= expired:
                    gone.append(key)
                    last.pop(key, None)
                    continue
                pid = key[pid_at:pid_at + 4]
                if pid not in alive:
                    alive[pid] = os.path.exists(f"/proc/{int.from_bytes(pid, 'little')}")
                if alive[pid]:
                    last[key] = (rx, tx)
                else:
                    gone.append(key)
                    last.pop(key, None)
        self.rx_bytes += sum(c[0] for c in changes.values())
        self.tx_bytes += sum(c[1] for c in changes.values())
        self.raw.delete(gone)
        return changes

    def flow(self, key: bytes, comm: bytes) -> Flow:
        from netkit.render.fields import comm as comm_text
        from netkit.render.sockets import Endpoint
        k = self.key_type.from_buffer_copy(key)
        local, remote = Endpoint(k.local), Endpoint(k.remote)
        return Flow(k.tgid, comm_text(comm), k.local.family, local.address, local.port,
                    remote.address, remote.port)

    def ranked(self, changes: dict, sort: Sort = Sort.all, rows: int | None = None) -> list:
        """(Flow, Counts) busiest first by the sort's bytes, at most `rows`; only those are
        decoded."""
        from netkit.engine.counters import Counts
        weight = WEIGHTS[sort]
        chosen = list(changes.items())
        if rows is not None and rows < len(chosen):
            # Ties (a storm's flows all move the same bytes) are cut by the raw key: stable,
            # and only `rows` flows are decoded.
            index = SORT_INDEX[sort]
            scored = ([(c[0] + c[1], k) for k, c in chosen] if index is None else
                      [(c[index], k) for k, c in chosen])
            chosen = [(k, changes[k]) for _, k in heapq.nlargest(rows, scored)]
        decoded = [(self.flow(k, c[2]), Counts({"rx_bytes": c[0], "tx_bytes": c[1]}))
                   for k, c in chosen]
        decoded.sort(key=lambda fc: (-weight((fc[1]["rx_bytes"], fc[1]["tx_bytes"])), fc[0]))
        return decoded[:rows]


# (rx, tx) -> what a sort orders by
WEIGHTS = {Sort.all: lambda c: c[0] + c[1], Sort.sent: lambda c: c[1],
           Sort.received: lambda c: c[0]}
SORT_INDEX = {Sort.all: None, Sort.sent: 1, Sort.received: 0}     # in (rx, tx, comm)


def flow_json(flow: Flow, c) -> dict:
    from netkit.render.fields import ip_version
    return {"pid": flow.pid, "comm": flow.comm, "family": ip_version(flow.family),
            "laddr": flow.laddr, "lport": flow.lport, "raddr": flow.raddr, "rport": flow.rport,
            **c.values}


def snapshot(ts: float, table: FlowTable):
    """The run's bytes by command name, for the exporters."""
    from netkit.metrics import Counter, Snapshot
    from netkit.render.fields import comm as comm_text
    by_comm: dict[str, list[int]] = {}
    for raw, (rx, tx) in table.by_comm.items():
        sums = by_comm.setdefault(comm_text(raw), [0, 0])
        sums[0] += rx
        sums[1] += tx
    return Snapshot("tcptop", ts, counters=[
        Counter(f"tcptop_{field}", f"TCP payload bytes {what} by the process's socket calls",
                sums[i], {"comm": comm})
        for i, (field, what) in enumerate((("rx_bytes", "received"), ("tx_bytes", "sent")))
        for comm, sums in sorted(by_comm.items())])


def _open(pid, name, cgroup, family: int = 0):
    from netkit.engine.bpfobject import BPFObject, Filters
    return BPFObject("tcptop", Filters(pid, name, cgroup), rodata={"filter_family": family})


def _sample(obj):
    table = FlowTable(obj.map("flows"))

    def sample(ts: float):
        table.read()
        return snapshot(ts, table)
    return sample


export_source = export_source_of(_open, _sample)


def loadavg_line(ts: float) -> str:
    from netkit.render.fields import clock
    with open("/proc/loadavg") as f:
        return f"{clock(ts)} loadavg: {f.read().strip()}"


class TcptopView:
    def __init__(self, out, table: FlowTable, sort: Sort, rows: int, clear: bool,
                 loadavg: bool):
        self.out, self.table, self.sort, self.rows = out, table, sort, rows
        self.clear = clear and out.mode == "rich"
        self.loadavg = loadavg

    def interval(self, ts: float, seconds: float, changes: dict) -> None:
        top = self.table.ranked(changes, self.sort, self.rows)
        if self.out.mode == "json":
            for flow, c in top:
                self.out.record({"type": "flow", "interval_s": round(seconds, 3),
                                 **flow_json(flow, c)})
            return
        if self.clear:
            self.out.console.clear()
        elif self.loadavg:
            self.out.line()
        if self.loadavg:
            self.out.line(loadavg_line(ts))
        for family, suffix, width in ((4, "", 21), (6, "6", 32)):
            block = [[f.pid, f.comm, f.local, f.remote, c["rx_bytes"] // 1024,
                      c["tx_bytes"] // 1024] for f, c in top if f.family == family]
            if block:
                self.out.line()
                self.out.table([Column("PID", 7), Column("COMM", 12, "<", style="bold"),
                                Column(f"LADDR{suffix}", width, "<"),
                                Column(f"RADDR{suffix}", width, "<"), Column("RX_KB", 7),
                                Column("TX_KB", 7)], block)


@export_options("tcptop")
def command(
    interval: IntervalArg = 1.0,
    count: CountArg = None,
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    ipv4: Ipv4Opt = False,
    ipv6: Ipv6Opt = False,
    rows: RowsOpt = ROWS_DEFAULT,
    sort: SortOpt = Sort.all,
    noclear: NoClearOpt = False,
    nosummary: NoSummaryOpt = False,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
    exporters: ExportHub = None,
):
    from netkit.cli.loop import Loop

    family = family_of(ipv4, ipv6)
    out = open_output(json, no_color, verbose)
    with _open(pid, name, cgroup, family) as obj:
        if duration == 0:
            return
        flows = FlowTable(obj.map("flows"))
        view = TcptopView(out, flows, sort, rows, not noclear, not nosummary)
        shown = 0

        def tick(ts: float, seconds: float, show: bool):
            nonlocal shown
            changes = flows.read()
            # The last call after Ctrl-C or -d ends a partial interval: shown too when it moved
            # bytes, so that the intervals add up to the run (not after COUNT intervals).
            if show or (changes and shown != count):
                view.interval(ts, seconds, changes)
                shown += 1
            return snapshot(ts, flows) if exporters else None

        loop = Loop(out, interval=interval, count=count, duration=duration, exporters=exporters)
        seconds = loop.run(tick, "Tracing TCP flows... Hit Ctrl-C to end.")
        missed = obj.lost_events()
        if out.mode == "json":
            out.record({"type": "summary", "duration_s": round(seconds, 3),
                        "flows": flows.flows, "rx_bytes": flows.rx_bytes,
                        "tx_bytes": flows.tx_bytes, "missed_flows": missed})
        out.lost("tcptop", missed, "flows", "the flow map was full")
