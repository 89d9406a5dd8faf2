"""One line per accept() on an IP socket: the process, the peer's address and port, and the
result (OK or the errno name: EMFILE, ECONNABORTED, ...).

Raw sys_enter/sys_exit tracepoints; the peer is read from the new socket through the returned
file descriptor, so accept() with a NULL address is seen too. EAGAIN results are counted, not
printed.
"""
from __future__ import annotations

from netkit.cli.options import (CgroupOpt, DurationOpt, Ipv4Opt, Ipv6Opt, JsonOpt, LportOpt,
                                NameOpt, NoColorOpt, PidOpt, TimestampOpt, VerboseOpt, family_of,
                                ports_of)
from netkit.cli.tool import ManPage, open_output
from netkit.render.output import Column

SUMMARY = "One line per IP accept(): peer address, port and result (tracepoints)."

MAN = ManPage(
    description=(
        "soaccept prints one line per accept(2)/accept4(2) call on an AF_INET or AF_INET6 "
        "socket as it returns: the process that accepted, the remote address and port of the "
        "connection it got, and the result: OK, or the errno name of a failure (EMFILE and "
        "ENFILE: out of file descriptors, ENOBUFS/ENOMEM, ECONNABORTED: the client gave up "
        "before accept, EINTR, EINVAL: the socket does not listen). A non-blocking listener "
        "with nothing pending returns EAGAIN, which event loops get once after each burst of "
        "connections: such calls are counted (JSON summary: would_block) but not printed.\n\n"
        "Against the book's soaccept.bt (the same syscall tracepoints): the peer is read from "
        "the new socket (through the fd accept returned: task -> files -> fdtable -> file -> "
        "socket -> sk), not from the address buffer the caller passed, so accepts with a NULL "
        "address are shown and failures are told apart from successes by the result alone; "
        "the listening socket is checked to be AF_INET/AF_INET6 at entry. FAM is the socket's "
        "family: on an IPv6 socket that also takes IPv4 clients, an IPv4 peer shows as "
        "IPv4-mapped (::ffff:192.0.2.1) with FAM IPv6, as the process sees it. Not seen: "
        "accepts inside the kernel (kernel_accept: NFS, SMB, iSCSI targets), through io_uring, "
        "or by 32-bit (compat) syscalls. The filters (-p, -n, -c, -4, -6, -L) are applied in "
        "the kernel at syscall entry; -L names listening ports."),
    examples=[
        ("netkit soaccept", "every IP accept() until Ctrl-C"),
        ("netkit soaccept -L 80,443 -t", "two listening ports, with a timestamp"),
        ("netkit soaccept -n nginx --json", "one command name, as NDJSON"),
    ],
    output=(
        "Columns: TIME(s) (with -t: seconds since tracing began), PID, PROCESS (command name), "
        "FAM (IPv4 or IPv6), ADDRESS and PORT (the peer; - when the call failed), RESULT (OK "
        "or an errno name).\n\n"
        "JSON: one object per call with type \"accept\", ts (ISO 8601, when the call "
        "returned), pid, tid, comm, cgroup (its cgroup v2 path), family, address and port (the "
        "peer; null when the call failed), laddr and lport (the new socket's local end, or the "
        "listener's when the call failed), fd (the new descriptor, null on failure), result "
        "and errno (0 for OK); at the end one object with type \"summary\", duration_s, events "
        "(calls shown), results (calls per result), would_block (EAGAIN calls, not shown) and "
        "lost_events (calls the ring buffer could not take)."),
    see_also=["netkit-soconnect(8)", "netkit-sofamily(8)", "accept(2)",
              "soaccept.bt (BPF Performance Tools, ch. 10)", "tcpaccept(8)"],
)

COLUMNS = [Column("PID", 7), Column("PROCESS", 15, "<", style="bold"), Column("FAM", 4, "<"),
           Column("ADDRESS", 24, "<", style="cyan"), Column("PORT", 5),
           Column("RESULT", 12, "<")]


class AcceptView:
    def __init__(self, out, timestamps: bool):
        from netkit.render.events import EventLines
        from netkit.render.sockets import Owners
        self.owners = Owners()
        self.lines = EventLines(out, COLUMNS, timestamps)

    def event(self, e) -> None:
        from netkit.render.fields import comm, ip_version
        from netkit.render.sockets import Endpoint, result
        peer, local, outcome = Endpoint(e.peer), Endpoint(e.local), result(min(e.ret, 0))
        record = {"type": "accept", **self.owners.fields(e.owner),
                  "family": ip_version(e.family), "address": peer.address or None,
                  "port": peer.port if peer else None, "laddr": local.address,
                  "lport": local.port, "fd": e.ret if e.ret >= 0 else None, "result": outcome,
                  "errno": max(-e.ret, 0)}
        self.lines.event(record, [e.owner.pid, comm(e.owner.comm), ip_version(e.family),
                                  peer.address or "-", peer.port if peer else "-", outcome],
                         e.end_ns)


def command(
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    ipv4: Ipv4Opt = False,
    ipv6: Ipv6Opt = False,
    lport: LportOpt = None,
    timestamp: TimestampOpt = False,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
):
    from netkit.cli.runs import run_events
    from netkit.engine.bpfobject import BPFObject, Filters
    family, lports = family_of(ipv4, ipv6), ports_of(lport, "-L")
    out = open_output(json, no_color, verbose)
    with BPFObject("soaccept", Filters(pid, name, cgroup, lports=lports),
                   rodata={"filter_family": family}) as obj:
        if duration == 0:
            return
        view = AcceptView(out, timestamp)
        seconds = run_events(out, obj, "events", "soaccept_event", view.event, duration,
                             "Tracing IP accept() calls... Hit Ctrl-C to end.")
        would_block = sum(v.value for v in obj.map("would_block").lookup(0) or [])
        view.lines.summary("soaccept", seconds, obj.lost_events(), would_block=would_block)
