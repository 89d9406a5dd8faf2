"""One line per IP connect() call: the process, the address and port it asked for, how long the
call took and what it returned (OK or the errno name: ECONNREFUSED, EINPROGRESS, ...).

Raw sys_enter/sys_exit tracepoints (the book's soconnect.bt used the syscall tracepoints too).
A non-blocking connect returns EINPROGRESS at once: its LAT is the syscall's time only;
`netkit soconnlat` times the whole handshake.
"""
from __future__ import annotations

from netkit.cli.options import (CgroupOpt, DportOpt, DurationOpt, Ipv4Opt, Ipv6Opt, JsonOpt,
                                NameOpt, NoColorOpt, PidOpt, TimestampOpt, VerboseOpt, family_of,
                                ports_of)
from netkit.cli.tool import ManPage, open_output
from netkit.render.output import Column

SUMMARY = "One line per IP connect(): address, port, syscall latency and result (tracepoints)."

MAN = ManPage(
    description=(
        "soconnect prints one line per connect(2) call to an IPv4 or IPv6 address, as the call "
        "returns: the calling process, the address and port it asked for, how long the call "
        "took (LAT, from syscall entry to return) and its result: OK, or the name of the "
        "errno it failed with (ECONNREFUSED: nothing listens, ETIMEDOUT, ENETUNREACH, "
        "EHOSTUNREACH, EACCES: a firewall or a BPF program refused it, EADDRNOTAVAIL: no local "
        "port left, EINPROGRESS: a non-blocking connect under way, EALREADY and EISCONN: the "
        "status checks that follow one, EINTR: a signal; ERESTARTSYS when a signal "
        "interrupted the call and the kernel restarts it).\n\n"
        "LAT is the time the caller spent in the syscall. For a blocking TCP connect that is "
        "the handshake; a non-blocking connect returns EINPROGRESS at once, so its LAT says "
        "nothing about the network: netkit soconnlat times such connects to ESTABLISHED. A "
        "UDP connect() only sets the default peer and takes microseconds.\n\n"
        "Every connect() call with an AF_INET or AF_INET6 sockaddr is shown, whatever the "
        "socket's protocol (TCP, UDP, SCTP...; JSON names it), including the status checks of "
        "a non-blocking connect and calls that fail before any packet is sent. The filters "
        "(-p, -n, -c, -4, -6, -D) are applied in the kernel at syscall entry. Like the book's "
        "soconnect.bt, which used the same syscall tracepoints, it sees connects made by "
        "processes through the connect syscall; not those made inside the kernel (NFS, SMB, "
        "iSCSI) or through io_uring, nor 32-bit (compat) syscalls. FAM and ADDRESS are those "
        "of the sockaddr the caller gave: an IPv4-mapped address (::ffff:10.0.0.1) on an IPv6 "
        "socket is shown as such, with FAM IPv6."),
    examples=[
        ("netkit soconnect", "every IP connect() until Ctrl-C"),
        ("netkit soconnect -p 1234 -t", "one process, with a timestamp"),
        ("netkit soconnect -D 443 -6", "IPv6 connects to port 443"),
        ("netkit soconnect --json -d 60", "a minute as NDJSON"),
    ],
    output=(
        "Columns: TIME(s) (with -t: seconds since tracing began), PID, PROCESS (command name), "
        "FAM (IPv4 or IPv6), ADDRESS, PORT, LAT(us) (microseconds in the syscall), RESULT (OK "
        "or an errno name).\n\n"
        "JSON: one object per call with type \"connect\", ts (ISO 8601, when the call "
        "returned), pid, tid, comm, cgroup (its cgroup v2 path), family (\"IPv4\"/\"IPv6\"), "
        "address, port, protocol (the kernel's name of the socket's protocol: TCP, TCPv6, "
        "UDP...; null when the fd is not a socket), latency_us, result and errno (0 for OK); "
        "at the end one object with type \"summary\", duration_s, events (calls shown), "
        "results (calls per result) and lost_events (calls the ring buffer could not take)."),
    see_also=["netkit-soconnlat(8)", "netkit-udpconnect(8)", "netkit-soaccept(8)",
              "soconnect.bt (BPF Performance Tools, ch. 10)", "connect(2)"],
)

COLUMNS = [Column("PID", 7), Column("PROCESS", 15, "<", style="bold"), Column("FAM", 4, "<"),
           Column("ADDRESS", 24, "<", style="cyan"), Column("PORT", 5),
           Column("LAT(us)", 10), Column("RESULT", 11, "<")]


def open_connects(tool: str, pid, name, cgroup, family: int, dports: list[int],
                  udp_only: bool):
    """The object soconnect and udpconnect share (bpf_programs/soconnect.bpf.c)."""
    from netkit.engine.bpfobject import OBJECT_DIR, BPFObject, Filters
    return BPFObject(tool, Filters(pid, name, cgroup, dports=dports),
                     rodata={"filter_family": family, "udp_only": udp_only},
                     path=OBJECT_DIR / "soconnect.bpf.o")


class ConnectView:
    def __init__(self, out, timestamps: bool):
        from netkit.render.events import EventLines
        from netkit.render.sockets import Owners
        self.owners = Owners()
        self.lines = EventLines(out, COLUMNS, timestamps)

    def event(self, e) -> None:
        from netkit.render.fields import comm
        from netkit.render.sockets import Endpoint, result
        dest, outcome = Endpoint(e.dest), result(e.ret)
        lat_us = round(e.lat_ns / 1000, 3)
        record = {"type": "connect", **self.owners.fields(e.owner), "family": dest.version,
                  "address": dest.address, "port": dest.port,
                  "protocol": comm(e.proto_name) or None, "latency_us": lat_us,
                  "result": outcome, "errno": -e.ret}
        self.lines.event(record, [e.owner.pid, comm(e.owner.comm), dest.version, dest.address,
                                  dest.port, f"{lat_us:.1f}", outcome],
                         e.start_ns + e.lat_ns)


def command(
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    ipv4: Ipv4Opt = False,
    ipv6: Ipv6Opt = False,
    dport: DportOpt = None,
    timestamp: TimestampOpt = False,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
):
    from netkit.cli.runs import run_events
    family, dports = family_of(ipv4, ipv6), ports_of(dport, "-D")
    out = open_output(json, no_color, verbose)
    with open_connects("soconnect", pid, name, cgroup, family, dports, udp_only=False) as obj:
        if duration == 0:
            return
        view = ConnectView(out, timestamp)
        seconds = run_events(out, obj, "events", "soconnect_event", view.event, duration,
                             "Tracing IP connect() calls... Hit Ctrl-C to end.")
        view.lines.summary("soconnect", seconds, obj.lost_events())
