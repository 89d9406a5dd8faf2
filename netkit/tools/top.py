"""The network stack live on one screen: interfaces, TCP flows, processes (connects, their
latency and failures, sockets, bytes), retransmits and drops, listeners and their accept
queues; refreshed every SECONDS, with keys to focus, sort, filter and pause.
"""
from __future__ import annotations

import sys
from typing import Annotated

import typer

from netkit.cli.options import (CgroupOpt, DurationOpt, JsonOpt, NameOpt, NoColorOpt, PidOpt,
                                VerboseOpt, seconds)
from netkit.cli.tool import ManPage, open_output

SUMMARY = "The network stack live on one screen: interfaces, flows, processes, drops, listeners."

MAN = ManPage(
    description=(
        "netkit top shows, on one screen refreshed every second, what the network stack is "
        "doing and for whom, in five panels:\n\n"
        "1 Interfaces: for each network device of netkit's network namespace, bits and "
        "packets per second received and sent, errors and drops in the interval (the "
        "kernel's per-device counters, /proc/net/dev, through psutil).\n\n"
        "2 TCP flows: netkit tcptop's flows, as bit rates over the interval: for each process "
        "and connection, what its send and receive calls moved (sock:sock_send_length, "
        "sock:sock_recv_length; netkit-tcptop(8) says what they do not see). The panel keeps the "
        "50 busiest flows by each sort order (all of them while a filter is set): a connect "
        "storm that sends data makes thousands of flows a second.\n\n"
        "3 Processes: per process, completed connects per second, the failed ones in the "
        "interval, connect latency p50 and p99 (netkit soconnlat's in-kernel log2 histograms: "
        "the upper end of the bucket that holds the percentile), socket() calls, and bytes "
        "through its sockets of any family as bit rates (netkit sockstat's counters).\n\n"
        "4 Retransmits and drops: in the interval, the segments TCP retransmitted per flow "
        "(netkit tcpretrans's in-kernel counts: tcp:tcp_retransmit_skb, SYN-ACKs as kind "
        "synack), and the packets the kernel dropped in netkit's network namespace by drop "
        "reason and protocol (netkit skbdrop's counts: skb:kfree_skb; NOT_SPECIFIED frees are "
        "left out, see netkit-skbdrop(8)).\n\n"
        "5 Listeners: every TCP listening socket of netkit's network namespace with its "
        "process, accept queue (connections established and waiting for accept()), backlog, "
        "drops in the interval and in all (sk_drops: accept-queue overflows and the SYNs the "
        "listener dropped), from sock_diag as ss(8) reads them; the title line adds the "
        "system's ListenOverflows and ListenDrops of the interval.\n\n"
        "A panel whose tool this kernel cannot run stays on the screen, empty, its title line "
        "saying why (before 6.3 the kernel has no sock:sock_send_length: no TCP flows panel); "
        "the other panels run.\n\n"
        "Keys: q quits; 1 to 5 or Tab (Shift-Tab back) focus a panel, which then gets the "
        "screen's spare lines; s cycles the focused panel's sort column (largest first); / "
        "filters the panels that have processes (TCP flows, processes, listeners) by process "
        "name (a part of it, any case) or, for a number, by a local or remote port; p pauses "
        "the display (counting goes on); h or ? shows the keys. No mouse is needed. The "
        "screen redraws on resize, and the terminal is restored on q, Ctrl-C and SIGTERM.\n\n"
        "-p, -n and -c select processes in the kernel for the TCP flows, processes and "
        "retransmits, and by the owner for listeners; interfaces and drops belong to the "
        "network namespace, not to a process, and do not follow them.\n\n"
        "When standard output is not a terminal, or with --batch, netkit top prints one plain "
        "snapshot per interval, every panel as a table of at most -r rows (as top -b does); "
        "with --json, one NDJSON object per interval with every panel. -d ends the run, on the "
        "screen too.\n\n"
        "Cost: the counting is done in the kernel by the programs of tcptop, sockstat, "
        "soconnlat, tcpretrans and skbdrop; netkit top reads their maps once per interval "
        "(bench/top_cost.py measures its own CPU during a loopback connect storm: under 1% of "
        "a core at 10,000 connections/s, about 5% when every connection also moves data and "
        "so is a flow to read)."),
    examples=[
        ("netkit top", "the live screen, refreshed every second"),
        ("netkit top -i 2 -n nginx", "every 2 s, nginx processes only"),
        ("netkit top --batch -d 10 > top.txt", "ten plain snapshots"),
        ("netkit top --json -i 5 | jq .tcp", "the TCP flows every 5 s"),
    ],
    output=(
        "Screen and --batch: one table per panel under a title line (number, name, sort "
        "column, filter, note). Rates are per second over the interval, in SI steps (k, M, "
        "G): RX/TX bit/s, RX/TX pkt/s, CONN/s; P50(us) and P99(us) in microseconds.\n\n"
        "JSON: one object per interval with type \"top\", ts, interval_s and a list per "
        "panel, each row with every value unformatted: interfaces (dev, rx_bits_per_s, "
        "tx_bits_per_s, bits_per_s, rx_packets_per_s, tx_packets_per_s, packets_per_s, "
        "errors, drops), tcp (pid, comm, family, laddr, lport, raddr, rport, rx_bytes, "
        "tx_bytes, local, remote, rx_bits_per_s, tx_bits_per_s, bits_per_s), processes (pid, "
        "comm, connects, failed, sockets, rx_bytes, tx_bytes, connects_per_s, p50_us, p99_us "
        "(null without connects), rx_bits_per_s, tx_bits_per_s, bits_per_s), drops (kind: "
        "\"retransmit\", \"synack\" or \"drop\", name, count, per_s; retransmits also pid, "
        "comm, family, laddr, lport, raddr, rport; drops reason and protocol), "
        "listeners (pid, comm, family, address, port, local, queue, backlog, fill (queue / "
        "backlog), drops, drops_total). Rows are in each panel's default order, at most -r "
        "per panel."),
    see_also=["netkit-tcptop(8)", "netkit-sockstat(8)", "netkit-soconnlat(8)",
              "netkit-tcpretrans(8)", "netkit-skbdrop(8)", "top(1)",
              "ss(8)", "nstat(8)"],
)

RefreshOpt = Annotated[float, typer.Option(
    "-i", "--interval", metavar="SECONDS", click_type=seconds(0.1),
    help="Seconds between refreshes.")]
BatchOpt = Annotated[bool, typer.Option(
    "-b", "--batch", help="Print plain snapshots, one per interval, even on a terminal.")]
RowsOpt = Annotated[int, typer.Option(
    "-r", "--rows", metavar="ROWS", min=1, max=1_000_000,
    help="Rows per panel in --batch and --json output.")]


def command(
    interval: RefreshOpt = 1.0,
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    batch: BatchOpt = False,
    rows: RowsOpt = 10,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
):
    import contextlib

    from netkit.top import Top
    from netkit.top.sources import Selection

    out = open_output(json, no_color, verbose)
    live = not (json or batch) and sys.stdout.isatty() and sys.stdin.isatty()
    top = Top(Selection(pid, name, cgroup))
    with contextlib.ExitStack() as stack:
        top.open(stack)
        if duration == 0:
            return
        if live:
            from netkit.top.screen import Screen
            Screen(top, interval, duration).run()
            return
        snapshots(out, top, interval, rows, duration)


def snapshots(out, top, interval: float, rows: int, duration: float | None) -> None:
    from netkit.cli.loop import Loop
    from netkit.render.fields import clock

    def tick(ts: float, seconds: float, show: bool):
        if not show:
            return None
        top.refresh(seconds)
        if out.mode == "json":
            out.record({"type": "top", "interval_s": round(seconds, 3), **top.json(rows)})
        else:
            out.line(f"netkit top - {clock(ts)}, interval {seconds:.2f} s")
            top.text(out, rows)
            out.line()
        return None

    Loop(out, interval=interval, duration=duration).run(
        tick, "Tracing the network stack... Hit Ctrl-C to end.")
