"""Time from connect() to the first byte read on the socket, a log2 histogram per process: the
connect, the request and the server's think time to its first answer, as the client sees it.

Tracepoints only: sys_enter/sys_exit of connect, sock:sock_recv_length (the first receive that
returns data), sock:inet_sock_set_state (to forget TCP sockets that close first).
"""
from __future__ import annotations

from netkit.cli.runs import export_source_of, run_counting, sampler
from netkit.cli.options import (CgroupOpt, CountArg, DportOpt, DurationOpt, IntervalArg, Ipv4Opt,
                                Ipv6Opt, JsonOpt, MillisecondsOpt, NameOpt, NoColorOpt, PidOpt,
                                VerboseOpt, family_of, ports_of)
from netkit.cli.tool import ManPage, open_output
from netkit.export import ExportHub, export_options

SUMMARY = "Time from connect() to the first byte read, log2 histogram per process."

MAN = ManPage(
    description=(
        "so1stbyte measures, for each IP connect(2) a process makes, the time from the "
        "connect() call to the first read on that socket that returns data: the handshake, "
        "the request and the time the server took to start answering, as the client sees "
        "them. It keeps one log2 histogram of these times per process (in microseconds, -m "
        "milliseconds).\n\n"
        "The start is the entry of connect() on a socket that is not already connecting (the "
        "status checks of a non-blocking connect keep the first start; a blocking connect "
        "interrupted by a signal and restarted keeps it too). The end is the first "
        "sock_recvmsg() on the same socket that returns at least one byte (the "
        "sock:sock_recv_length tracepoint, kernel 6.3 and later: on an older kernel "
        "so1stbyte says so in one line and exits 1), by whatever call it comes (read, recv, recvmsg, "
        "io_uring; a MSG_PEEK read that returns data counts). A connect that fails at once "
        "(ECONNREFUSED on loopback, ENETUNREACH) and a TCP socket that closes before any byte "
        "arrived (a refused or timed-out non-blocking connect, a client that gives up) are not "
        "counted. A UDP connect() counts like a TCP one: the time to the first datagram "
        "read, a DNS query's round trip for a resolver.\n\n"
        "Against the book's so1stbyte.bt (syscall tracepoints too): the original kept the "
        "start per process and file descriptor and ended at the return of the first read "
        "syscall on that descriptor, whatever it returned, so a non-blocking reader's first "
        "EAGAIN ended the measurement; here the socket itself is followed (a socket passed to "
        "another process or read through io_uring is still seen) and only a read that returns "
        "data ends it. The histogram belongs to the process that called connect(). Not seen: "
        "connects made inside the kernel or through io_uring, 32-bit (compat) syscalls, and "
        "data read without sock_recvmsg (splice from a TCP socket, kTLS, zero-copy receive). "
        "The filters -p, -n, -c, -4, -6 (the family of the address connected to) and -D are "
        "applied in the kernel at connect().\n\n"
        "Histograms are kept in the kernel and printed for each INTERVAL when one is given, and "
        "for the whole run at the end (Ctrl-C, SIGTERM, -d or COUNT)."),
    examples=[
        ("netkit so1stbyte", "histograms per process until Ctrl-C"),
        ("netkit so1stbyte -D 443 -m 10", "HTTPS servers, in ms, every ten seconds"),
        ("netkit so1stbyte -n curl --json -d 60", "one command name for a minute, as NDJSON"),
    ],
    output=(
        "Text: for each process, a histogram titled \"PID <pid> <comm>\" with its count and "
        "average, slots [2^i, 2^(i+1)) microseconds (milliseconds with -m) as bpftrace's "
        "hist() prints them.\n\n"
        "JSON: one object per process with type \"hist\", scope (\"interval\" or \"run\"), "
        "interval_s or duration_s, pid, comm, count, latency_us_sum, latency_us_avg and "
        "latency_us: the buckets, a list of objects with low, high and count for [low, high) "
        "(latency_ms_* with -m); at the end one object with type \"summary\", duration_s and "
        "connects (the connects measured, all processes).\n\n"
        "Exporters: netkit_so1stbyte_latency_seconds, a histogram per comm."),
    see_also=["netkit-soconnlat(8)", "netkit-soconnect(8)",
              "so1stbyte.bt (BPF Performance Tools, ch. 10)"],
)


def read_hists(obj):
    from netkit.engine.perprocess import process_hists
    return process_hists(obj.map("hists"), {0: "latency"})


def snapshot_for(ms: bool):
    from netkit.engine.perprocess import hist_snapshot
    metrics = {"latency": ("so1stbyte_latency", "Time from connect() to the first byte read")}
    unit = 1e-3 if ms else 1e-6
    return lambda ts, totals: hist_snapshot("so1stbyte", ts, totals, metrics, unit)


def _open(pid, name, cgroup, family: int = 0, dports=(), ms: bool = False):
    from netkit.engine.bpfobject import BPFObject, Filters
    return BPFObject("so1stbyte", Filters(pid, name, cgroup, dports=list(dports)),
                     rodata={"filter_family": family, "unit_ns": 1_000_000 if ms else 1_000})


export_source = export_source_of(
    _open, lambda obj: sampler(read_hists(obj), snapshot_for(ms=False)))


@export_options("so1stbyte")
def command(
    interval: IntervalArg = None,
    count: CountArg = None,
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    ipv4: Ipv4Opt = False,
    ipv6: Ipv6Opt = False,
    dport: DportOpt = None,
    milliseconds: MillisecondsOpt = False,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
    exporters: ExportHub = None,
):
    from netkit.render.keyed import HistList, process_hists

    family, dports = family_of(ipv4, ipv6), ports_of(dport, "-D")
    out = open_output(json, no_color, verbose)
    with _open(pid, name, cgroup, family, dports, milliseconds) as obj:
        if duration == 0:
            return
        view = HistList(out, "latency", "ms" if milliseconds else "us",
                        "(no connect was followed by a read)")
        run_counting(out, read_hists(obj),
                     lambda hists, *how: view.show(process_hists(hists, None), *how),
                     snapshot=snapshot_for(milliseconds),
                     summary=lambda totals: {"connects": sum(h.count for h in totals.values())},
                     banner="Tracing connect() to first byte read... Hit Ctrl-C to end.",
                     run_title="Connect to first byte over {seconds:.1f} s:", interval=interval,
                     count=count, duration=duration, exporters=exporters)
