"""How often Nagle's algorithm, TCP_CORK, MSG_MORE and autocorking hold TCP sends back, and for
how long.

Counts every TCP send by the socket's Nagle mode (nagle on, TCP_NODELAY, TCP_CORK), notes the
sends that left bytes unsent and why, and times each such hold until the segment carrying its
last byte is handed to a network device. Tracepoints only (sock:sock_send_length,
net:net_dev_queue, sock:inet_sock_set_state), so it runs without kprobes. Prints at Ctrl-C, or
every INTERVAL seconds.
"""
from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass, field, replace
from typing import Annotated, Optional

import typer

from netkit.cli.loop import Loop
from netkit.cli.options import (CgroupOpt, CountArg, DportOpt, DurationOpt, IntervalArg, JsonOpt,
                                LportOpt, NameOpt, NoColorOpt, PidOpt, TopOpt, VerboseOpt, ports_of)
from netkit.cli.tool import ManPage, open_output
from netkit.export import ExportHub, export_options
from netkit.render.output import Column

SUMMARY = "Sends held back by Nagle, cork and autocork, and for how long (tracepoints)."

MODES = ["nagle", "nodelay", "cork"]
NONAGLE_VALUES = 16             # tcpnagle.h (tests/test_engine.py ties it)
TCP_NAGLE_OFF, TCP_NAGLE_CORK, TCP_NAGLE_PUSH = 1, 2, 4

MAN = ManPage(
    description=(
        "tcpnagle shows how often TCP sends are held back in the send queue instead of going out "
        "at once, why, and for how long. Every send(2)/write(2) on a TCP socket that queues bytes "
        "is counted by the socket's Nagle mode: nagle (the default: Nagle's algorithm on), "
        "nodelay (TCP_NODELAY) or cork (TCP_CORK, whatever TCP_NODELAY says). The original's "
        "flag names (ON, OFF, CORK, OFF|CORK, PUSH, OFF|PUSH, from tcp_sock.nonagle) are kept in "
        "the summary.\n\n"
        "Right after each send (tracepoint sock:sock_send_length) tcpnagle compares the socket's "
        "write_seq with snd_nxt. When bytes are left unsent the send is HELD, and the cause is "
        "inferred from the same snapshot of the socket, tested in this order: cork (TCP_CORK "
        "is set), rwnd (the receiver's window has no room for the next segment), cwnd (packets "
        "in flight fill the congestion window), autocork (earlier packets of the socket are "
        "still in a qdisc or device: the TSQ throttled flag is set and unfreed skbs are charged "
        "to the socket; net.ipv4.tcp_autocorking and TCP small queues both end here), other "
        "when TCP's own pacing holds the next segment (SO_MAX_PACING_RATE, or a pacing rate "
        "with no fq qdisc: its departure time is still ahead), nagle (Nagle on, less than one "
        "MSS unsent and an earlier small segment still unacknowledged, the test of "
        "tcp_nagle_check with Minshall's rule), more (nothing in flight and no cork: a send "
        "with MSG_MORE, or sendfile/splice between pages) and otherwise other (TSO deferral). "
        "The hold ends when a TCP segment of that socket that carries the "
        "held send's last byte is handed to a network device (net:net_dev_queue); its duration "
        "goes into a log2 histogram in microseconds, per cause, in the kernel.\n\n"
        "Precision compared with the kprobe original (tcpnagle.bt, BPF Performance Tools ch. "
        "10): the original hooks tcp_write_xmit, a static kernel function with no tracepoint. "
        "It counts every tcp_write_xmit call by its nonagle argument, including pushes driven by "
        "ACKs and timers and the transient cork of MSG_MORE, and its \"blocked\" time runs from "
        "a call that returned true (data queued with nothing in flight) to the next call that "
        "returned false. Neither the argument nor the return value is observable here. "
        "tcpnagle therefore counts send calls, not transmit attempts; reads the socket's "
        "persistent nonagle bits (MSG_MORE shows only as the cause more, and only with nothing "
        "in flight: with data in flight it looks like Nagle, or cwnd/rwnd); infers the cause "
        "after the send returned rather than from the kernel's own decision, so a state that "
        "changed in between (an ACK arriving on another CPU) can misattribute a cause, and a "
        "hold that ended before the send call returned is not seen at all; and measures a "
        "different time: from the return of the send call that left bytes unsent to the "
        "hand-off of the segment carrying them to the device (before the qdisc), for any "
        "cause, including Nagle with data in flight, which the original's blocked time did not "
        "cover. Each held send is one hold; a socket keeps at most 8 pending holds, later held "
        "sends are counted but not timed (overflow). Holds whose bytes left before the hold "
        "was recorded are discarded (missed); holds pending when the socket closes are "
        "counted as dropped.\n\n"
        "Precision against the kprobe original, measured by bench/kprobe_anchors.py: 6.1 has no "
        "sock:sock_send_length (tcpnagle says so and exits) and the 6.18 host has no kprobes, "
        "so netkit's own kprobe version of tcpnagle.bt ran on Debian 12's 6.1 under qemu and "
        "tcpnagle on 6.18, on the same workload: 5 bursts of 4 writes of 100 bytes, 2 ms apart, "
        "across a test-bed link adding 20 ms each way. In two runs both counted the 20 sends of "
        "each mode and the same held sends: 15 of 15 expected with Nagle on, 20 of 20 with "
        "TCP_CORK, none with TCP_NODELAY (kprobe: tcp_sendmsg returning with write_seq ahead of "
        "snd_nxt; hold ended by __tcp_transmit_skb of the segment carrying the last byte). Hold "
        "times agree in kind, not to the microsecond, as kernels and machines differ: mean "
        "Nagle hold 34.1-39.2 ms (kprobes, emulated 6.1) and 34.1-35.9 ms (tcpnagle, 6.18); "
        "mean cork hold 8.3-8.5 and 5.3-7.7 ms, as long as the client takes to finish its burst "
        "and uncork, which is slower under emulation. The original's own measures differ: "
        "tcp_write_xmit ran 26, 26 and 21 times (ACK-driven and uncork pushes and the FIN's "
        "counted beside the sends), and its blocked time found no period under Nagle (data in "
        "flight: tcp_write_xmit returns false) and 5 under cork, one per burst (11.7-19.6 ms), "
        "where tcpnagle timed 15 and 20 holds.\n\n"
        "-p, -n and -c select the sending task; -D and -L select the connection by remote and "
        "local port. --by sock adds the sockets with the most held time: PID and COMM of the "
        "task that first sent on it, local and remote address. Without INTERVAL tcpnagle "
        "prints only at the end, like the original; Ctrl-C (or SIGTERM, or the end of --duration "
        "or COUNT) prints the summary of the whole run. --prometheus, --textfile and --graphite "
        "receive the run's totals every INTERVAL (every second without one) and at the end; "
        "netkit export tcpnagle does the same without a view."),
    examples=[
        ("netkit tcpnagle", "trace until Ctrl-C, then print counts and the hold histogram"),
        ("netkit tcpnagle 1 10", "ten one-second intervals"),
        ("netkit tcpnagle --by sock -p 1234", "one process, the sockets with the most held time"),
        ("netkit tcpnagle -D 6379 5", "connections to port 6379, every five seconds"),
        ("netkit tcpnagle --json -d 10", "ten seconds, NDJSON summary"),
    ],
    output=(
        "Text: per interval (and for the run at the end) a line of sends by mode, a table of "
        "held sends by cause (CAUSE, HELD: sends that left bytes unsent, HOLDS: holds whose end "
        "was seen, AVG_us, TOTAL_ms: their mean and summed duration), and a log2 histogram of "
        "hold time in microseconds over all causes. With --by sock a table of sockets: PID, "
        "COMM, LADDR:LPORT, RADDR:RPORT, SENDS, HELD, HOLDS, HELD_ms, MAX_us (the longest hold "
        "since tracing started), and in the summary a hold-time histogram per listed socket."
        "\n\n"
        "JSON: one object per interval with type \"interval\", ts (ISO 8601), interval_s, and "
        "one at the end with type \"summary\", duration_s; both carry sends (object: total, "
        "nagle, nodelay, cork), flags (object: the original's nonagle names with their send "
        "counts, non-zero only), held (object: cause to held sends, every cause), holds (cause "
        "to holds measured), hold_us_sum (cause to summed hold time, us), hist_us (the hold-time "
        "histogram of all causes: a list of objects with low, high and count for the bucket "
        "[low, high) in us), hist_us_by_cause (cause to such a list, causes with holds only), "
        "overflow, missed, dropped, and with --by "
        "sock sockets (list of objects: pid, comm, laddr, lport, raddr, rport, sends, held, "
        "holds, held_us, max_us, hist_us; most held time first)."),
    see_also=["tcp(7)", "tcpnagle.bt (BPF Performance Tools, ch. 10)", "ss(8)", "nstat(8)",
              "netkit-sockstat(8)"],
)



class By(str, enum.Enum):
    sock = "sock"


ByOpt = Annotated[Optional[By], typer.Option("--by", show_default=False,
                                             help="sock: also show the sockets with the most "
                                                  "held time (-T of them).")]


def mode_of(nonagle: int) -> str:
    if nonagle & TCP_NAGLE_CORK:
        return "cork"
    return "nodelay" if nonagle & TCP_NAGLE_OFF else "nagle"


def flag_name(nonagle: int) -> str:
    """tcp_sock.nonagle as the original prints it: ON, OFF, CORK, OFF|CORK, PUSH, OFF|PUSH..."""
    parts = [name for bit, name in ((TCP_NAGLE_OFF, "OFF"), (TCP_NAGLE_CORK, "CORK"),
                                    (TCP_NAGLE_PUSH, "PUSH"), (8, "0x8")) if nonagle & bit]
    return "|".join(parts) or "ON"


@dataclass
class Totals:
    """What the kernel counted (cumulative, or the difference of two reads). `causes` names
    the held and hists entries, in the order of tcpnagle.h's enum hold_cause."""
    causes: list[str]
    sends: list[int] = field(default_factory=lambda: [0] * NONAGLE_VALUES)
    held: list[int] = field(default_factory=list)
    overflow: int = 0
    missed: int = 0
    dropped: int = 0
    hists: list = field(default_factory=list)           # Log2Hist per cause

    def __sub__(self, earlier: "Totals") -> "Totals":
        return Totals(self.causes, [a - b for a, b in zip(self.sends, earlier.sends)],
                      [a - b for a, b in zip(self.held, earlier.held)],
                      self.overflow - earlier.overflow, self.missed - earlier.missed,
                      self.dropped - earlier.dropped,
                      [a - b for a, b in zip(self.hists, earlier.hists)])

    def by_mode(self) -> dict[str, int]:
        modes = dict.fromkeys(MODES, 0)
        for value, n in enumerate(self.sends):
            modes[mode_of(value)] += n
        return {"total": sum(self.sends), **modes}

    def flags(self) -> dict[str, int]:
        return {flag_name(v): n for v, n in enumerate(self.sends) if n}

    def all_causes(self):
        from netkit.engine.hist import Log2Hist
        return sum(self.hists, Log2Hist())


def read_totals(obj, causes: list[str]) -> Totals:
    from netkit.engine.hist import Log2Hist
    per_cpu = obj.map("counts").lookup(0)
    hist_map = obj.map("hold_us")
    return Totals(
        causes,
        [sum(v.sends[i] for v in per_cpu) for i in range(NONAGLE_VALUES)],
        [sum(v.held[i] for v in per_cpu) for i in range(len(causes))],
        sum(v.overflow for v in per_cpu), sum(v.missed for v in per_cpu),
        sum(v.dropped for v in per_cpu),
        [Log2Hist.from_value(hist_map.lookup(i)) for i in range(len(causes))])


@dataclass
class SockRow:
    """One socket: who sent on it, its addresses, its counts and its hold-time histogram."""
    pid: int
    comm: str
    laddr: str
    lport: int
    raddr: str
    rport: int
    sends: int = 0
    held: int = 0
    holds: int = 0
    held_ns: int = 0
    max_ns: int = 0                 # since tracing started
    hist: object = None             # Log2Hist of hold time, us
    closed: bool = False

    def __sub__(self, earlier: "SockRow") -> "SockRow":
        return replace(self, sends=self.sends - earlier.sends, held=self.held - earlier.held,
                       holds=self.holds - earlier.holds, held_ns=self.held_ns - earlier.held_ns,
                       hist=self.hist - earlier.hist)

    def __bool__(self) -> bool:
        return bool(self.sends or self.holds)

    def json(self) -> dict:
        from netkit.render.hist import hist_json
        return {"pid": self.pid, "comm": self.comm, "laddr": self.laddr, "lport": self.lport,
                "raddr": self.raddr, "rport": self.rport, "sends": self.sends, "held": self.held,
                "holds": self.holds, "held_us": round(self.held_ns / 1000, 1),
                "max_us": round(self.max_ns / 1000, 1), "hist_us": hist_json(self.hist.slots)}


class SocketTotals:
    """Per-socket totals from the `sockets` map (keyed by socket cookie): per-interval changes
    and run totals. A closed socket's entry leaves the map once read; of the closed ones only
    the `keep` with the most held time are remembered for the summary, so a long run over many
    short connections stays small."""

    def __init__(self, sockets_map, keep: int):
        from netkit.engine.counters import CumulativeMap
        from netkit.engine.hist import Log2Hist
        from netkit.render.fields import comm, ip_address
        self.keep = keep

        def decode(key, v):
            return key.value, SockRow(v.tgid, comm(v.comm), ip_address(v.family, v.saddr),
                                      v.lport, ip_address(v.family, v.daddr), v.dport, v.sends,
                                      v.held, v.holds, v.held_ns, v.max_ns,
                                      Log2Hist.from_value(v.hold_us), bool(v.closed))
        self.reader = CumulativeMap(sockets_map, decode, retire=lambda _, row: row.closed)

    def read_delta(self) -> list[SockRow]:
        delta = list(self.reader.read().values())
        retired = self.reader.retired
        for cookie in [c for c, _ in ranked(retired.items(), None,
                                            key=lambda item: item[1])][self.keep:]:
            del retired[cookie]
        return delta

    def rows(self) -> list[SockRow]:
        return list(self.reader.totals().values())


def ranked(rows, n: int | None, key=lambda row: row):
    """Most held time first (then held sends, then sends)."""
    order = sorted(rows, key=lambda r: (key(r).held_ns, key(r).held, key(r).sends), reverse=True)
    return order if n is None else order[:n]


def export_snapshot(ts: float, totals: Totals):
    """The run's cumulative totals as a netkit.metrics.Snapshot for the exporters."""
    from netkit.metrics import Counter, Histogram, Snapshot
    counters = [Counter("tcpnagle_sends", "TCP sends that queued bytes, by Nagle mode", n,
                        {"mode": mode})
                for mode, n in totals.by_mode().items() if mode != "total"]
    counters += [Counter("tcpnagle_held_sends", "TCP sends that left bytes unsent, by cause", n,
                         {"cause": cause}) for cause, n in zip(totals.causes, totals.held)]
    histograms = [Histogram("tcpnagle_hold", "Time held bytes waited before reaching a device",
                            tuple(h.slots), float(h.sum), 1e-6, {"cause": cause})
                  for cause, h in zip(totals.causes, totals.hists)]
    return Snapshot("tcpnagle", ts, counters, histograms)


def _open(pid=None, name=None, cgroup=None, dports=(), lports=(), per_socket=False):
    from netkit.engine.bpfobject import BPFObject, Filters
    return BPFObject("tcpnagle", Filters(pid, name, cgroup, list(dports), list(lports)),
                     rodata={"per_socket": per_socket})


def causes_of(obj) -> list[str]:
    """The hold causes, in the order of their histograms and counters."""
    return list(obj.enum("hold_cause"))


@contextlib.contextmanager
def export_source(pid: int | None = None, name: str | None = None, cgroup: str | None = None):
    """For `netkit export`: attach tcpnagle's probes, yield a function ts -> Snapshot."""
    with _open(pid, name, cgroup) as obj:
        causes = causes_of(obj)
        yield lambda ts: export_snapshot(ts, read_totals(obj, causes))


class NagleView:
    SOCK_COLUMNS = [Column("PID", 7), Column("COMM", 15, "<", style="bold"),
                    Column("LADDR:LPORT", 21, "<"), Column("RADDR:RPORT", 21, "<"),
                    Column("SENDS", 7), Column("HELD", 7), Column("HOLDS", 7),
                    Column("HELD_ms", 9, fmt=lambda v: f"{v / 1e6:.3f}"),
                    Column("MAX_us", 9, fmt=lambda v: f"{v / 1e3:.0f}")]
    CAUSE_COLUMNS = [Column("CAUSE", 9, "<", style="bold"), Column("HELD", 8), Column("HOLDS", 8),
                     Column("AVG_us", 10, fmt=lambda v: f"{v:.0f}"),
                     Column("TOTAL_ms", 10, fmt=lambda v: f"{v / 1e3:.3f}")]

    def __init__(self, out, by_sock: bool, top: int):
        self.out, self.by_sock, self.top = out, by_sock, top

    def _record(self, t: Totals, sockets) -> dict:
        from netkit.render.hist import hist_json
        record = {
            "sends": t.by_mode(), "flags": t.flags(),
            "held": dict(zip(t.causes, t.held)),
            "holds": {c: h.count for c, h in zip(t.causes, t.hists)},
            "hold_us_sum": {c: h.sum for c, h in zip(t.causes, t.hists)},
            "hist_us": hist_json(t.all_causes().slots),
            "hist_us_by_cause": {c: hist_json(h.slots) for c, h in zip(t.causes, t.hists) if h},
            "overflow": t.overflow, "missed": t.missed, "dropped": t.dropped,
        }
        if self.by_sock:
            record["sockets"] = [r.json() for r in ranked(sockets, self.top)]
        return record

    def _text(self, title: str, t: Totals, sockets, socket_hists: bool = False) -> None:
        from netkit.render.fields import with_port
        modes = t.by_mode()
        self.out.line(f"{title}  sends {modes['total']}: nagle {modes['nagle']}, nodelay "
                      f"{modes['nodelay']}, cork {modes['cork']}", style="bold")
        rows = [[c, n, h.count, h.mean, h.sum] for c, n, h in zip(t.causes, t.held, t.hists)
                if n or h.count]
        if rows:
            self.out.table(self.CAUSE_COLUMNS, rows)
        extra = [f"{name} {n}" for name, n in (("overflow", t.overflow),
                                               ("missed", t.missed), ("dropped", t.dropped)) if n]
        if extra:
            self.out.line("holds not timed: " + ", ".join(extra))
        hist = t.all_causes()
        if hist.count:
            self.out.hist("hold time", hist.slots, "us")
        if self.by_sock and sockets:
            self.out.table(self.SOCK_COLUMNS, [
                [r.pid, r.comm, with_port(r.laddr, r.lport), with_port(r.raddr, r.rport), r.sends,
                 r.held, r.holds, r.held_ns, r.max_ns] for r in ranked(sockets, self.top)])
        for r in ranked(sockets, self.top) if socket_hists else []:
            if r.hist.count:
                self.out.hist(f"hold time of {with_port(r.laddr, r.lport)} -> "
                              f"{with_port(r.raddr, r.rport)} ({r.comm} {r.pid})", r.hist.slots,
                              "us")
        self.out.line()

    def interval(self, ts: float, seconds: float, t: Totals, sockets) -> None:
        from netkit.render.fields import clock, iso
        if self.out.mode == "json":
            self.out.record({"type": "interval", "ts": iso(ts), "interval_s": round(seconds, 3),
                             **self._record(t, sockets)})
        else:
            self._text(clock(ts), t, sockets)

    def summary(self, seconds: float, t: Totals, sockets) -> None:
        if self.out.mode == "json":
            self.out.record({"type": "summary", "duration_s": round(seconds, 3),
                             **self._record(t, sockets)})
            return
        self._text(f"Total over {seconds:.1f} s:", t, sockets, socket_hists=True)
        flags = ", ".join(f"@nagle[{k}]: {n}" for k, n in t.flags().items())
        if flags:
            self.out.line(f"nonagle flags of the sends: {flags}")


@export_options("tcpnagle")
def command(
    interval: IntervalArg = None,
    count: CountArg = None,
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    dport: DportOpt = None,
    lport: LportOpt = None,
    by: ByOpt = None,
    top: TopOpt = 10,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
    exporters: ExportHub = None,
):
    dports, lports = ports_of(dport, "-D"), ports_of(lport, "-L")

    by_sock = by == By.sock
    out = open_output(json, no_color, verbose)
    with _open(pid, name, cgroup, dports, lports, by_sock) as obj:
        if duration == 0:
            return
        causes = causes_of(obj)
        view = NagleView(out, by_sock, top)
        sockets = SocketTotals(obj.map("sockets"), top) if by_sock else None
        zero = last = read_totals(obj, causes)

        def tick(ts: float, seconds: float, show: bool):
            nonlocal last
            now = read_totals(obj, causes)
            # Sockets are read every tick even when printing only at the end: closed ones
            # leave the map once read, so it never fills up with them.
            socks = sockets.read_delta() if sockets else []
            if show:
                view.interval(ts, seconds, now - last, socks)
                last = now
            return export_snapshot(ts, now - zero) if exporters else None

        loop = Loop(out, interval=interval, count=count, duration=duration, exporters=exporters,
                    every=1.0)
        seconds = loop.run(tick, "Tracing TCP sends held by Nagle, cork and autocork... "
                                 "Hit Ctrl-C to end.")
        view.summary(seconds, read_totals(obj, causes) - zero,
                     sockets.rows() if sockets else [])
