"""Socket read and write sizes per process: log2 histograms of the bytes each socket send and
receive moved, kept in the kernel (sock:sock_send_length and sock:sock_recv_length); per
INTERVAL or for the whole run.
"""
from __future__ import annotations

from netkit.cli.counting import process_counting_command
from netkit.cli.runs import export_source_of, run_counting, sampler
from netkit.cli.tool import ManPage

SUMMARY = "Log2 histograms of socket read and write sizes per process (tracepoints)."

MAN = ManPage(
    description=(
        "socksize shows how large each process's socket reads and writes are: for each "
        "process, a log2 histogram of the bytes moved per read and one per write. Many small "
        "writes point at a chatty protocol or a missing buffer; reads much smaller than the "
        "writes on the other side at a slow reader; sizes pinned at a buffer size at the "
        "buffer.\n\n"
        "A size is what one sock_sendmsg() or sock_recvmsg() returned, read from the "
        "sock:sock_send_length and sock:sock_recv_length tracepoints (kernel 6.3 and later) as "
        "the call returns: every way a process sends or receives on a socket passes there "
        "(write, send*, read, recv*, readv/writev, io_uring, sendfile and splice to a socket; "
        "sendmmsg and recvmmsg once per message). Calls that moved no byte (end of file, "
        "errors, EAGAIN) are not sizes and are left out, as are MSG_PEEK reads (the data stays "
        "queued and is counted when it is read). Not seen: TCP receive splicing (splice(2) "
        "from a TCP socket, kTLS, sockmap) and zero-copy receive, which bypass "
        "sock_recvmsg.\n\n"
        "Against the book's socksize.bt, which needed a kprobe and a kretprobe on each of "
        "sock_sendmsg and sock_recvmsg to get the same return values: the tracepoints give "
        "them in one probe each. The original put failed calls (as 0) into the histograms and "
        "keyed them by command name; here they are left out and processes are kept apart.\n\n"
        "Histograms are kept in the kernel (one struct per process and direction) and printed "
        "for each INTERVAL when one is given, and for the whole run at the end."),
    examples=[
        ("netkit socksize", "histograms until Ctrl-C"),
        ("netkit socksize -p 1234 10", "one process, every ten seconds"),
        ("netkit socksize -n redis-server --json -d 60", "a minute as NDJSON"),
    ],
    output=(
        "Text: for each process and direction, a histogram titled \"PID <pid> <comm>, read\" "
        "(or write) with its count and average size, slots [2^i, 2^(i+1)) bytes ([0, 2) for "
        "1) as bpftrace's hist() prints them.\n\n"
        "JSON: one object per process and direction with type \"hist\", scope (\"interval\" or "
        "\"run\"), interval_s or duration_s, pid, comm, dir (read or write), count, "
        "size_bytes_sum (exact), size_bytes_avg and size_bytes: the buckets, a list of objects "
        "with low, high and count for [low, high); at the end one object with type "
        "\"summary\", duration_s, read and write (the sizes recorded, all processes).\n\n"
        "Exporters: netkit_socksize_read_bytes and netkit_socksize_write_bytes, histograms "
        "per comm with buckets in bytes."),
    see_also=["netkit-socketio(8)", "netkit-sockstat(8)",
              "socksize.bt (BPF Performance Tools, ch. 10)"],
)

METRICS = {"read": ("socksize_read", "Bytes per socket read"),
           "write": ("socksize_write", "Bytes per socket write")}


def read_hists(obj):
    from netkit.engine.perprocess import process_hists
    return process_hists(obj.map("hists"), {v: k for k, v in obj.enum("socksize_kind").items()})


def snapshot(ts: float, totals: dict):
    from netkit.engine.perprocess import hist_snapshot
    return hist_snapshot("socksize", ts, totals, METRICS, 1.0, "bytes")


def _open(pid, name, cgroup):
    from netkit.engine.bpfobject import BPFObject, Filters
    return BPFObject("socksize", Filters(pid, name, cgroup))


export_source = export_source_of(_open, lambda obj: sampler(read_hists(obj), snapshot))


@process_counting_command("socksize")
def command(out, pid, name, cgroup, **run):
    from netkit.engine.perprocess import counts_by_kind
    from netkit.render.keyed import HistList, process_hists

    with _open(pid, name, cgroup) as obj:
        if run["duration"] == 0:
            return
        view = HistList(out, "size", "bytes", "(no socket reads or writes)")
        run_counting(out, read_hists(obj),
                     lambda hists, *how: view.show(process_hists(hists, "dir"), *how),
                     snapshot=snapshot, summary=lambda totals: counts_by_kind(totals, METRICS),
                     banner="Tracing socket read and write sizes... Hit Ctrl-C to end.",
                     run_title="Socket I/O sizes over {seconds:.1f} s:", **run)
