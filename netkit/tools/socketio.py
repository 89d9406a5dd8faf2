"""Socket I/O per process, direction, protocol and remote port: calls and bytes, counted in the
kernel at the end of every socket send and receive (sock:sock_send_length and
sock:sock_recv_length); per INTERVAL or for the whole run.
"""
from __future__ import annotations

import socket
from typing import NamedTuple

from netkit.cli.runs import export_source_of, run_counting, sampler
from netkit.cli.options import (CgroupOpt, CountArg, DportOpt, DurationOpt, IntervalArg, Ipv4Opt,
                                Ipv6Opt, JsonOpt, NameOpt, NoColorOpt, PidOpt, TopOpt, VerboseOpt,
                                family_of, ports_of)
from netkit.cli.tool import ManPage, open_output
from netkit.export import ExportHub, export_options
from netkit.render.output import Column

SUMMARY = "Socket I/O calls and bytes per process, direction, protocol and remote port."

MAN = ManPage(
    description=(
        "socketio counts socket I/O: for each process, direction (read or write), protocol "
        "(the kernel's name: TCP, TCPv6, UDP, UNIX-STREAM...) and remote port, the calls that "
        "sent or received on a socket and the bytes they moved. It shows which conversations "
        "a process spends its I/O calls on, and whether they move data in a few large calls "
        "or many small ones (BYTES / CALLS).\n\n"
        "The counts come from the sock:sock_send_length and sock:sock_recv_length tracepoints "
        "(kernel 6.3 and later), which fire as sock_sendmsg() and sock_recvmsg() return: "
        "every way a process sends or receives on a socket passes there (write, writev, send, "
        "sendto, sendmsg, sendmmsg per message, read, readv, recv, recvfrom, recvmsg, recvmmsg "
        "per message, io_uring, sendfile and splice to a socket). A call is counted whatever "
        "it returns (an EAGAIN from a non-blocking socket counts as a call that moved nothing, "
        "as in the original); BYTES adds what successful calls moved. Reads with MSG_PEEK are "
        "not counted at all: the data is counted when it is read. Not seen: data the kernel "
        "moves without sock_recvmsg, such as TCP receive splicing (splice(2) from a TCP socket, "
        "tcp_read_sock users: kTLS, sockmap) and zero-copy receive (TCP_ZEROCOPY_RECEIVE).\n\n"
        "RPORT is the socket's remote port: 0 for a socket that is not connected (a UDP socket "
        "that names its destination in each sendto(), a listening socket) and for UNIX "
        "sockets. -D keeps only these remote ports; -4/-6 only AF_INET/AF_INET6 sockets.\n\n"
        "Against the book's socketio.bt, which placed kprobes on sock_sendmsg and sock_recvmsg "
        "and counted calls by comm, pid, direction, protocol name and port: the tracepoints "
        "fire at the same places (at return instead of entry), and bytes are added. Counts "
        "are kept in the kernel (a per-CPU hash map) and printed for each INTERVAL when one is "
        "given, and for the whole run at the end."),
    examples=[
        ("netkit socketio", "counts until Ctrl-C"),
        ("netkit socketio -p 1234 1", "one process, every second"),
        ("netkit socketio -D 5432 -T 5 10", "the five busiest talking to port 5432, every 10 s"),
        ("netkit socketio --json -d 30", "thirty seconds as NDJSON"),
    ],
    output=(
        "Columns: PID, COMM, DIR (read or write), PROTO (the kernel's protocol name), RPORT, "
        "CALLS, BYTES. Rows are sorted by calls, busiest first; -T N keeps the first N.\n\n"
        "JSON: one object per process, direction, protocol and port with type \"io\", scope "
        "(\"interval\" or \"run\"), interval_s or duration_s, pid, comm, dir, protocol, "
        "family (AF_* name), rport, calls and bytes; at the end one object with type "
        "\"summary\", duration_s, and read_calls, read_bytes, write_calls, write_bytes (the "
        "run's totals, all processes).\n\n"
        "Exporters: netkit_socketio_calls_total and netkit_socketio_bytes_total{dir, "
        "protocol, comm} (ports are left out: ephemeral ports would make a series each)."),
    see_also=["netkit-socksize(8)", "netkit-sockstat(8)", "netkit-soprotocol(8)",
              "socketio.bt (BPF Performance Tools, ch. 10)"],
)

COLUMNS = [Column("PID", 7), Column("COMM", 15, "<", style="bold"), Column("DIR", 5, "<"),
           Column("PROTO", 11, "<"), Column("RPORT", 5), Column("CALLS", 9),
           Column("BYTES", 12)]
FIELDS = ["calls", "bytes"]


class Key(NamedTuple):
    pid: int
    comm: str
    dir: str
    protocol: str
    af: int
    rport: int


def read_counts(obj):
    from netkit.engine.counters import Counts
    from netkit.engine.perprocess import comm_of, per_process
    from netkit.render.fields import comm
    directions = {value: name for name, value in obj.enum("io_direction").items()}

    def decode(key, per_cpu):
        return (Key(key.tgid, comm_of(per_cpu), directions[key.dir], comm(key.proto_name),
                    key.family, key.rport), Counts.of(per_cpu, FIELDS))
    return per_process(obj.map("counts"), decode)


def snapshot(ts: float, totals: dict):
    """The run's calls and bytes for the exporters, by direction, protocol and comm."""
    from netkit.engine.counters import Counts
    from netkit.metrics import Counter, Snapshot
    merged: dict[tuple, Counts] = {}
    for key, c in totals.items():
        labels = (("dir", key.dir), ("protocol", key.protocol), ("comm", key.comm))
        merged[labels] = merged.get(labels, Counts.zero(FIELDS)) + c
    return Snapshot("socketio", ts, counters=[
        Counter(f"socketio_{field}", f"Socket {field} through sock_sendmsg/sock_recvmsg",
                c[field], dict(labels))
        for field in FIELDS for labels, c in sorted(merged.items())])


def rows(counts: dict, top: int | None) -> list[tuple[list, dict]]:
    from netkit.render.sockets import family_name
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1]["calls"], -kv[1]["bytes"], kv[0]))
    return [([k.pid, k.comm, k.dir, k.protocol, k.rport, c["calls"], c["bytes"]],
             {"pid": k.pid, "comm": k.comm, "dir": k.dir, "protocol": k.protocol,
              "family": family_name(k.af), "rport": k.rport, **c.values})
            for k, c in ranked[:top]]


def totals_by_direction(totals: dict) -> dict[str, int]:
    return {f"{d}_{field}": sum(c[field] for k, c in totals.items() if k.dir == d)
            for d in ("read", "write") for field in FIELDS}


def _open(pid, name, cgroup, family: int = 0, dports=()):
    from netkit.engine.bpfobject import BPFObject, Filters
    af = {0: 0, 4: socket.AF_INET, 6: socket.AF_INET6}[family]
    return BPFObject("socketio", Filters(pid, name, cgroup, dports=list(dports)),
                     rodata={"filter_family": af})


export_source = export_source_of(_open, lambda obj: sampler(read_counts(obj), snapshot))


@export_options("socketio")
def command(
    interval: IntervalArg = None,
    count: CountArg = None,
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    ipv4: Ipv4Opt = False,
    ipv6: Ipv6Opt = False,
    dport: DportOpt = None,
    top: TopOpt = None,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
    exporters: ExportHub = None,
):
    from netkit.render.keyed import CountTable

    family, dports = family_of(ipv4, ipv6), ports_of(dport, "-D")
    out = open_output(json, no_color, verbose)
    with _open(pid, name, cgroup, family, dports) as obj:
        if duration == 0:
            return
        table = CountTable(out, "io", COLUMNS, "(no socket I/O)")
        run_counting(out, read_counts(obj),
                     lambda counts, *how: table.show(rows(counts, top), *how),
                     snapshot=snapshot, summary=totals_by_direction,
                     banner="Tracing socket I/O... Hit Ctrl-C to end.",
                     run_title="Socket I/O over {seconds:.1f} s:", interval=interval,
                     count=count, duration=duration, exporters=exporters)
