"""TCP state changes, one line each, with the time the socket spent in the state it left and
the process that owns the socket (also when the change happens in softirq).

sock:inet_sock_set_state through BTF, as bcc's tcpstates; the owner is remembered per socket
(bpf_programs/sockowners.h). Like bcc's tcpstates: -T, -t, -w, -L/-D, -4/-6.
"""
from __future__ import annotations

from netkit.cli.options import (CgroupOpt, ClockOpt, DportOpt, DurationOpt, Ipv4Opt, Ipv6Opt,
                                JsonOpt, LportOpt, NameOpt, NoColorOpt, PidOpt, TimestampOpt,
                                VerboseOpt, WideOpt, family_of, ports_of)
from netkit.cli.runs import run_events
from netkit.cli.tool import ManPage, open_output
from netkit.render.output import Column
from netkit.render.tcp import endpoints, state_name

SUMMARY = "TCP state changes with the time spent in each state and the owning process."

MAN = ManPage(
    description=(
        "tcpstates prints one line for every state change of a TCP socket (RFC 793's states as "
        "Linux names them), with the time the socket spent in the state it leaves. It shows how "
        "connections open and close: CLOSE -> SYN_SENT -> ESTABLISHED for a connect(), "
        "LISTEN -> SYN_RECV -> ESTABLISHED for a connection a listener takes, ESTABLISHED -> "
        "FIN_WAIT1 -> FIN_WAIT2 -> CLOSE on the side that closes first and ESTABLISHED -> "
        "CLOSE_WAIT -> LAST_ACK -> CLOSE on the other, and where one lingers.\n\n"
        "It uses the sock:inet_sock_set_state tracepoint (through BTF), as bcc's tcpstates "
        "does; no kprobe is needed. PID and COMM differ from bcc's: bcc names the task that "
        "was running when the change happened, which for a SYN-ACK, a FIN or a RST from the "
        "peer, or a timer, is whatever task the CPU was interrupted in (often the peer itself "
        "on the same host, or swapper). netkit names the socket's owner: the task that held the "
        "socket when it acted on it (connect, accept, close, shutdown, listen, send), remembered "
        "per socket until the socket is destroyed. A connection that a listener has completed "
        "but no process has accepted yet belongs to the listener's owner (its listen() or "
        "accept() caller, when either was seen). A socket no process was seen acting on since "
        "tracing began shows PID and COMM as -. Watching accept() and sends costs: every "
        "system call passes the raw sys_exit tracepoint while tcpstates runs (about 90 ns "
        "each where netkit was measured) and every send a map lookup.\n\n"
        "What neither version sees: the TIME_WAIT state, which Linux keeps in a separate "
        "lightweight socket (the full socket goes FIN_WAIT2 -> CLOSE), and request sockets "
        "(NEW_SYN_RECV, SYN cookies) before they become sockets. A state MS of 0 means the "
        "socket's previous change was not seen (it happened before tracing began). LPORT is "
        "0 at CLOSE -> SYN_SENT: connect() picks the port just after."),
    examples=[
        ("netkit tcpstates", "every state change until Ctrl-C"),
        ("netkit tcpstates -T -L 80,443", "changes of local ports 80 and 443, with the time"),
        ("netkit tcpstates -p 1234 -w", "one process, full IPv6 addresses and cgroups"),
        ("netkit tcpstates --json -d 10", "ten seconds as NDJSON"),
    ],
    output=(
        "Columns: TIME (HH:MM:SS, with -T), TIME(s) (seconds since tracing began, with -t), "
        "SKADDR (the socket's kernel address), PID and COMM (the owner), IP (4 or 6, with -w), "
        "LADDR, LPORT, RADDR, RPORT, OLDSTATE -> NEWSTATE, MS (milliseconds in OLDSTATE), "
        "CGROUP (the owner's cgroup v2 path, with -w).\n\n"
        "JSON: one object per change with type \"event\", ts (ISO 8601), skaddr, pid, comm "
        "(null when the owner is not known), laddr, lport, raddr, rport, old_state, new_state, "
        "state_ms and cgroup; at the end one object with type \"summary\", duration_s, events "
        "and lost_events (changes the ring buffer could not take; text output says them on "
        "stderr)."),
    see_also=["tcpstates(8) (bcc)", "netkit-tcplife(8)", "ss(8)", "tcp(7)"],
)


class StatesView:
    def __init__(self, out, clock: bool, timestamp: bool, wide: bool):
        from netkit.render.events import EventLines
        from netkit.render.sockets import Owners
        self.owners = Owners()
        self.wide = wide
        addr = 39 if wide else 15
        self.lines = EventLines(out, [
            Column("SKADDR", 16, "<", style="dim"), Column("PID", 7),
            Column("COMM", 15, "<", style="bold")] + ([Column("IP", 2)] if wide else []) + [
            Column("LADDR", addr, "<"), Column("LPORT", 5), Column("RADDR", addr, "<"),
            Column("RPORT", 5), Column("OLDSTATE", 11, "<"), Column("->", 2),
            Column("NEWSTATE", 11, "<", style="bold"),
            Column("MS", 9, fmt=lambda v: f"{v:.3f}")] +
            ([Column("CGROUP", 20, "<")] if wide else []), timestamp, clock)

    def event(self, e) -> None:
        owner, ends = self.owners.of_socket(e.owner), endpoints(e.tuple)
        old, new = state_name(e.oldstate), state_name(e.newstate)
        ms = e.state_ns / 1e6
        skaddr = f"{e.skaddr:x}"
        self.lines.event(
            {"type": "event", "skaddr": skaddr, "pid": owner.pid, "comm": owner.comm,
             "laddr": ends.laddr, "lport": ends.lport, "raddr": ends.raddr, "rport": ends.rport,
             "old_state": old, "new_state": new, "state_ms": round(ms, 3),
             "cgroup": owner.cgroup},
            [skaddr, *owner.cells] + ([ends.family] if self.wide else []) +
            [ends.laddr, ends.lport, ends.raddr, ends.rport, old, "->", new, ms] +
            ([owner.cgroup or "-"] if self.wide else []), e.ts_ns)


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
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
):
    from netkit.engine.bpfobject import BPFObject, Filters

    family = family_of(ipv4, ipv6)
    filters = Filters(pid, name, cgroup, dports=ports_of(dport, "-D"),
                      lports=ports_of(lport, "-L"))
    out = open_output(json, no_color, verbose)
    with BPFObject("tcpstates", filters, rodata={"filter_family": family}) as obj:
        if duration == 0:
            return
        view = StatesView(out, clock, timestamp, wide)
        seconds = run_events(out, obj, "events", "tcpstates_event", view.event, duration,
                             "Tracing TCP state changes... Hit Ctrl-C to end.")
        view.lines.summary("tcpstates", seconds, obj.lost_events())
