"""TCP sessions as they close: one line each with the owning process, the addresses, the bytes
sent and received and how long the session lived.

sock:inet_sock_set_state through BTF (ESTABLISHED to CLOSE, bytes from the socket's own
counters), as bcc's tcplife; the owner is remembered per socket (bpf_programs/sockowners.h).
Like bcc's tcplife: -T, -t, -w, -s, -L, -D, -4/-6.
"""
from __future__ import annotations

from typing import Annotated

import typer

from netkit.cli.options import (CgroupOpt, ClockOpt, DportOpt, DurationOpt, Ipv4Opt, Ipv6Opt,
                                JsonOpt, LportOpt, NameOpt, NoColorOpt, PidOpt, TimestampOpt,
                                VerboseOpt, WideOpt, family_of, ports_of)
from netkit.cli.runs import export_source_of, run_events
from netkit.cli.tool import ManPage, open_output
from netkit.export import ExportHub, export_options
from netkit.render.output import Column
from netkit.render.tcp import endpoints

SUMMARY = "TCP sessions as they close: owner, addresses, bytes each way, duration."

MAN = ManPage(
    description=(
        "tcplife prints one line per TCP session when it closes: the process that owned the "
        "socket, the local and remote address and port, the bytes sent and received and how "
        "long the session lived. It shows who talks to whom, how much, and for how long, "
        "without capturing packets.\n\n"
        "A session is a connection that reached ESTABLISHED; it is timed from there to CLOSE "
        "(sock:inet_sock_set_state, through BTF). Connects that failed are not sessions "
        "(netkit tcpconnect --failed shows them), and sessions established before tracing "
        "began are not reported (their start was not seen). TX and RX are the payload bytes: "
        "the socket's own counters at close, bytes_acked (sent and acknowledged by the peer) "
        "and bytes_received, less the SYN and FIN sequence numbers those counters include; so "
        "data sent but never acknowledged (a connection reset mid-transfer) is not in TX.\n\n"
        "bcc's tcplife uses the same tracepoint where the kernel has it (kprobe tcp_set_state "
        "on older ones) and sees the same sessions. It names the process it cached at SYN_SENT "
        "or LAST_ACK, and otherwise whichever task was on the CPU at CLOSE, which for the side "
        "that closes first (its CLOSE comes when the peer's FIN arrives, in softirq) and for "
        "accepted sockets is usually another process. netkit names the socket's owner: the "
        "task that connected, accepted, or last acted on it (close, shutdown), remembered until "
        "the socket is destroyed; a connection closed before any process accepted it belongs "
        "to its listener's owner (the process seen in the listener's listen() or last "
        "accept(); PID and COMM are - before either). Accepts made without the accept "
        "syscalls (io_uring, in the kernel) leave the owner to the listener or the closing "
        "task. Watching accept() enables the raw sys_exit tracepoint, which every system call "
        "then passes through while tcplife runs (about 90 ns each where netkit was measured, "
        "as for any syscall tracepoint).\n\n"
        "With --prometheus, --textfile or --graphite it also exports the sessions' duration "
        "and bytes as histograms, every second."),
    examples=[
        ("netkit tcplife", "every session that closes, until Ctrl-C"),
        ("netkit tcplife -T -L 80,443", "sessions on local ports 80 and 443, with the time"),
        ("netkit tcplife -D 5432 -w", "sessions to PostgreSQL, full addresses and cgroups"),
        ("netkit tcplife -s > sessions.csv", "as CSV"),
        ("netkit tcplife --json -c system.slice/nginx.service", "one service, as NDJSON"),
    ],
    output=(
        "Columns: TIME (HH:MM:SS, with -T), TIME(s) (seconds since tracing began, with -t), "
        "PID, COMM, IP (4 or 6, with -w), LADDR, LPORT, RADDR, RPORT, TX_KB and RX_KB "
        "(payload KiB sent and received, rounded down), MS (session lifetime, ms), CGROUP (the "
        "owner's cgroup v2 path, with -w). With -s the same as comma-separated values, with "
        "IP and CGROUP.\n\n"
        "JSON: one object per session with type \"session\", ts (ISO 8601, at close), pid, "
        "comm (null when the owner is not known), laddr, lport, raddr, rport, tx_bytes, "
        "rx_bytes (bytes, not KiB), duration_ms and cgroup; at the end one object with type "
        "\"summary\", duration_s, events (sessions shown) and lost_events (sessions the ring "
        "buffer could not take; text output says them on stderr).\n\n"
        "Exported: netkit_tcplife_sessions_total, netkit_tcplife_session_duration_seconds, "
        "netkit_tcplife_session_tx_bytes and netkit_tcplife_session_rx_bytes (histograms)."),
    see_also=["tcplife(8) (bcc)", "netkit-tcpstates(8)", "netkit-tcpconnect(8)", "ss(8)"],
)

CsvOpt = Annotated[bool, typer.Option("-s", "--csv", help="Comma-separated values (bcc's -s).")]


def snapshot(ts: float, hists):
    """The run's sessions, durations and bytes, for the exporters."""
    from netkit.engine.hist import Log2Hist
    from netkit.metrics import Counter, Histogram, Snapshot
    duration = Log2Hist.from_value(hists.duration_ms)
    return Snapshot("tcplife", ts, counters=[
        Counter("tcplife_sessions", "TCP sessions that closed", duration.count)],
        histograms=[
            Histogram("tcplife_session_duration", "TCP session lifetime, ESTABLISHED to CLOSE",
                      tuple(duration.slots), hists.duration_ns_sum / 1e6, 1e-3),
            *(Histogram(f"tcplife_session_{way}", f"Payload bytes {what} per TCP session",
                        tuple(h.slots), h.sum, 1, unit="bytes")
              for way, what, h in (("tx", "sent", Log2Hist.from_value(hists.tx_bytes)),
                                   ("rx", "received", Log2Hist.from_value(hists.rx_bytes))))])


def _open(pid, name, cgroup, lports=(), dports=(), family=0, events=True):
    from netkit.engine.bpfobject import BPFObject, Filters
    return BPFObject("tcplife", Filters(pid, name, cgroup, dports=list(dports),
                                        lports=list(lports)),
                     rodata={"filter_family": family, "emit_events": events})


def life_sampler(obj):
    """ts -> the Snapshot of the run's sessions so far (one in-kernel record, never reset)."""
    hists = obj.map("hists")
    return lambda ts: snapshot(ts, hists.lookup(0))


# For `netkit export`: tcplife's probes without events, its histograms as snapshots.
export_source = export_source_of(lambda pid, name, cgroup: _open(pid, name, cgroup, events=False),
                                 life_sampler)


class LifeView:
    def __init__(self, out, clock: bool, timestamp: bool, wide: bool, csv: bool):
        from netkit.render.events import EventLines
        from netkit.render.sockets import Owners
        self.owners = Owners()
        self.extra = wide or csv
        addr = 39 if wide else 15
        self.lines = EventLines(out, [
            Column("PID", 7), Column("COMM", 15, "<", style="bold")] +
            ([Column("IP", 2)] if self.extra else []) + [
            Column("LADDR", addr, "<"), Column("LPORT", 5), Column("RADDR", addr, "<"),
            Column("RPORT", 5), Column("TX_KB", 6), Column("RX_KB", 6),
            Column("MS", 9, fmt=lambda v: f"{v:.2f}", style="bold")] +
            ([Column("CGROUP", 20, "<")] if self.extra else []), timestamp, clock, csv)

    def event(self, e) -> None:
        owner, ends = self.owners.of_socket(e.owner), endpoints(e.tuple)
        ms = e.duration_ns / 1e6
        self.lines.event(
            {"type": "session", "pid": owner.pid, "comm": owner.comm, "laddr": ends.laddr,
             "lport": ends.lport, "raddr": ends.raddr, "rport": ends.rport,
             "tx_bytes": e.tx_bytes, "rx_bytes": e.rx_bytes, "duration_ms": round(ms, 3),
             "cgroup": owner.cgroup},
            owner.cells + ([ends.family] if self.extra else []) +
            [ends.laddr, ends.lport, ends.raddr, ends.rport, e.tx_bytes // 1024,
             e.rx_bytes // 1024, ms] + ([owner.cgroup or "-"] if self.extra else []), e.ts_ns)


@export_options("tcplife")
def command(
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    lport: LportOpt = None,
    dport: DportOpt = None,
    ipv4: Ipv4Opt = False,
    ipv6: Ipv6Opt = False,
    clock: ClockOpt = False,
    timestamp: TimestampOpt = False,
    wide: WideOpt = False,
    csv: CsvOpt = False,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
    exporters: ExportHub = None,
):
    family = family_of(ipv4, ipv6)
    lports, dports = ports_of(lport, "-L"), ports_of(dport, "-D")
    out = open_output(json, no_color, verbose)
    with _open(pid, name, cgroup, lports, dports, family) as obj:
        if duration == 0:
            return
        view = LifeView(out, clock, timestamp, wide, csv)
        seconds = run_events(out, obj, "events", "tcplife_event", view.event, duration,
                             "Tracing TCP sessions... Hit Ctrl-C to end.", exporters,
                             life_sampler(obj))
        view.lines.summary("tcplife", seconds, obj.lost_events(), "sessions")
