"""Active TCP opens (connect()), one line each with the process, the addresses and the local
port it got; with --failed, how each ended; with -C, counts per source, destination and port.

sock:inet_sock_set_state through BTF (CLOSE -> SYN_SENT and the end of the handshake), with the
connect() syscall's return and SYN retransmissions to send each line once the local port is
known. Like bcc's tcpconnect: -t, -U, -u, -P, -L, -4/-6; bcc's count mode -c is -C here.
"""
from __future__ import annotations

from typing import Annotated, NamedTuple, Optional

import typer

from netkit.cli.options import (CgroupOpt, CountArg, CountModeOpt, DurationOpt, Ipv4Opt,
                                Ipv6Opt, JsonOpt, LportColumnOpt, NameOpt, NoColorOpt, PidOpt,
                                TimestampOpt, VerboseOpt, family_of, ports_of, seconds)
from netkit.cli.runs import export_source_of, run_counting, run_events, sampler
from netkit.cli.tool import ManPage, open_output
from netkit.engine.errors import UsageError
from netkit.export import ExportHub, export_options
from netkit.render.output import Column
from netkit.render.tcp import endpoints

SUMMARY = "Active TCP connects: process, addresses, local port; results and counts (tracepoints)."

MAN = ManPage(
    description=(
        "tcpconnect prints one line per active TCP open: a connect(2) on a TCP socket (or a "
        "sendmsg with TCP Fast Open), with the process that made it, its source and "
        "destination address, the destination port and, with -L, the local port the kernel "
        "chose. It shows which processes open connections to where, including those that "
        "fail or hang.\n\n"
        "bcc's tcpconnect puts kprobes on tcp_v4_connect/tcp_v6_connect and prints when they "
        "return, after the SYN is sent. netkit needs no kprobe: the sock:inet_sock_set_state "
        "tracepoint fires when the socket enters SYN_SENT, in the connecting task, but before "
        "connect() picks the local port; so the line is printed at the first moment the port "
        "is known: when a non-blocking connect() returns (at once), when the handshake ends "
        "(a blocking connect: after one round trip), or when the SYN is retransmitted (a "
        "blocking connect that gets no answer: after the initial retransmission timeout, "
        "about 1 s). LPORT is therefore always the real port. A blocking connect interrupted "
        "by a signal is printed when its handshake ends. Watching connect() return enables "
        "the raw sys_exit tracepoint: every system call passes it while tcpconnect runs "
        "(about 90 ns each where netkit was measured).\n\n"
        "With --failed each line waits for the end of the handshake and says how it ended in "
        "RESULT: OK, or the reason it failed: ECONNREFUSED (a RST answered the SYN), ETIMEDOUT "
        "(the SYN retries ran out, see tcp_syn_retries), EHOSTUNREACH or ENETUNREACH (an ICMP "
        "error), or CLOSED (the socket was closed while its SYN was unanswered, as a "
        "client-side timeout does, or connect() found no free local port).\n\n"
        "-C (bcc's -c; -c is the cgroup filter in netkit) counts connects per source address, "
        "destination address and port instead of printing them, for the whole run or every "
        "INTERVAL; a connect is counted when its handshake ends (with --failed, per result "
        "too). The kernel counts; at most 65536 distinct keys are kept (more are reported as "
        "lost).\n\n"
        "Filters are applied in the kernel when the connect starts: -p/-n/-c and -u on the "
        "connecting task, -P on the destination port, -4/-6 on the family. An IPv6 socket "
        "connecting to an IPv4-mapped address (::ffff:a.b.c.d) is an IPv4 connect: IP 4 and "
        "IPv4 addresses. Not seen: a connect that fails before the SYN (no route: "
        "ENETUNREACH from connect() itself); bcc's -d (DNS names of destinations), which has "
        "no tracepoint. With --prometheus, --textfile or --graphite it exports the connects by "
        "destination port and result, every second (or INTERVAL)."),
    examples=[
        ("netkit tcpconnect", "every active open until Ctrl-C"),
        ("netkit tcpconnect -t -L -U", "with time, local port and UID"),
        ("netkit tcpconnect --failed -P 80,443", "outcomes of connects to ports 80 and 443"),
        ("netkit tcpconnect -C 10", "counts per destination every 10 s"),
        ("netkit tcpconnect --json -c system.slice/nginx.service", "one service, as NDJSON"),
    ],
    output=(
        "Columns: TIME(s) (seconds since tracing began, with -t), UID (with -U), PID, COMM, IP "
        "(4 or 6), SADDR, LPORT (with -L), DADDR, DPORT, RESULT (with --failed).\n\n"
        "Count mode (-C): SADDR, DADDR, DPORT, RESULT (with --failed), CONNECTS, per INTERVAL "
        "(headed by the time) or for the whole run.\n\n"
        "JSON: one object per connect with type \"event\", ts (ISO 8601), pid, comm, uid, "
        "family (\"IPv4\" or \"IPv6\"), saddr, lport, daddr, dport, cgroup (the connecting "
        "task's cgroup v2 path) and, with --failed, result. Count mode: objects with type "
        "\"count\", scope (\"interval\" or \"run\"), interval_s or duration_s, family, saddr, "
        "daddr, dport, result (with --failed) and connects. At the end one object with type "
        "\"summary\", duration_s, events (connects shown), with --failed results (connects "
        "per result), and lost_events (connects the ring buffer could not take); in count "
        "mode connects (counted) and lost_events (connects the count map could not take). "
        "Text output says lost ones on stderr.\n\n"
        "Exported: netkit_tcpconnect_connects_total with labels dport and result."),
    see_also=["tcpconnect(8) (bcc)", "netkit-tcpconnlat(8)", "netkit-soconnlat(8)",
              "netkit-tcpaccept(8)", "connect(2)"],
)

IntervalArg = Annotated[Optional[float], typer.Argument(
    metavar="[INTERVAL]", click_type=seconds(0.01), show_default=False,
    help="With -C: seconds between counts (without it, counts at the end).")]
PortOpt = Annotated[Optional[list[str]], typer.Option(
    "-P", "--port", metavar="PORT[,PORT]", show_default=False,
    help="Only connects to these destination ports: a list, or the option repeated (bcc's -P).")]
UidColumnOpt = Annotated[bool, typer.Option("-U", "--print-uid", help="Add a UID column.")]
UidOpt = Annotated[Optional[int], typer.Option(
    "-u", "--uid", metavar="UID", min=0, max=2**32 - 2, show_default=False,
    help="Only connects made by this user ID.")]
FailedOpt = Annotated[bool, typer.Option(
    "--failed", help="Wait for each handshake's end and add RESULT: OK or why it failed "
                     "(ECONNREFUSED, ETIMEDOUT, ...).")]


class Key(NamedTuple):
    family: int
    saddr: str
    daddr: str
    dport: int
    result: int


def result_name(code: int, closed: int) -> str:
    from netkit.render.fields import errno_name
    return "OK" if code == 0 else "CLOSED" if code == closed else errno_name(code)


def connect_counts(counts_map):
    """The kernel's counts (they only grow) read per interval."""
    from netkit.engine.counters import CumulativeMap
    from netkit.render.fields import ip_address

    def decode(k, value):
        return (Key(k.family, ip_address(k.family, k.laddr), ip_address(k.family, k.raddr),
                    k.rport, k.result), value.value)
    return CumulativeMap(counts_map, decode)


def snapshot(ts: float, totals: dict[Key, int], closed: int):
    """Connects by destination port and result since the start, for the exporters."""
    from netkit.metrics import Counter, Snapshot
    merged: dict[tuple[int, str], int] = {}
    for key, n in totals.items():
        label = (key.dport, result_name(key.result, closed))
        merged[label] = merged.get(label, 0) + n
    return Snapshot("tcpconnect", ts, counters=[
        Counter("tcpconnect_connects", "Active TCP opens whose handshake ended, by destination "
                "port and result", n, {"dport": str(dport), "result": result})
        for (dport, result), n in sorted(merged.items())])


def _open(pid, name, cgroup, dports=(), family=0, uid=None, events=True, failed=False):
    from netkit.engine.bpfobject import BPFObject, Filters
    rodata = {"filter_family": family, "emit_events": events, "wait_result": failed,
              "filter_by_uid": uid is not None, "filter_uid": uid or 0}
    return BPFObject("tcpconnect", Filters(pid, name, cgroup, dports=list(dports)),
                     rodata=rodata)


def connect_sampler(obj):
    """ts -> the Snapshot of the connects counted so far."""
    closed = obj.enum("tcpconnect_result")["closed"]
    return sampler(connect_counts(obj.map("counts")),
                   lambda ts, totals: snapshot(ts, totals, closed))


# For `netkit export`: tcpconnect's probes without events, its counts as snapshots.
export_source = export_source_of(lambda pid, name, cgroup: _open(pid, name, cgroup, events=False),
                                 connect_sampler)


class ConnectView:
    def __init__(self, out, closed: int, timestamp: bool, uid: bool, lport: bool, failed: bool):
        from netkit.render.events import EventLines
        from netkit.render.keyed import CountTable
        from netkit.render.sockets import Owners
        self.owners = Owners()
        self.closed, self.uid, self.lport, self.failed = closed, uid, lport, failed
        self.lines = EventLines(out, (
            ([Column("UID", 6)] if uid else []) +
            [Column("PID", 7), Column("COMM", 15, "<", style="bold"), Column("IP", 2),
             Column("SADDR", 16, "<")] + ([Column("LPORT", 6)] if lport else []) +
            [Column("DADDR", 16, "<"), Column("DPORT", 5, style="bold")] +
            ([Column("RESULT", 12, "<")] if failed else [])), timestamp)
        self.table = CountTable(out, "count", [
            Column("SADDR", 16, "<"), Column("DADDR", 16, "<"), Column("DPORT", 5)] +
            ([Column("RESULT", 12, "<")] if failed else []) + [Column("CONNECTS", 8)],
            "(no connects)")

    def event(self, e) -> None:
        from netkit.render.fields import ip_version
        owner, ends = self.owners.of_socket(e.owner), endpoints(e.tuple)
        result = result_name(e.result, self.closed)
        record = {"type": "event", "pid": owner.pid, "comm": owner.comm, "uid": owner.uid,
                  "family": ip_version(ends.family), "saddr": ends.laddr, "lport": ends.lport,
                  "daddr": ends.raddr, "dport": ends.rport, "cgroup": owner.cgroup}
        if self.failed:
            record["result"] = result
        self.lines.event(record, ([owner.uid] if self.uid else []) +
                         [*owner.cells, ends.family, ends.laddr] +
                         ([ends.lport] if self.lport else []) + [ends.raddr, ends.rport] +
                         ([result] if self.failed else []), e.ts_ns)

    def counts(self, counts: dict[Key, int], scope: str, seconds: float, title: str) -> None:
        """Count mode: connects per source, destination and port (and result with --failed),
        most first."""
        from netkit.render.fields import ip_version
        merged: dict[tuple, int] = {}
        for key, n in counts.items():
            row = (key.family, key.saddr, key.daddr, key.dport) + \
                ((result_name(key.result, self.closed),) if self.failed else ())
            merged[row] = merged.get(row, 0) + n
        rows = []
        for row, n in sorted(merged.items(), key=lambda kv: (-kv[1], kv[0])):
            fields = {"family": ip_version(row[0]), "saddr": row[1], "daddr": row[2],
                      "dport": row[3], **({"result": row[4]} if self.failed else {}),
                      "connects": n}
            rows.append((list(row[1:]) + [n], fields))
        self.table.show(rows, scope, seconds, title)


@export_options("tcpconnect")
def command(
    interval: IntervalArg = None,
    count: CountArg = None,
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    uid: UidOpt = None,
    port: PortOpt = None,
    ipv4: Ipv4Opt = False,
    ipv6: Ipv6Opt = False,
    timestamp: TimestampOpt = False,
    print_uid: UidColumnOpt = False,
    lport: LportColumnOpt = False,
    failed: FailedOpt = False,
    count_mode: CountModeOpt = False,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
    exporters: ExportHub = None,
):
    family = family_of(ipv4, ipv6)
    dports = ports_of(port, "-P")
    if interval is not None and not count_mode:
        raise UsageError("INTERVAL and COUNT are for count mode (-C)")
    out = open_output(json, no_color, verbose)
    with _open(pid, name, cgroup, dports, family, uid, not count_mode, failed) as obj:
        if duration == 0:
            return
        closed = obj.enum("tcpconnect_result")["closed"]
        view = ConnectView(out, closed, timestamp, print_uid, lport, failed)
        banner = "Tracing TCP connects... Hit Ctrl-C to end."
        if not count_mode:
            seconds = run_events(out, obj, "events", "tcpconnect_event", view.event, duration,
                                 banner, exporters, connect_sampler(obj))
            view.lines.summary("tcpconnect", seconds, obj.lost_events(), "connects")
            return
        run_counting(out, connect_counts(obj.map("counts")), view.counts,
                     snapshot=lambda ts, totals: snapshot(ts, totals, closed), banner=banner,
                     run_title="Connects over {seconds:.1f} s:", interval=interval, count=count,
                     duration=duration, exporters=exporters,
                     summary=lambda totals: {"connects": sum(totals.values()),
                                             "lost_events": obj.lost_events()})
        out.lost("tcpconnect", obj.lost_events(), "connects", "the count map was full")
