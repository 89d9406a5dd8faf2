"""A TCP socket's congestion window, slow-start threshold and send buffer each time a segment
arrives on it, as CSV for a spreadsheet or a plot (the book's tcpwin), or NDJSON.
Tracepoint tcp:tcp_probe.
"""
from __future__ import annotations

import time

from netkit.cli.loop import Loop
from netkit.cli.options import (CgroupOpt, DportOpt, DurationOpt, JsonOpt, LportOpt, NameOpt,
                                NoColorOpt, PidOpt, VerboseOpt, ports_of)
from netkit.cli.tool import ManPage, open_output

SUMMARY = "TCP congestion window and send buffer per received segment, as CSV (tracepoint)."

FIELDS = ["snd_cwnd", "snd_ssthresh", "sk_sndbuf", "sk_wmem_queued", "srtt_us", "snd_wnd"]
HEADER = "event,sock,time_us," + ",".join(FIELDS)

MAN = ManPage(
    description=(
        "tcpwin prints one line for every segment that arrives on an established TCP "
        "connection, with the state of the sender's side of that socket at that moment: the "
        "congestion window (snd_cwnd, in segments), the slow-start threshold (snd_ssthresh, in "
        "segments; 2147483647 until the first loss sets it), the send buffer's limit "
        "(sk_sndbuf, bytes) and how much of it is used (sk_wmem_queued, bytes: data queued "
        "and data sent but not yet acknowledged), then the smoothed RTT (srtt_us) and the "
        "peer's receive window (snd_wnd, bytes). The output is CSV, as the book's tcpwin.bt "
        "prints it, for a spreadsheet or a plot of cwnd over time (filter by the sock column "
        "for one connection); --json writes the same as NDJSON.\n\n"
        "The book's tcpwin.bt reads these fields with a kprobe on tcp_rcv_established. "
        "netkit uses the tcp:tcp_probe tracepoint, which that function calls first with the "
        "socket, and reads the same fields from the socket: the same moments and values, on "
        "kernels without kprobes. Segments that arrive before the connection is established "
        "are not seen, by either.\n\n"
        "Segments arrive in softirq, on whatever task the CPU ran: -p, -n and -c select by the "
        "socket's owner instead, the process netkit saw connect, listen, accept or send on it "
        "(a connection older than the trace is known once its owner sends; until then it is "
        "left out by these filters). A bulk transfer makes one event per ACK, tens of "
        "thousands a second: narrow with -p or -L/-D (filtered in the kernel). Events the "
        "ring buffer could not take are counted and reported at the end."),
    examples=[
        ("netkit tcpwin -D 443 > cwnd.csv", "connections to port 443, as CSV"),
        ("netkit tcpwin -L 5201 -d 10 --json", "ten seconds of an iperf3 server, as NDJSON"),
        ("netkit tcpwin -p 4242 > cwnd.csv", "the sockets of one process"),
    ],
    output=(
        "CSV: a header line, then per segment: event (always rcv: a segment was received), "
        "sock (the kernel address of the socket, one per connection), time_us (microseconds "
        "since tracing began), snd_cwnd, snd_ssthresh, sk_sndbuf, sk_wmem_queued, srtt_us, "
        "snd_wnd. The book's seven columns come first, in its order.\n\n"
        "JSON: per segment an object with type \"event\", ts, event, sock (hexadecimal text), "
        "time_us, snd_cwnd, snd_ssthresh, sk_sndbuf, sk_wmem_queued, srtt_us, snd_wnd, lport, "
        "rport, pid and comm (the socket's owner; 0 and \"\" when not known); at the end one object with type \"summary\", duration_s, events and "
        "lost_events."),
    see_also=["netkit-tcprtt(8)", "ss(8)", "tcpwin.bt (BPF Performance Tools, ch. 10)"],
)


class TcpwinView:
    def __init__(self, out, start_ns: int):
        from netkit.render.fields import KernelClock
        self.out, self.start_ns = out, start_ns
        self.clock = KernelClock()
        self.events = 0

    def event(self, e) -> None:
        self.events += 1
        time_us = max(0, e.ts_ns - self.start_ns) // 1000
        values = [e.snd_cwnd, e.snd_ssthresh, e.sk_sndbuf, e.sk_wmem_queued, e.srtt_us,
                  e.snd_wnd]
        if self.out.mode == "json":
            from netkit.render.fields import comm, iso
            self.out.record({"type": "event", "ts": iso(self.clock.wall(e.ts_ns), "microseconds"),
                             "event": "rcv", "sock": f"0x{e.sock:x}", "time_us": time_us,
                             **dict(zip(FIELDS, values)), "lport": e.lport, "rport": e.rport,
                             "pid": e.owner.pid, "comm": comm(e.owner.comm)})
            return
        if self.events == 1:
            self.out.line(HEADER)
        self.out.line(f"rcv,0x{e.sock:x},{time_us}," + ",".join(map(str, values)))

    def summary(self, seconds: float, lost: int) -> None:
        if self.out.mode == "json":
            self.out.record({"type": "summary", "duration_s": round(seconds, 3),
                             "events": self.events, "lost_events": lost})
        self.out.lost("tcpwin", lost)


def command(
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    lport: LportOpt = None,
    dport: DportOpt = None,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
):
    from netkit.engine.bpfobject import BPFObject, Filters

    filters = Filters(pid, name, cgroup, dports=ports_of(dport, "-D"),
                      lports=ports_of(lport, "-L"))
    out = open_output(json, no_color, verbose)
    with BPFObject("tcpwin", filters) as obj:
        if duration == 0:
            return
        view = TcpwinView(out, time.monotonic_ns())
        ring = obj.ring_buffer("events", "win_event", view.event)
        seconds = Loop(out, duration=duration, rings=[ring]).run(
            tick=lambda ts, seconds, show: None,
            banner="Tracing TCP congestion windows... Hit Ctrl-C to end.")
        view.summary(seconds, obj.lost_events())
