"""New connections per process and transport protocol: the protocol number, its IPPROTO name and
the kernel's name for the socket's protocol (TCP, TCPv6, UDP, UNIX-STREAM...), connect() and
accept() kept apart; counted in the kernel, per INTERVAL or for the whole run.

The socket is found through the syscall's file descriptor (connect's fd at entry, the fd
accept() returned at exit), where the book's soprotocol.bt used kprobes on the security hooks.
"""
from __future__ import annotations

from typing import NamedTuple

from netkit.cli.counting import process_counting_command
from netkit.cli.runs import export_source_of, run_counting, sampler
from netkit.cli.tool import ManPage
from netkit.render.output import Column
from netkit.render.sockets import totals_by_call

SUMMARY = "New connections per process and transport protocol, connect() and accept() apart."

MAN = ManPage(
    description=(
        "soprotocol counts the connections processes make and take, by transport protocol: "
        "each connect(2) and each accept(2)/accept4(2) that returns a socket, charged to the "
        "calling process and to its socket's protocol, shown three ways: the socket's protocol "
        "number (sk_protocol: 6 for TCP, 17 for UDP, 0 for UNIX sockets), its IPPROTO_* name "
        "(IP sockets only) and the name the kernel gives the socket's protocol implementation "
        "(struct proto: TCP, TCPv6, UDP, UDPv6, UDP-Lite, PING, RAW, SCTP, MPTCP, UNIX-STREAM "
        "for a stream UNIX socket, UNIX for a datagram one...), so IPv4 and IPv6 TCP are told "
        "apart. connect() and accept() are counted separately (the book's soprotocol.bt added "
        "them together into one map).\n\n"
        "A connect() is counted when it is called, whatever it returns, except on a socket that "
        "is already connecting or connected (a non-blocking caller asking for the result: "
        "EALREADY, EISCONN); an accept() when it returns a new socket.\n\n"
        "Against the original, which used kprobes on security_socket_connect and "
        "security_socket_accept: here the raw sys_enter and sys_exit tracepoints find the "
        "socket through the file descriptor (task -> files -> fdtable -> file -> socket -> sk). "
        "The accept side reads the new socket, where the original read the listening one (the "
        "protocol is the same). The original saw every connect call that reached the security "
        "hook, status checks included, and in-kernel connects that go through it; this sees "
        "neither, nor connects and accepts made through io_uring or by 32-bit (compat) "
        "syscalls. Counts are per process, not per command name.\n\n"
        "Counts are kept in the kernel (a per-CPU hash map) and printed for each INTERVAL when "
        "one is given, and for the whole run at the end (Ctrl-C, SIGTERM, -d or COUNT)."),
    examples=[
        ("netkit soprotocol", "counts until Ctrl-C"),
        ("netkit soprotocol -p 1234 5", "one process, every five seconds"),
        ("netkit soprotocol --json -d 10", "ten seconds as NDJSON"),
    ],
    output=(
        "Columns: PID, COMM, CALL (connect or accept), PROTO (the socket's protocol number), "
        "IPPROTO (its name; - for sockets that are not AF_INET/AF_INET6), NAME (the kernel's "
        "name of the protocol, 15 characters at most), COUNT. Rows are sorted busiest first.\n\n"
        "JSON: one object per process, call and protocol with type \"count\", scope "
        "(\"interval\" or \"run\"), interval_s or duration_s, pid, comm, call, family (AF_* "
        "name), protocol (number), ipproto (name, null for non-IP sockets), name and count; at "
        "the end one object with type \"summary\", duration_s, connect and accept.\n\n"
        "Exporters: netkit_soprotocol_connections_total{call, protocol (the kernel's name), "
        "comm}."),
    see_also=["netkit-sofamily(8)", "netkit-soconnect(8)", "ss(8)",
              "soprotocol.bt (BPF Performance Tools, ch. 10)", "protocols(5)"],
)

BY = "protocol"
COLUMNS = [Column("PID", 7), Column("COMM", 15, "<", style="bold"), Column("CALL", 7, "<"),
           Column("PROTO", 5), Column("IPPROTO", 15, "<"), Column("NAME", 15, "<"),
           Column("COUNT", 8)]


class Key(NamedTuple):
    pid: int
    comm: str
    call: str
    af: int
    protocol: int
    name: str


def read_counts(obj):
    from netkit.engine.perprocess import comm_of, per_process
    from netkit.render.fields import comm
    calls = {value: name for name, value in obj.enum("sock_call").items()}

    def decode(key, per_cpu):
        return (Key(key.tgid, comm_of(per_cpu), calls[key.call], key.family, key.protocol,
                    comm(key.proto_name)), sum(v.count for v in per_cpu))
    return per_process(obj.map("counts"), decode)


def snapshot(ts: float, totals: dict[Key, int]):
    """The run's counts for the exporters, by call, protocol name and comm."""
    from netkit.metrics import Counter, Snapshot
    merged: dict[tuple, int] = {}
    for key, n in totals.items():
        labels = (("call", key.call), ("protocol", key.name), ("comm", key.comm))
        merged[labels] = merged.get(labels, 0) + n
    return Snapshot("soprotocol", ts, counters=[
        Counter("soprotocol_connections", "New connections (connect calls, accepted sockets) "
                "by the kernel's protocol name", n, dict(labels))
        for labels, n in sorted(merged.items())])


def rows(counts: dict[Key, int]) -> list[tuple[list, dict]]:
    from netkit.render.sockets import family_name, ipproto_name, is_ip_family
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [([k.pid, k.comm, k.call, k.protocol, ipproto_name(k.protocol, k.af), k.name, n],
             {"pid": k.pid, "comm": k.comm, "call": k.call, "family": family_name(k.af),
              "protocol": k.protocol,
              "ipproto": ipproto_name(k.protocol, k.af) if is_ip_family(k.af) else None,
              "name": k.name, "count": n}) for k, n in ranked]


def _open(pid, name, cgroup):
    from netkit.engine.bpfobject import BPFObject, Filters
    return BPFObject("soprotocol", Filters(pid, name, cgroup))


export_source = export_source_of(_open, lambda obj: sampler(read_counts(obj), snapshot))


@process_counting_command("soprotocol")
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
