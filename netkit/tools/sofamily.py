"""New connections per process and address family (AF_INET, AF_INET6, AF_UNIX...), connect()
and accept() kept apart, counted in the kernel; per INTERVAL or for the whole run.

The family is the socket's own, found through the syscall's file descriptor (connect's fd at
entry, the fd accept() returned at exit). Like the book's sofamily.bt, with -p/-n/-c.
"""
from __future__ import annotations

from typing import NamedTuple

from netkit.cli.counting import process_counting_command
from netkit.cli.runs import export_source_of, run_counting, sampler
from netkit.cli.tool import ManPage
from netkit.render.output import Column
from netkit.render.sockets import totals_by_call

SUMMARY = "New connections per process and address family, connect() and accept() apart."

MAN = ManPage(
    description=(
        "sofamily counts the connections processes make and take, by address family: each "
        "connect(2) and each accept(2)/accept4(2) that returns a socket, charged to the "
        "process that made the call and to the family of its socket (AF_INET, AF_INET6, "
        "AF_UNIX, AF_NETLINK, AF_VSOCK...). It shows which processes talk over which "
        "families: a service that should use IPv6 and does not, a local client that goes "
        "through TCP where a UNIX socket would do.\n\n"
        "A connect() is counted when it is called, whatever it returns (a refused connect "
        "counts, as in the original), but a connect() on a socket that is already connecting "
        "or connected is not: that is how a non-blocking caller asks for the result "
        "(EALREADY, EISCONN), not a new connection. A datagram socket's connect() only sets its "
        "default peer, and each one counts. An accept() is counted when it returns a new "
        "socket; failed accepts (EAGAIN on a non-blocking listener) are not.\n\n"
        "Against the book's sofamily.bt (tracepoints only there too): the family is read from "
        "the socket through the file descriptor (task -> files -> fdtable -> file -> socket -> "
        "sk) instead of from the sockaddr the caller passed, so an accept() with a NULL "
        "address is counted and a connect() to AF_UNSPEC (a datagram socket's disconnect) is "
        "charged to the socket's family; connect status checks are left out; counts are per "
        "process, not per command name. Not seen: connections made inside the kernel "
        "(kernel_connect, kernel_accept: NFS, SMB, iSCSI) and through io_uring, which "
        "make no connect or accept syscall, and 32-bit (compat) syscalls.\n\n"
        "Counts are kept in the kernel (a per-CPU hash map) and printed for each INTERVAL when "
        "one is given, and for the whole run at the end (Ctrl-C, SIGTERM, -d or COUNT)."),
    examples=[
        ("netkit sofamily", "counts until Ctrl-C"),
        ("netkit sofamily 5", "every five seconds"),
        ("netkit sofamily -n nginx -d 60 --json", "one command name for a minute, as NDJSON"),
        ("netkit sofamily --prometheus 9464 10", "serve the counters to Prometheus"),
    ],
    output=(
        "Columns: PID, COMM, CALL (connect or accept), FAMILY (AF_* name; AF_<n> for a number "
        "Python does not know), AF (its number), COUNT. Rows are sorted busiest first.\n\n"
        "JSON: one object per process, call and family with type \"count\", scope "
        "(\"interval\" or \"run\"), interval_s (interval scope) or duration_s (run scope), pid, "
        "comm, call, family (the name), af (the number) and count; at the end one object with "
        "type \"summary\", duration_s, connect and accept (the run's totals).\n\n"
        "Exporters: netkit_sofamily_connections_total{call, family, comm}."),
    see_also=["netkit-soprotocol(8)", "netkit-soconnect(8)", "ss(8)",
              "sofamily.bt (BPF Performance Tools, ch. 10)", "address_families(7)"],
)

BY = "address family"
COLUMNS = [Column("PID", 7), Column("COMM", 15, "<", style="bold"), Column("CALL", 7, "<"),
           Column("FAMILY", 11, "<"), Column("AF", 3), Column("COUNT", 8)]


class Key(NamedTuple):
    pid: int
    comm: str
    call: str
    af: int


def read_counts(obj):
    from netkit.engine.perprocess import comm_of, per_process
    calls = {value: name for name, value in obj.enum("sock_call").items()}

    def decode(key, per_cpu):
        return (Key(key.tgid, comm_of(per_cpu), calls[key.call], key.family),
                sum(v.count for v in per_cpu))
    return per_process(obj.map("counts"), decode)


def snapshot(ts: float, totals: dict[Key, int]):
    """The run's counts for the exporters, by call, family and comm."""
    from netkit.metrics import Counter, Snapshot
    from netkit.render.sockets import family_name
    merged: dict[tuple, int] = {}
    for key, n in totals.items():
        labels = (("call", key.call), ("family", family_name(key.af)), ("comm", key.comm))
        merged[labels] = merged.get(labels, 0) + n
    return Snapshot("sofamily", ts, counters=[
        Counter("sofamily_connections", "New connections (connect calls, accepted sockets) "
                "by address family", n, dict(labels)) for labels, n in sorted(merged.items())])


def rows(counts: dict[Key, int]) -> list[tuple[list, dict]]:
    from netkit.render.sockets import family_name
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [([k.pid, k.comm, k.call, family_name(k.af), k.af, n],
             {"pid": k.pid, "comm": k.comm, "call": k.call, "family": family_name(k.af),
              "af": k.af, "count": n}) for k, n in ranked]


def _open(pid, name, cgroup):
    from netkit.engine.bpfobject import BPFObject, Filters
    return BPFObject("sofamily", Filters(pid, name, cgroup))


export_source = export_source_of(_open, lambda obj: sampler(read_counts(obj), snapshot))


@process_counting_command("sofamily")
def command(out, pid, name, cgroup, **run):
    from netkit.render.keyed import CountTable

    with _open(pid, name, cgroup) as obj:
        if run["duration"] == 0:
            return
        table = CountTable(out, "count", COLUMNS, "(no new connections)")
        run_counting(out, read_counts(obj), lambda counts, *how: table.show(rows(counts), *how),
                     snapshot=snapshot, summary=totals_by_call,
                     banner=f"Tracing connect() and accept() by {BY}... Hit Ctrl-C to end.",
                     run_title="New connections over {seconds:.1f} s:", **run)
