"""TCP retransmissions, one line each as bcc's tcpretrans prints them or counted per flow (-C),
named for the socket's owner; -l adds the kernel's tail-loss-probe counters.
Tracepoints tcp:tcp_retransmit_skb and tcp:tcp_retransmit_synack.
"""
from __future__ import annotations

from typing import Annotated, NamedTuple

import typer

from netkit.cli.options import (CgroupOpt, CountArg, CountModeOpt, DportOpt, DurationOpt,
                                IntervalArg, Ipv4Opt, Ipv6Opt, JsonOpt, LportOpt, NameOpt,
                                NoColorOpt, PidOpt, VerboseOpt, family_of, ports_of)
from netkit.cli.tool import ManPage, open_output
from netkit.engine.errors import UsageError
from netkit.export import ExportHub, export_options
from netkit.render.output import Column

SUMMARY = "TCP retransmissions with the socket's owner, or counted per flow (tracepoints)."

# /proc/net/netstat's tail loss probe counters (nstat's names) and their JSON keys.
TLP_COUNTERS = {"TcpExtTCPLossProbes": "loss_probes",
                "TcpExtTCPLossProbeRecovery": "loss_probe_recoveries"}

MAN = ManPage(
    description=(
        "tcpretrans prints one line for each TCP segment the kernel sends again: after a "
        "retransmission timeout, in fast retransmit or SACK/RACK recovery, a SYN of a connect "
        "that got no answer (state SYN_SENT), a FIN again; and each SYN-ACK a listener sends "
        "again because the client's ACK did not come (type S>, state SYN_RECV). With -C it "
        "counts them per flow instead, in the kernel, and shows the counts every INTERVAL and "
        "at the end. Every network namespace is traced.\n\n"
        "The PID and COMM are the socket's owner: the process that connect()ed, accept()ed, "
        "listen()ed on or last sent on the socket while netkit ran. Retransmissions are made "
        "in softirq or by a timer, on whatever task the CPU happened to run; bcc's tcpretrans "
        "prints that task, and its man page says the PID is \"usually 0\". A socket nobody "
        "acted on since netkit started (an idle connection older than the trace) shows PID 0 "
        "until its owner sends on it. -p, -n and -c select by that owner; with one of them "
        "set, sockets whose owner is not known are left out.\n\n"
        "A retransmitted buffer may hold several segments (TSO/GSO); SEGS says how many, and "
        "the sum of SEGS is what the kernel counts in TcpRetransSegs (netstat -s: "
        "\"segments retransmitted\"). Since Linux 6.12 the tracepoint also fires for a "
        "retransmission that failed. One that TCP gave up before sending (the original still "
        "in a host queue, no window, no memory, no route) is counted nowhere by the kernel and "
        "not by netkit. One that TCP handed down and IP or the device refused (a firewall "
        "drop in OUTPUT, a full device queue) never reached the wire, but the kernel counts it "
        "in TcpRetransSegs and in TCPRetransFail: netkit prints it like any other and adds its "
        "segments to the summary's failed. Which of the two a failure was is read from the "
        "socket's own retransmission total (it moved: the kernel counted it), not from the "
        "error, which IP can share with TCP; for a socket's first event only the error "
        "tells.\n\n"
        "Against bcc's tcpretrans (kprobe tcp_retransmit_skb, or this tracepoint where it "
        "exists; kprobe tcp_send_loss_probe for -l): the same retransmissions, plus SYN-ACKs, "
        "which bcc's kprobe on tcp_retransmit_skb never sees (they go through "
        "tcp_rtx_synack). Tail loss probes (TLP) have no tracepoint: a probe that sends new "
        "data is not a retransmission and is not seen at all; one that sends the last segment "
        "again passes through tcp_retransmit_skb and is printed like any other retransmission, "
        "without being told apart. -l instead shows per interval (INTERVAL, or every second) "
        "how the kernel's own counters moved: TCPLossProbes (probes sent) and "
        "TCPLossProbeRecovery (losses a probe repaired), for netkit's network namespace, with "
        "no flow or process (bcc's -l printed one L> line per probe with its flow)."),
    examples=[
        ("netkit tcpretrans", "every retransmission until Ctrl-C"),
        ("netkit tcpretrans -s -D 443", "to port 443, with sequence numbers"),
        ("netkit tcpretrans -C 10", "counts per flow every ten seconds"),
        ("netkit tcpretrans -l -n nginx --json", "one command's sockets and TLP counters, NDJSON"),
    ],
    output=(
        "Columns: TIME (HH:MM:SS), PID and COMM (the socket's owner; 0 and - when not known), "
        "IP (4 or 6), LADDR:LPORT, T> (R> a segment retransmitted, S> a SYN-ACK), "
        "RADDR:RPORT, STATE (the socket's TCP state), SEGS, and SEQ (the first sequence "
        "number sent again; for a SYN-ACK its initial sequence number) with -s. -l adds lines "
        "with L> and the TLP counters' change.\n\n"
        "-C: per INTERVAL (with INTERVAL) and for the run, PID, COMM, LADDR:LPORT, RADDR:RPORT, "
        "KIND, RETRANSMITS and SEGS per flow.\n\n"
        "JSON: per retransmission an object with type \"retransmit\", ts, pid, comm, family "
        "(\"IPv4\" or \"IPv6\"), laddr, lport, raddr, rport, state, kind (\"retrans\" or "
        "\"synack\"), segs, and seq with -s; with -C one object per flow with type \"flow\", "
        "scope (\"interval\" or \"run\"), interval_s or duration_s, the same flow and owner "
        "keys, kind, retransmits and segs; with -l per interval type \"loss_probes\", "
        "interval_s, loss_probes and loss_probe_recoveries. At the end type \"summary\" with "
        "duration_s, retransmits, segs, failed (segments of those retransmissions that IP or "
        "the device refused: TCPRetransFail), "
        "loss_probes and loss_probe_recoveries (with -l) and lost_events.\n\n"
        "Exporters (-C): netkit_tcpretrans_segments_total by kind."),
    see_also=["tcpretrans(8)", "ss(8)", "nstat(8)", "netkit-tcpdrop(8)"],
)

SeqOpt = Annotated[bool, typer.Option("-s", "--sequence", help="Show the sequence number "
                                                                "sent again (bcc's -s).")]
LossProbesOpt = Annotated[bool, typer.Option(
    "-l", "--lossprobe", help="Show the kernel's tail-loss-probe counters per interval "
                              "(TCPLossProbes, TCPLossProbeRecovery).")]

KINDS = {"segment": "retrans", "synack": "synack"}     # enum retrans_kind
ARROWS = {"retrans": "R>", "synack": "S>"}


class Flow(NamedTuple):
    pid: int
    comm: str
    family: int
    laddr: str
    lport: int
    raddr: str
    rport: int
    kind: str

    def fields(self) -> dict:
        from netkit.render.fields import ip_version
        return {"pid": self.pid, "comm": self.comm, "family": ip_version(self.family),
                "laddr": self.laddr, "lport": self.lport, "raddr": self.raddr,
                "rport": self.rport, "kind": self.kind}


def flow_text(f) -> tuple[str, str]:
    """LADDR:LPORT and RADDR:RPORT of a struct retrans_flow."""
    from netkit.render.fields import ip_address, with_port
    return (with_port(ip_address(f.family, f.laddr), f.lport),
            with_port(ip_address(f.family, f.raddr), f.rport))


def flow_counts(obj, kinds: dict[int, str]):
    from netkit.engine.counters import Counts, CumulativeMap
    from netkit.render.fields import comm, ip_address

    def decode(k, v):
        f = k.flow
        return (Flow(k.pid, comm(v.comm) or "-", f.family, ip_address(f.family, f.laddr),
                     f.lport, ip_address(f.family, f.raddr), f.rport, kinds[k.kind]),
                Counts.of(v, ("retransmits", "segs")))
    return CumulativeMap(obj.map("counts"), decode)


def kinds_of(obj) -> dict[int, str]:
    return {value: KINDS[name] for name, value in obj.enum("retrans_kind").items()
            if name in KINDS}


def failed(obj) -> int:
    """Segments of retransmissions the layers below TCP refused, as TCPRetransFail counts."""
    per_cpu = obj.map("failed").lookup(1)
    return sum(v.value for v in per_cpu) if per_cpu else 0


def _open(pid=None, name=None, cgroup=None, family=0, lports=(), dports=(), count=False):
    from netkit.engine.bpfobject import BPFObject, Filters
    return BPFObject("tcpretrans", Filters(pid, name, cgroup, lports=list(lports),
                                           dports=list(dports)),
                     rodata={"count_flows": count, "filter_ip": family},
                     arg_types={"tcp_retransmit_skb": (2, "int")})     # err: after 6.1


def snapshot(ts: float, totals: dict):
    from netkit.metrics import Counter, Snapshot
    segs: dict[str, int] = {}
    for flow, n in totals.items():
        segs[flow.kind] = segs.get(flow.kind, 0) + n["segs"]
    return Snapshot("tcpretrans", ts, counters=[
        Counter("tcpretrans_segments", "TCP segments retransmitted (SYN-ACKs: kind synack)",
                n, {"kind": kind}) for kind, n in sorted(segs.items())])


def export_source(pid: int | None = None, name: str | None = None, cgroup: str | None = None):
    """For `netkit export`: retransmitted segments by kind, counted in the kernel."""
    from netkit.cli.runs import export_source_of, sampler
    return export_source_of(
        lambda p, n, c: _open(p, n, c, count=True),
        lambda obj: sampler(flow_counts(obj, kinds_of(obj)), snapshot))(pid, name, cgroup)


class LossProbes:
    """-l: the TLP counters of netkit's namespace, per interval and for the run."""

    def __init__(self, out):
        from netkit.engine import snmp
        self.out = out
        self.counters = snmp.Counters(names=TLP_COUNTERS)

    def interval(self, when: str, seconds: float) -> None:
        moved = self.counters.interval()
        values = {key: moved.get(name, 0) for name, key in TLP_COUNTERS.items()}
        if self.out.mode == "json":
            self.out.record({"type": "loss_probes", "interval_s": round(seconds, 3), **values})
        elif moved:
            self.out.line(f"{when} L> TCPLossProbes +{values['loss_probes']}, "
                          f"TCPLossProbeRecovery +{values['loss_probe_recoveries']}")

    def total(self) -> dict:
        moved = self.counters.since_start(TLP_COUNTERS)
        return {key: moved[name] for name, key in TLP_COUNTERS.items()}


class RetransLines:
    def __init__(self, out, seq: bool, kinds: dict[int, str]):
        from netkit.render.events import EventLines
        self.seq, self.kinds = seq, kinds
        columns = [Column("TIME", 8, "<", style="dim"), Column("PID", 7),
                   Column("COMM", 15, "<", style="bold"), Column("IP", 2),
                   Column("LADDR:LPORT", 26, ">"), Column("T>", 2, "<"),
                   Column("RADDR:RPORT", 26, "<", style="cyan"), Column("STATE", 11, "<"),
                   Column("SEGS", 4)] + ([Column("SEQ", 10)] if seq else [])
        self.lines = EventLines(out, columns)
        self.segs = 0

    def event(self, e) -> None:
        from netkit.render.fields import clock, comm, ip_address, ip_version
        from netkit.render.tcp import state_name
        kind = self.kinds.get(e.kind, str(e.kind))
        f = e.flow
        self.segs += e.segs
        record = {"type": "retransmit", "pid": e.owner.pid, "comm": comm(e.owner.comm),
                  "family": ip_version(f.family), "laddr": ip_address(f.family, f.laddr),
                  "lport": f.lport, "raddr": ip_address(f.family, f.raddr), "rport": f.rport,
                  "state": state_name(e.state), "kind": kind, "segs": e.segs,
                  **({"seq": e.seq} if self.seq else {})}
        local, remote = flow_text(f)
        cells = [clock(self.lines.clock.wall(e.ts_ns)), e.owner.pid,
                 comm(e.owner.comm) or "-", f.family, local, ARROWS.get(kind, "?>"), remote,
                 state_name(e.state), e.segs] + ([e.seq] if self.seq else [])
        self.lines.event(record, cells, e.ts_ns)


def flow_rows(counts: dict) -> list[tuple[list, dict]]:
    from netkit.render.fields import with_port
    rows = []
    for flow, n in sorted(counts.items(), key=lambda kv: (-kv[1]["segs"], kv[0])):
        rows.append(([flow.pid, flow.comm, with_port(flow.laddr, flow.lport),
                      with_port(flow.raddr, flow.rport), flow.kind, n["retransmits"],
                      n["segs"]],
                     {**flow.fields(), "retransmits": n["retransmits"], "segs": n["segs"]}))
    return rows


FLOW_COLUMNS = [Column("PID", 7), Column("COMM", 15, "<", style="bold"),
                Column("LADDR:LPORT", 26, "<"), Column("RADDR:RPORT", 26, "<", style="cyan"),
                Column("KIND", 7, "<"), Column("RETRANSMITS", 11), Column("SEGS", 8)]


@export_options("tcpretrans")
def command(
    interval: IntervalArg = None,
    count: CountArg = None,
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    count_mode: CountModeOpt = False,
    sequence: SeqOpt = False,
    lossprobe: LossProbesOpt = False,
    ipv4: Ipv4Opt = False,
    ipv6: Ipv6Opt = False,
    lport: LportOpt = None,
    dport: DportOpt = None,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
    exporters: ExportHub = None,
):
    from netkit.cli.loop import Loop
    from netkit.cli.runs import run_counting
    from netkit.render.keyed import CountTable

    if interval is not None and not (count_mode or lossprobe):
        raise UsageError("INTERVAL is for -C (counts) or -l (loss probes): events are printed "
                         "as they come")
    if sequence and count_mode:
        raise UsageError("-s and -C exclude each other: counts have no sequence numbers")
    if exporters and not count_mode:
        raise UsageError("the exporters need -C: retransmissions are counted only then")
    family = family_of(ipv4, ipv6)
    out = open_output(json, no_color, verbose)
    probes = LossProbes(out) if lossprobe else None
    with _open(pid, name, cgroup, family, ports_of(lport, "-L"), ports_of(dport, "-D"),
               count_mode) as obj:
        if duration == 0:
            return
        kinds = kinds_of(obj)
        banner = "Tracing TCP retransmissions... Hit Ctrl-C to end."
        extra: dict = {}
        if count_mode:
            table = CountTable(out, "flow", FLOW_COLUMNS, "(no retransmissions)")

            def show(counts, scope, seconds, title):
                table.show(flow_rows(counts), scope, seconds, title)
                if probes and scope == "interval":
                    probes.interval(title, seconds)
            seconds, totals = run_counting(
                out, flow_counts(obj, kinds), show, snapshot=snapshot, banner=banner,
                run_title="Retransmissions over {seconds:.1f} s:", interval=interval,
                count=count, duration=duration, exporters=exporters)
            retransmits = sum(n["retransmits"] for n in totals.values())
            segs = sum(n["segs"] for n in totals.values())
        else:
            view = RetransLines(out, sequence, kinds)
            ring = obj.ring_buffer("events", "retrans_event", view.event)

            def tick(ts, seconds, show):
                from netkit.render.fields import clock
                if probes and show:
                    probes.interval(clock(ts), seconds)
            seconds = Loop(out, interval=(interval or 1.0) if probes else None, count=count,
                           duration=duration, rings=[ring]).run(tick, banner)
            retransmits, segs = view.lines.count, view.segs
        if probes:
            extra = probes.total()
        lost, failures = obj.lost_events(), failed(obj)
        if out.mode == "json":
            out.record({"type": "summary", "duration_s": round(seconds, 3),
                        "retransmits": retransmits, "segs": segs, "failed": failures,
                        **extra, "lost_events": lost})
        else:
            if not count_mode:
                out.line()
                out.line(f"{retransmits} retransmissions ({segs} segments) in {seconds:.1f} s"
                         + (f", {failures} failed" if failures else ""))
            if extra:
                out.line(f"TCPLossProbes +{extra['loss_probes']}, TCPLossProbeRecovery "
                         f"+{extra['loss_probe_recoveries']} (netkit's network namespace)")
            out.lost("tcpretrans", lost)
