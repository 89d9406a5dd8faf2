"""One line per TCP segment the kernel dropped, with its addresses, flags, the socket's state and
the drop reason, as bcc's tcpdrop (tracepoint skb:kfree_skb; skbdrop's BPF object).
"""
from __future__ import annotations

from typing import Annotated

import typer

from netkit.cli.options import (AllNetnsOpt, CgroupOpt, DurationOpt, Ipv4Opt, Ipv6Opt, JsonOpt,
                                NameOpt, NetnsOpt, NoColorOpt, PidOpt, TimestampOpt, VerboseOpt,
                                family_of)
from netkit.cli.tool import ManPage, open_output
from netkit.render.output import Column

SUMMARY = "One line per dropped TCP segment: addresses, flags, state, drop reason (tracepoint)."

MAN = ManPage(
    description=(
        "tcpdrop prints one line for each TCP segment the kernel drops: its source and "
        "destination address and port, the TCP state of the socket it belonged to (- when it "
        "reached none), its TCP flags, and the reason the kernel gives (NO_SOCKET, "
        "NETFILTER_DROP, TCP_CSUM, SOCKET_BACKLOG, TCP_OLD_DATA, ...; named from the running "
        "kernel's BTF, as in netkit skbdrop, which counts the drops of every protocol). With "
        "-s the kernel stack of each drop follows its line. Normal frees are not drops: "
        "packets the stack is done with go through skb:consume_skb, and frees with the reason "
        "NOT_SPECIFIED are left out (see netkit-skbdrop(8)).\n\n"
        "The PID and COMM are those of the socket the segment belonged to, its owner as netkit "
        "saw it act on the socket (connect, listen, accept, send; 0 and - when it has not "
        "since netkit started), and, for a segment that reached no socket, the task the "
        "kernel ran the drop in: the sender on loopback and veth (or ksoftirqd, when the "
        "kernel hands it the work: netkit-skbdrop(8)), any task (often 0) for packets from a "
        "real device. -p, -n and -c select on that.\n\n"
        "Against bcc's tcpdrop: bcc puts a kprobe on tcp_drop(), a function kernels since 5.19 "
        "no longer have; its later versions trace skb:kfree_skb and keep the TCP packets, as "
        "netkit does, but print the task the drop happened on (bcc: often 0 or an unrelated "
        "process, in softirq) and no reason. netkit adds the reason, the owner of the socket, "
        "and every namespace with --all-netns. What is not seen: segments dropped before the "
        "kernel parsed an IP header (a device's own drops), and a TCP segment inside an IPv6 "
        "packet with extension headers (its first next-header is not TCP). The drop reason "
        "needs Linux 5.17."),
    examples=[
        ("netkit tcpdrop", "every dropped TCP segment in netkit's namespace"),
        ("netkit tcpdrop -s", "with the kernel stack of each"),
        ("netkit tcpdrop --all-netns --json", "every namespace, as NDJSON"),
    ],
    output=(
        "Columns: TIME (HH:MM:SS), PID, COMM, IP (4 or 6), SADDR:SPORT, >, DADDR:DPORT, STATE, "
        "(FLAGS) (FIN|SYN|RST|PSH|ACK|URG|ECE|CWR), REASON, and NETNS with --all-netns; -t "
        "adds TIME(s) first. With -s the stack follows each line, one frame per line, "
        "innermost first.\n\n"
        "JSON: per segment an object with type \"drop\", ts, reason, protocol (\"TCP\"), "
        "family (\"IPv4\" or \"IPv6\"), saddr, sport, daddr, dport, pid, comm, state, flags (a "
        "list of names), netns, and stack (a list of symbols) with -s; at the end type "
        "\"summary\" with duration_s, events and lost_events."),
    see_also=["netkit-skbdrop(8)", "netkit-tcpretrans(8)", "tcpdrop(8)"],
)

StackOpt = Annotated[bool, typer.Option("-s", "--stack", help="Print the kernel stack of "
                                                               "each drop.")]

COLUMNS = [Column("TIME", 8, "<", style="dim"), Column("PID", 7),
           Column("COMM", 15, "<", style="bold"), Column("IP", 2),
           Column("SADDR:SPORT", 26, ">"), Column(">", 1),
           Column("DADDR:DPORT", 26, "<", style="cyan"), Column("STATE", 11, "<"),
           Column("(FLAGS)", 13, "<"), Column("REASON", 20, "<")]


class TcpdropView:
    def __init__(self, out, reasons, stacks, all_netns: bool, timestamps: bool):
        from netkit.render.events import EventLines
        self.out, self.reasons, self.stacks = out, reasons, stacks
        self.all_netns = all_netns
        columns = COLUMNS + ([Column("NETNS", 10)] if all_netns else [])
        self.lines = EventLines(out, columns, timestamps)

    def event(self, e) -> None:
        from netkit.render.fields import clock, comm, ip_address, ip_version, with_port
        from netkit.render.packets import tcp_flags
        from netkit.render.tcp import state_name
        saddr, daddr = ip_address(e.family, e.saddr), ip_address(e.family, e.daddr)
        reason, state, flags = self.reasons.name(e.reason), state_name(e.state), tcp_flags(
            e.tcp_flags)
        stack = self.stacks(e.stack_id) if self.stacks else None
        record = {"type": "drop", "reason": reason, "protocol": "TCP",
                  "family": ip_version(e.family), "saddr": saddr, "sport": e.sport,
                  "daddr": daddr, "dport": e.dport, "pid": e.owner.pid,
                  "comm": comm(e.owner.comm), "state": state,
                  "flags": flags.split("|") if flags != "-" else [], "netns": e.netns,
                  **({"stack": stack} if stack is not None else {})}
        cells = [clock(self.lines.clock.wall(e.ts_ns)), e.owner.pid, comm(e.owner.comm) or "-",
                 e.family, with_port(saddr, e.sport), ">", with_port(daddr, e.dport), state,
                 f"({flags})", reason] + ([e.netns] if self.all_netns else [])
        self.lines.event(record, cells, e.ts_ns)
        if stack is not None and self.out.mode != "json":
            for frame in stack:
                self.out.line(f"\t{frame}")
            self.out.line()


def command(
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    stack: StackOpt = False,
    ipv4: Ipv4Opt = False,
    ipv6: Ipv6Opt = False,
    netns: NetnsOpt = None,
    all_netns: AllNetnsOpt = False,
    timestamp: TimestampOpt = False,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
):
    from netkit.cli.options import netns_of
    from netkit.cli.runs import run_events
    from netkit.engine.dropreasons import kernel_drop_reasons
    from netkit.engine.kallsyms import KernelSymbols, StackNames
    from netkit.render.histsets import traced_namespaces
    from netkit.tools.skbdrop import open_drops

    family = family_of(ipv4, ipv6)
    traced = netns_of(netns, all_netns)
    out = open_output(json, no_color, verbose)
    reasons = kernel_drop_reasons()
    symbols = KernelSymbols() if stack else None
    with open_drops(pid, name, cgroup, traced, stack, tcp_family=family) as obj:
        if duration == 0:
            return
        stacks = StackNames(obj.map("stacks"), symbols) if stack else None
        view = TcpdropView(out, reasons, stacks, traced is None, timestamp)
        seconds = run_events(out, obj, "events", "drop_event", view.event, duration,
                             f"Tracing TCP drops in {traced_namespaces(traced)}... "
                             "Hit Ctrl-C to end.")
        view.lines.summary("tcpdrop", seconds, obj.lost_events())
