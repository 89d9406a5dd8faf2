"""Passive TCP opens as processes accept them: one line per accept() with the accepting
process, the remote and local address and port, and (-B) the listener's accept queue.

The return of accept()/accept4() (tp_btf sys_exit), in the accepting task; the sockets are
found from the returned and the listening file descriptors. Like bcc's tcpaccept: -t, -P,
-4/-6.
"""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from netkit.cli.options import (CgroupOpt, DurationOpt, Ipv4Opt, Ipv6Opt, JsonOpt, NameOpt,
                                NoColorOpt, PidOpt, TimestampOpt, VerboseOpt, family_of, ports_of)
from netkit.cli.runs import run_events
from netkit.cli.tool import ManPage, open_output
from netkit.render.output import Column
from netkit.render.tcp import endpoints

SUMMARY = "Passive TCP opens as processes accept() them: who, from where, queue (tracepoints)."

MAN = ManPage(
    description=(
        "tcpaccept prints one line per TCP connection a process accepts: the process that "
        "called accept(2) or accept4(2), the remote address and port, the local address and "
        "port, and with -B the listener's accept queue right after this accept (how many "
        "completed connections still wait, and the queue's limit). It shows which processes "
        "take connections from where, and whether a listener falls behind.\n\n"
        "bcc's tcpaccept puts a kretprobe on inet_csk_accept. netkit needs no kprobe: it "
        "reads the return of the accept syscalls (the raw sys_exit tracepoint through BTF) in "
        "the accepting task and finds both sockets from the file descriptors, so PID and "
        "COMM are always the process that accepted. It does not use the "
        "sock:inet_sock_set_state tracepoint's SYN_RECV -> ESTABLISHED: that fires in softirq "
        "when the handshake completes, before any process has taken the connection, and names "
        "whatever task was running (bcc dropped its tracepoint path for that reason, bcc issue "
        "2304). The price: every system call passes the raw sys_exit tracepoint while "
        "tcpaccept runs (about 90 ns each where netkit was measured; a kprobe costs only "
        "accepts).\n\n"
        "Not seen: accepts made without the accept syscalls (io_uring's IORING_OP_ACCEPT, "
        "kernel users such as NFS or ksmbd), which bcc's kprobe saw, and 32-bit (compat) "
        "accept calls. Connections completed but never accepted are not accepts (netkit "
        "tcpstates shows their handshakes). Filters are applied in the kernel: -p/-n/-c on "
        "the accepting task, -P on the local port, -4/-6 on the family; an IPv4 connection "
        "accepted on an IPv6 socket (IPv4-mapped addresses) is shown as IPv4."),
    examples=[
        ("netkit tcpaccept", "every accept until Ctrl-C"),
        ("netkit tcpaccept -t -B -P 80,443", "accepts on ports 80 and 443, with the queue"),
        ("netkit tcpaccept -n nginx --json", "one command name, as NDJSON"),
    ],
    output=(
        "Columns: TIME(s) (seconds since tracing began, with -t), PID, COMM, IP (4 or 6), "
        "RADDR, RPORT, LADDR, LPORT, BL (with -B: connections left in the listener's accept "
        "queue / its limit).\n\n"
        "JSON: one object per accept with type \"event\", ts (ISO 8601), pid, comm, family "
        "(\"IPv4\" or \"IPv6\"), raddr, rport, laddr, lport, backlog and backlog_max (0 when "
        "the listening fd was closed meanwhile) and cgroup (the accepting task's cgroup v2 "
        "path); at the end one object with type \"summary\", duration_s, events (accepts "
        "shown) and lost_events (accepts the ring buffer could not take; text output says them on "
        "stderr)."),
    see_also=["tcpaccept(8) (bcc)", "netkit-tcpconnect(8)", "netkit-tcpstates(8)", "accept(2)",
              "listen(2)"],
)

PortOpt = Annotated[Optional[list[str]], typer.Option(
    "-P", "--port", metavar="PORT[,PORT]", show_default=False,
    help="Only accepts on these local ports: a list, or the option repeated (bcc's -P).")]
BacklogOpt = Annotated[bool, typer.Option(
    "-B", "--backlog", help="Add BL: the listener's accept queue after this accept / its "
                            "limit.")]


class AcceptView:
    def __init__(self, out, timestamp: bool, backlog: bool):
        from netkit.render.events import EventLines
        from netkit.render.sockets import Owners
        self.owners = Owners()
        self.backlog = backlog
        self.lines = EventLines(out, [
            Column("PID", 7), Column("COMM", 15, "<", style="bold"), Column("IP", 2),
            Column("RADDR", 16, "<"), Column("RPORT", 5), Column("LADDR", 16, "<"),
            Column("LPORT", 5, style="bold")] + ([Column("BL", 9, "<")] if backlog else []),
            timestamp)

    def event(self, e) -> None:
        from netkit.render.fields import ip_version
        owner, ends = self.owners.of_socket(e.owner), endpoints(e.tuple)
        self.lines.event(
            {"type": "event", "pid": owner.pid, "comm": owner.comm,
             "family": ip_version(ends.family), "raddr": ends.raddr, "rport": ends.rport,
             "laddr": ends.laddr, "lport": ends.lport, "backlog": e.backlog,
             "backlog_max": e.backlog_max, "cgroup": owner.cgroup},
            [*owner.cells, ends.family, ends.raddr, ends.rport, ends.laddr, ends.lport] +
            ([f"{e.backlog}/{e.backlog_max}"] if self.backlog else []), e.ts_ns)


def command(
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    port: PortOpt = None,
    ipv4: Ipv4Opt = False,
    ipv6: Ipv6Opt = False,
    timestamp: TimestampOpt = False,
    backlog: BacklogOpt = False,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
):
    from netkit.engine.bpfobject import BPFObject, Filters

    family = family_of(ipv4, ipv6)
    filters = Filters(pid, name, cgroup, lports=ports_of(port, "-P"))
    out = open_output(json, no_color, verbose)
    with BPFObject("tcpaccept", filters, rodata={"filter_family": family}) as obj:
        if duration == 0:
            return
        view = AcceptView(out, timestamp, backlog)
        seconds = run_events(out, obj, "events", "tcpaccept_event", view.event, duration,
                             "Tracing TCP accepts... Hit Ctrl-C to end.")
        view.lines.summary("tcpaccept", seconds, obj.lost_events(), "accepts")
