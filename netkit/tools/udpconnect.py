"""One line per connect() on a UDP socket: the process and the address and port it set as the
socket's peer (or a disconnect: AF_UNSPEC), with the call's result.

The same kernel side as soconnect (bpf_programs/soconnect.bpf.c: raw sys_enter/sys_exit of
connect, the socket's protocol through the fd), kept to UDP sockets. The book's udpconnect used
kprobes on ip4_datagram_connect and ip6_datagram_connect.
"""
from __future__ import annotations

from netkit.cli.options import (CgroupOpt, DportOpt, DurationOpt, Ipv4Opt, Ipv6Opt, JsonOpt,
                                NameOpt, NoColorOpt, PidOpt, VerboseOpt, family_of, ports_of)
from netkit.cli.tool import ManPage, open_output
from netkit.render.output import Column

SUMMARY = "One line per UDP connect(): process, remote address and port (tracepoints)."

MAN = ManPage(
    description=(
        "udpconnect prints one line per connect(2) call on a UDP socket, as the call returns: "
        "the calling process and the remote address and port it set as the socket's default "
        "peer. A UDP connect() sends nothing; it fixes where send() goes and which datagrams "
        "recv() accepts, and it is how DNS resolvers, QUIC and RTP clients, NTP and syslog "
        "senders pick their server, so this shows which servers a host talks to over UDP. A "
        "connect() to an AF_UNSPEC address removes the peer again; it is shown as a "
        "disconnect. RESULT (not in the original) is OK or the errno name of a failure "
        "(ENETUNREACH: no route; EACCES: refused by a BPF cgroup program or a firewall).\n\n"
        "Against the book's udpconnect, which placed kprobes on ip4_datagram_connect and "
        "ip6_datagram_connect: here the raw sys_enter and sys_exit tracepoints of connect see "
        "the call, and the socket is found through its file descriptor (task -> files -> "
        "fdtable -> file -> socket -> sk) to keep UDP sockets only (sk_protocol 17, UDP and "
        "UDPv6; UDP-Lite, raw and ping sockets, which the kprobes also saw, are left out). "
        "Connects made inside the kernel (kernel_connect, as the NFS client over UDP makes "
        "them) and through io_uring are not seen, nor 32-bit (compat) syscalls. The filters -p, -n, -c, -4, -6 and -D are applied in the kernel; a "
        "disconnect passes -4/-6 by its socket's family and has no port for -D."),
    examples=[
        ("netkit udpconnect", "every UDP connect() until Ctrl-C"),
        ("netkit udpconnect -D 53", "who asks which DNS servers"),
        ("netkit udpconnect -n chronyd --json", "one command name, as NDJSON"),
    ],
    output=(
        "Columns: TIME (HH:MM:SS when the call returned), PID, COMM, IP (4 or 6; - for a "
        "disconnect), RADDR (the remote address as given: an IPv4-mapped address on an IPv6 "
        "socket stays so), RPORT, RESULT (OK or an errno name).\n\n"
        "JSON: one object per call with type \"udpconnect\", ts (ISO 8601, when the call "
        "returned), pid, tid, comm, cgroup (its cgroup v2 path), ip (4, 6, or null for a "
        "disconnect), raddr, rport (null for a disconnect), protocol (UDP or UDPv6), "
        "disconnect (true for AF_UNSPEC), latency_us, result and errno; at the end one object "
        "with type \"summary\", duration_s, events, results and lost_events."),
    see_also=["netkit-soconnect(8)", "netkit-socketio(8)", "udp(7)", "connect(2)",
              "udpconnect (BPF Performance Tools, ch. 10)"],
)

COLUMNS = [Column("TIME", 8, "<", style="dim"), Column("PID", 7),
           Column("COMM", 15, "<", style="bold"), Column("IP", 2),
           Column("RADDR", 24, "<", style="cyan"), Column("RPORT", 5), Column("RESULT", 12, "<")]


class UdpConnectView:
    def __init__(self, out):
        from netkit.render.events import EventLines
        from netkit.render.sockets import Owners
        self.owners = Owners()
        self.lines = EventLines(out, COLUMNS)

    def event(self, e) -> None:
        from netkit.render.fields import clock, comm
        from netkit.render.sockets import Endpoint, result
        peer, outcome = Endpoint(e.dest), result(e.ret)
        ip = 6 if peer.family == 6 else 4 if peer else None
        record = {"type": "udpconnect", **self.owners.fields(e.owner), "ip": ip,
                  "raddr": peer.address or None, "rport": peer.port if peer else None,
                  "protocol": comm(e.proto_name), "disconnect": not peer,
                  "latency_us": round(e.lat_ns / 1000, 3), "result": outcome, "errno": -e.ret}
        end_ns = e.start_ns + e.lat_ns
        self.lines.event(record, [clock(self.lines.clock.wall(end_ns)), e.owner.pid,
                                  comm(e.owner.comm), ip or "-",
                                  peer.address or "(disconnect)", peer.port if peer else "-",
                                  outcome], end_ns)


def command(
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    ipv4: Ipv4Opt = False,
    ipv6: Ipv6Opt = False,
    dport: DportOpt = None,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
):
    from netkit.cli.runs import run_events
    from netkit.tools.soconnect import open_connects
    family, dports = family_of(ipv4, ipv6), ports_of(dport, "-D")
    out = open_output(json, no_color, verbose)
    with open_connects("udpconnect", pid, name, cgroup, family, dports, udp_only=True) as obj:
        if duration == 0:
            return
        view = UdpConnectView(out)
        seconds = run_events(out, obj, "events", "soconnect_event", view.event, duration,
                             "Tracing UDP connect() calls... Hit Ctrl-C to end.")
        view.lines.summary("udpconnect", seconds, obj.lost_events())
