"""ICMP echo round trips measured three ways: as ping sees them, by kernel socket timestamps,
and inside the kernel stack by tracepoints.

Sends echo requests like ping (-c, -i, -s, -W, -I, -4/-6) and prints, per reply, the
userspace RTT (send call to recv return), the kernel-stamped RTT (SO_TIMESTAMPING software
TX to RX) and the in-stack RTT (net:net_dev_start_xmit of the request to net:netif_receive_skb
of the reply, both in superping's own network namespace). Without root the in-stack column is
left out. --passive times the echoes of other processes (a running ping) by the tracepoints
alone, in one network namespace or all.
"""
from __future__ import annotations

import enum
import socket
import time
from typing import Annotated, Optional

import typer

from netkit.cli.options import (AllNetnsOpt, Ipv4Opt, Ipv6Opt, JsonOpt, MillisecondsOpt, NameOpt,
                                NetnsOpt, NoColorOpt, PidOpt, VerboseOpt, seconds)
from netkit.cli.tool import ManPage, open_output
from netkit.engine.errors import NetkitError, UsageError
from netkit.net.superping import IcmpError, Lost, Pinger, Reply, stats
from netkit.render.hist import hist_json
from netkit.render.output import Column

SUMMARY = "ping with kernel-stamped and in-stack (tracepoint) round-trip times."

MAN = ManPage(
    exit_status=("0 when at least one reply came back (and after Ctrl-C with replies); 1 when no "
                 "reply came back, as ping(8) does, or when the tool cannot run (one line on "
                 "stderr says why); 2 for a usage error."),
    description=(
        "superping sends ICMP echo requests like ping(8) and times every reply three ways. "
        "USER is what a ping program sees: from the sendto() call to the return of recvmsg(), "
        "so it includes the scheduler's and the interpreter's delays on both ends. KERNEL "
        "comes from SO_TIMESTAMPING: the software TX stamp the driver takes when it hands the "
        "request to the device, to the software RX stamp of the reply as it enters the stack. "
        "STACK comes from two tracepoints: net:net_dev_start_xmit for the request (after the "
        "qdisc, just before the driver) and net:netif_receive_skb for the reply, matched in BPF "
        "on network namespace, address family, ICMP id, sequence number and peer address. "
        "KERNEL and STACK leave out the scheduling noise of userspace; both should agree within "
        "a few tens of microseconds.\n\n"
        "Both tracepoints fire in every network namespace of the host, and an echo that crosses "
        "namespaces on the same host (to or from a container, through a router namespace) "
        "passes them once in each. STACK therefore runs from the first transmit of the request "
        "in the namespace of superping's socket to the arrival of the reply on a device of that "
        "same namespace: a namespace that forwards the request, or receives the reply before "
        "ours, is not taken for ours. A transmitted packet belongs to the namespace of the "
        "socket that sent it, or, when no local socket did (it is being forwarded), to that of "
        "the device sending it; a received packet belongs to the namespace of the device that "
        "receives it. Namespaces are named by inode number, as lsns(8) and "
        "/proc/PID/ns/net show them.\n\n"
        "The socket is a raw ICMP socket when superping has CAP_NET_RAW, otherwise an ICMP "
        "datagram socket, which the kernel allows when the user's group is in "
        "net.ipv4.ping_group_range (the kernel then picks the echo id). Loading BPF needs root "
        "(or CAP_BPF and CAP_PERFMON): without it superping says so once and reports USER and "
        "KERNEL only.\n\n"
        "Compared with the original superping.bt (kprobes on ip_send_skb and icmp_rcv), the "
        "in-stack stamps sit at the device: the request is stamped after netfilter and neighbour "
        "resolution and the reply before IP input, so the figure is slightly smaller and closer "
        "to the wire, and the wait for ARP/ND of a first request is not in it. --tx-point queue "
        "moves the request's stamp to net:net_dev_queue, before the qdisc, so that time spent "
        "behind a shaper counts too. Only the first "
        "TX stamp of a request counts (stacked devices transmit it again). Echoes larger than "
        "the MTU are timed by their first fragment; IPv6 echoes with extension headers other "
        "than a fragment header are not followed.\n\n"
        "Precision against the kprobe original, measured by bench/kprobe_anchors.py on Debian "
        "12's kernel 6.1 under qemu (TCG; the host kernel has no kprobes) with netkit's own "
        "kprobe version of superping.bt: request at ip6_send_skb, or for IPv4 at "
        "ip_push_pending_frames, as 6.1 inlines ip_send_skb there and its kprobe never fires "
        "for ICMP; reply at icmp_rcv/icmpv6_rcv. In each of two runs both timed the same 200 "
        "echoes on loopback and to a veth peer, IPv4 and IPv6, and matched all 1,600 (active "
        "and --passive). The kprobe RTT was the longer by a median of 252-269 us (IPv4) and "
        "256-266 us (IPv6) on loopback and 292-329 and 274-305 us to the veth peer, against "
        "in-stack medians of 313-382 us. Stamped at all four points in one program, 110-168 us "
        "of that lies between the send kprobe and the device's transmit (IP output, netfilter, "
        "neighbour output, dev_queue_xmit) and 23-62 us between the device's receipt and "
        "icmp_rcv (IP input); both parts include the kprobes' own cost, 29-73 us a hit under "
        "emulation (ping's median RTT rose by 117-292 us with the script's four hits per echo). "
        "Side by side, superping's own reply program also runs before icmp_rcv: that "
        "difference is 27-156 us larger than the one-program split. Under emulation every "
        "instruction is slow: the figures show where the stamps sit, not the size of the gap "
        "on hardware.\n\n"
        "--passive sends nothing: it prints every echo request/reply pair exchanged in one "
        "network namespace, by default the one netkit runs in, with the PID and command that "
        "sent the request; -p and -n select processes. --netns NETNS traces another namespace: "
        "a name from `ip netns list`, a namespace file (/run/netns/NAME, /proc/PID/ns/net) or "
        "its inode number. --all-netns traces them all and says which namespace each echo was "
        "timed in. A namespace that forwards an echo (a router, or a host routing for its "
        "containers) times it too, from its transmit of the request to its receipt of the "
        "reply, shown with PID 0 and COMM [forwarded]; -p and -n leave such echoes out. So "
        "with --all-netns a container's ping to the outside shows twice: in the container's "
        "namespace with the ping's PID, and forwarded in the host's, shorter by the path "
        "between them.\n\n"
        "The summary gives packets transmitted and received, loss, min/avg/max/mdev of each "
        "RTT (mdev as ping computes it) and a log2 histogram of the in-stack RTT aggregated in "
        "the kernel (of the kernel-stamped RTT when BPF is not available). Exit status: 0 when "
        "a reply came, 1 when none did or on an error, 2 on a usage error."),
    examples=[
        ("netkit superping -c 5 10.0.0.2", "five echoes, three RTTs each"),
        ("netkit superping -6 -c 100 -i 0.01 -q fe80::1%eth0", "IPv6, quiet, summary only"),
        ("netkit superping -c 10 -s 1400 -I veth0 10.0.0.2", "larger requests through one device"),
        ("netkit superping --json -c 3 127.0.0.1", "NDJSON: one object per reply and a summary"),
        ("netkit superping --passive", "time the echoes of every ping in this network namespace"),
        ("netkit superping --passive -n ping -c 10", "the first ten echoes that processes named "
                                                     "ping exchange"),
        ("netkit superping --passive --all-netns", "echoes in every network namespace, with a "
                                                   "NETNS column"),
        ("netkit superping --passive --netns /proc/4242/ns/net", "echoes in the namespace of "
                                                                 "process 4242 (a container)"),
    ],
    output=(
        "Active: one line per reply, like ping's: `64 bytes from ADDR: icmp_seq=N ttl=T "
        "user=U us kernel=K us stack=S us` (ms with -m), `(DUP!)` for duplicates, "
        "`From ADDR icmp_seq=N TEXT` for an ICMP error about a request (unreachable, time "
        "exceeded) and `no reply for icmp_seq=N` for one that timed out. Passive: columns PID, "
        "COMM, NETNS (the namespace's inode; with --all-netns only), IP "
        "(4 or 6), ADDRESS (the peer), ID, SEQ, RTT (in-stack, us or ms).\n\n"
        "JSON: per reply an object with type \"reply\", ts, seq, id, from, bytes, ttl, "
        "user_rtt_us, kernel_rtt_us, stack_rtt_us (null when not measured), dup; per timeout "
        "type \"lost\" with seq and id; per ICMP error type \"error\" with seq, id, from, "
        "icmp_type, icmp_code, text; in passive mode type \"echo\" with pid, comm, netns "
        "(inode), family (4 or 6), address, id, seq, stack_rtt_us. At the end type "
        "\"summary\" with netns (the inode of the namespace whose echoes were timed: "
        "superping's own, or the one --passive traced; null with --all-netns), "
        "transmitted, received, duplicates, errors, loss_pct, user_rtt_us, kernel_rtt_us and "
        "stack_rtt_us (objects with n, min, avg, max, mdev, or null), hist_us (the in-stack "
        "histogram: list of objects with low, high, count), hist_source (\"stack\" or "
        "\"kernel\"), bpf (true when the in-stack RTT was measured), lost_events and "
        "unmatched_replies (from the BPF side). The histogram lists are objects with low, high "
        "and count for the bucket [low, high) in us. In text, events the ring buffer could not "
        "take (their replies show no stack RTT) are reported on stderr."),
    see_also=["ping(8)", "netkit-pchar(8)", "superping.bt (BPF Performance Tools, ch. 10)"],
)

class TxPoint(str, enum.Enum):
    xmit = "xmit"
    queue = "queue"


class SocketKind(str, enum.Enum):
    raw = "raw"
    dgram = "dgram"
    auto = "auto"


DestArg = Annotated[Optional[str], typer.Argument(metavar="DESTINATION", show_default=False,
                                                  help="Host to ping (not with --passive).")]
CountOpt = Annotated[Optional[int], typer.Option("-c", "--count", min=1, max=10**9,
                                                 show_default=False,
                                                 help="Stop after this many requests (with "
                                                      "--passive: this many echoes).")]
IntervalOpt = Annotated[float, typer.Option("-i", "--interval", click_type=seconds(0.001),
                                            help="Seconds between requests.")]
SizeOpt = Annotated[int, typer.Option("-s", "--size", min=0, max=65507,
                                      help="ICMP payload bytes (8 bytes of header come on top).")]
TimeoutOpt = Annotated[float, typer.Option("-W", "--timeout", click_type=seconds(0.001),
                                           help="Seconds to wait for each reply.")]
DeadlineOpt = Annotated[Optional[float], typer.Option("-w", "--deadline",
                                                      click_type=seconds(0.001),
                                                      show_default=False,
                                                      help="Exit after this many seconds.")]
IfaceOpt = Annotated[Optional[str], typer.Option("-I", "--interface", metavar="IFACE",
                                                 show_default=False,
                                                 help="Send through this device, or from this "
                                                      "source address.")]
TtlOpt = Annotated[Optional[int], typer.Option("-t", "--ttl", min=1, max=255, show_default=False,
                                               help="IP time to live (hop limit) of requests.")]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="Print the summary only.")]
StampOpt = Annotated[bool, typer.Option("-D", "--timestamp",
                                        help="Start each line with the Unix time, as ping -D.")]
PassiveOpt = Annotated[bool, typer.Option("--passive", help="Send nothing; time the echoes of "
                                                            "other processes (-p, -n select "
                                                            "them).")]
TxPointOpt = Annotated[TxPoint, typer.Option("--tx-point",
                                             help="Where the in-stack RTT starts: at the device's "
                                                  "transmit (after the qdisc) or at the qdisc "
                                                  "enqueue (includes shaping delay).")]
SocketOpt = Annotated[SocketKind, typer.Option("--socket",
                                               help="ICMP socket kind: raw (CAP_NET_RAW), dgram "
                                                    "(ping_group_range) or the first that opens.")]


TX_PROGRAMS = {TxPoint.xmit: "stamp_at_xmit", TxPoint.queue: "stamp_at_queue"}


def open_stack_object(netns: int | None, family: int | None = None, ident: int | None = None,
                      pid: int | None = None, name: str | None = None,
                      tx_point: TxPoint = TxPoint.xmit):
    """superping.bpf.o for echoes in network namespace `netns` (an inode; None: every one) of
    `family` with echo id `ident` (None: any), stamped at `tx_point`; use it in a `with` and
    hand it to a StackTimer."""
    from netkit.engine import netns as namespaces
    from netkit.engine.bpfobject import BPFObject, Filters
    rodata = namespaces.rodata(netns)
    if ident is not None:
        rodata.update(filter_id=True, target_id=ident)
    if family is not None:
        rodata["target_family"] = family
    # The other TX program is loaded but never attached ("manual" and left alone).
    unused = {prog for point, prog in TX_PROGRAMS.items() if point != tx_point}
    return BPFObject("superping", Filters(pid, name), rodata=rodata, manual=unused)


class StackTimer:
    """The BPF side of an open superping object: in-stack RTTs of echo replies, by
    (netns, family, id, seq). Each matched echo goes to `handler` when one is given (passive
    mode), else it is kept for rtt_of()."""

    def __init__(self, obj, handler=None):
        self.obj = obj
        self.events: list = []
        self.received = 0                       # events read off the ring
        self.pending_rtts: dict[tuple[str, int], int] = {}   # (address, seq) -> in-stack RTT
        self.ring = obj.ring_buffer("events", "echo_event", handler or self._keep)

    def _keep(self, event) -> None:
        self.events.append(type(event).from_buffer_copy(event))   # the ring slot is reused
        self.received += 1

    def poll(self, timeout_ms: int = 0) -> list:
        self.ring.poll(timeout_ms)
        taken, self.events = self.events, []
        return taken

    def rtt_of(self, address: str, seq: int, patience_s: float) -> int | None:
        """The in-stack RTT of the reply (address, seq) that userspace has just received.

        Its event was committed before the reply reached the socket, but a ring is read in
        order: a record that another CPU reserved earlier and has not yet committed holds back
        those behind it. So while the kernel has counted more matched replies than have reached
        us (or been lost), wait for them: each such record is committed once its program goes
        on, which on a VM whose vCPU the host took away can be long (a CI run, whose kernel
        RTTs of 24-106 ms on a 1 Mbit/s shaper showed the machine stalled, left a reply
        without its in-stack RTT after a wait of 0.2 s). patience_s only bounds a kernel that
        never commits; the caller gives the reply timeout (-W)."""
        give_up = time.monotonic() + patience_s
        timeout_ms = 0
        while True:
            for e in self.poll(timeout_ms):
                self.pending_rtts[(event_address(e), e.key.seq)] = e.rtt_ns
            rtt = self.pending_rtts.pop((address, seq), None)
            if rtt is not None or time.monotonic() >= give_up or \
                    self.counts()["replies"] <= self.received + self.lost_events():
                return rtt
            timeout_ms = 10

    def hist_slots(self) -> list[int]:
        from netkit.engine.hist import Log2Hist
        return Log2Hist.from_value(self.obj.map("rtt_hist").lookup(0)).slots

    def counts(self) -> dict[str, int]:
        per_cpu = self.obj.map("counts").lookup(0)
        return {k: sum(getattr(c, k) for c in per_cpu)
                for k in ("requests", "replies", "unmatched")}

    def lost_events(self) -> int:
        return self.obj.lost_events()


def event_address(event) -> str:
    from netkit.render.fields import ip_address
    return ip_address(event.key.family, event.key.addr)


def _us(ns: int | None) -> float | None:
    return None if ns is None else round(ns / 1e3, 3)


def _stats_json(values_ns: list[int]) -> dict | None:
    s = stats([v / 1e3 for v in values_ns])
    return None if s is None else {"n": s.n, "min": round(s.min, 3), "avg": round(s.avg, 3),
                                   "max": round(s.max, 3), "mdev": round(s.mdev, 3)}


class ActiveView:
    def __init__(self, out, units, quiet: bool, stamp: bool):
        self.out, self.units, self.quiet, self.stamp = out, units, quiet, stamp

    def _prefix(self) -> str:
        return f"[{time.time():.6f}] " if self.stamp else ""

    def start(self, pinger: Pinger, bpf: bool) -> None:
        if self.out.mode == "json" or self.quiet:
            return
        extra = "" if bpf else " (no in-stack RTT)"
        self.out.line(f"SUPERPING {pinger.dest} ({pinger.address}) {pinger.size}"
                      f"({pinger.size + 8}) bytes of data, {pinger.kind} socket{extra}.")

    def reply(self, r: Reply, stack_ns: int | None) -> None:
        if self.out.mode == "json":
            self.out.record({"type": "reply", "seq": r.seq, "id": r.ident, "from": r.address,
                             "bytes": r.nbytes, "ttl": r.ttl, "user_rtt_us": _us(r.user_rtt_ns),
                             "kernel_rtt_us": _us(r.kernel_rtt_ns), "stack_rtt_us": _us(stack_ns),
                             "dup": r.dup})
            return
        if self.quiet:
            return
        u = self.units
        ttl = f" ttl={r.ttl}" if r.ttl is not None else ""
        self.out.line(f"{self._prefix()}{r.nbytes} bytes from {r.address}: icmp_seq={r.seq}{ttl} "
                      f"user={u.text(r.user_rtt_ns)} {u.name} "
                      f"kernel={u.text(r.kernel_rtt_ns)} {u.name} "
                      f"stack={u.text(stack_ns)} {u.name}" + (" (DUP!)" if r.dup else ""))

    def lost(self, lost: Lost) -> None:
        if self.out.mode == "json":
            self.out.record({"type": "lost", "seq": lost.seq, "id": lost.ident})
        elif not self.quiet:
            self.out.line(f"{self._prefix()}no reply for icmp_seq={lost.seq}")

    def error(self, err: IcmpError) -> None:
        if self.out.mode == "json":
            self.out.record({"type": "error", "seq": err.seq, "id": err.ident, "from": err.address,
                             "icmp_type": err.type, "icmp_code": err.code, "text": err.text})
        elif not self.quiet:
            self.out.line(f"{self._prefix()}From {err.address} icmp_seq={err.seq} {err.text}")

    def summary(self, pinger: Pinger, replies: list[tuple[Reply, int | None]], errors: int,
                elapsed: float, hist: list[int], hist_source: str, bpf_info: dict) -> None:
        good = [(r, s) for r, s in replies if not r.dup]
        dups = len(replies) - len(good)
        sent = pinger.transmitted
        loss = 100.0 * (sent - len(good)) / sent if sent else 0.0
        series = {"user": [r.user_rtt_ns for r, _ in good],
                  "kernel": [r.kernel_rtt_ns for r, _ in good if r.kernel_rtt_ns is not None],
                  "stack": [s for _, s in good if s is not None]}
        if self.out.mode == "json":
            self.out.record({"type": "summary", "destination": pinger.address, "transmitted": sent,
                             "received": len(good), "duplicates": dups, "errors": errors,
                             "loss_pct": round(loss, 3),
                             "time_ms": round(elapsed * 1e3), **{f"{k}_rtt_us": _stats_json(v)
                                                                  for k, v in series.items()},
                             "hist_us": hist_json(hist), "hist_source": hist_source, **bpf_info})
            return
        u = self.units
        self.out.line()
        self.out.line(f"--- {pinger.dest} superping statistics ---")
        extra = ((f", +{dups} duplicates" if dups else "") +
                 (f", +{errors} errors" if errors else ""))
        self.out.line(f"{sent} packets transmitted, {len(good)} received{extra}, "
                      f"{loss:.4g}% packet loss, time {elapsed * 1e3:.0f}ms")
        if not good:
            return
        rows = []
        for name, values in series.items():
            s = stats(values)
            cells = [u.text(None)] * 4 if s is None else [
                u.text(v) for v in (s.min, s.avg, s.max, s.mdev)]
            rows.append([name, len(values)] + cells)
        self.out.table([Column("rtt", 6, "<"), Column("n", 5)] +
                       [Column(f"{h}({u.name})", 10) for h in ("min", "avg", "max", "mdev")], rows)
        if any(hist):
            self.out.line()
            self.out.hist(f"{'in-stack' if hist_source == 'stack' else 'kernel-stamped'} RTT",
                          hist, "us")


class PassiveView:
    def __init__(self, out, units, netns: int | None):
        from netkit.render.output import StreamTable
        self.out, self.units, self.netns = out, units, netns
        # Which namespace an echo is in goes without saying when only one is traced.
        where = [Column("NETNS", 10)] if netns is None else []
        self.table = StreamTable(out, [Column("PID", 7), Column("COMM", 15, "<", style="bold")] +
                                 where + [Column("IP", 2), Column("ADDRESS", 24, "<"),
                                          Column("ID", 5), Column("SEQ", 5),
                                          Column(f"RTT({units.name})", 9, fmt=units.text)])

    def echo(self, e) -> None:
        comm = bytes(e.req.comm).split(b"\0")[0].decode(errors="replace")
        fam = 4 if e.key.family == socket.AF_INET else 6
        if self.out.mode == "json":
            self.out.record({"type": "echo", "pid": e.req.pid, "comm": comm, "netns": e.key.netns,
                             "family": fam, "address": event_address(e), "id": e.key.id,
                             "seq": e.key.seq, "stack_rtt_us": _us(e.rtt_ns)})
        else:
            where = [e.key.netns] if self.netns is None else []
            self.table.row([e.req.pid, comm] + where +
                           [fam, event_address(e), e.key.id, e.key.seq, e.rtt_ns])

    def summary(self, rtts: list[int], hist: list[int], elapsed: float, info: dict) -> None:
        if self.out.mode == "json":
            self.out.record({"type": "summary", "echoes": len(rtts), "netns": self.netns,
                             "time_ms": round(elapsed * 1e3),
                             "stack_rtt_us": _stats_json(rtts), "hist_us": hist_json(hist),
                             "hist_source": "stack", **info})
            return
        self.out.line()
        s = stats(rtts)
        u = self.units
        line = f"{len(rtts)} echoes in {elapsed:.1f} s"
        if s:
            line += (f", in-stack rtt min/avg/max/mdev = {u.text(s.min)}/{u.text(s.avg)}/"
                     f"{u.text(s.max)}/{u.text(s.mdev)} {u.name}")
        self.out.line(line + f"; {info['unmatched_replies']} replies without a seen request")
        self.out.lost("superping", info["lost_events"])
        if any(hist):
            self.out.line()
            self.out.hist("in-stack RTT", hist, "us")


def run_passive(out, units, netns, family, count, deadline, pid, name, tx_point) -> int:
    from netkit.cli.loop import Loop
    view = PassiveView(out, units, netns)
    rtts: list[int] = []

    def on_echo(e) -> None:
        if count is None or len(rtts) < count:
            rtts.append(e.rtt_ns)
            view.echo(e)

    with open_stack_object(netns, family, None, pid, name, tx_point) as obj:
        timer = StackTimer(obj, on_echo)
        # On stderr also with --json: a script can wait for this line to know the probes are on.
        loop = Loop(out, duration=deadline, rings=[timer.ring],
                    until=lambda: count is not None and len(rtts) >= count)
        where = "every network namespace" if netns is None else f"network namespace {netns}"
        elapsed = loop.run(lambda ts, seconds, show: None,
                           f"Tracing ICMP echo round trips in {where}... Hit Ctrl-C to end.")
        view.summary(rtts, timer.hist_slots(), elapsed,
                     {"lost_events": timer.lost_events(),
                      "unmatched_replies": timer.counts()["unmatched"]})
    return 0


def run_active(out, units, pinger: Pinger, count, interval, timeout, deadline,
               quiet, stamp, tx_point) -> int:
    from netkit.engine import netns
    try:
        # Our socket was opened in this thread's namespace: only its stamps are ours.
        stack = open_stack_object(netns.current(), pinger.family, pinger.ident,
                                  tx_point=tx_point).__enter__()
    except NetkitError as exc:
        out.note(f"netkit superping: no in-stack RTT ({exc}); "
                 f"showing user and kernel-stamped RTTs")
        return _ping_session(out, units, pinger, None, count, interval, timeout, deadline,
                             quiet, stamp)
    with stack:
        return _ping_session(out, units, pinger, StackTimer(stack), count, interval, timeout,
                             deadline, quiet, stamp)


def _ping_session(out, units, pinger, timer, count, interval, timeout, deadline,
                  quiet, stamp) -> int:
    from netkit.engine import netns
    from netkit.engine.hist import Log2Hist
    view = ActiveView(out, units, quiet, stamp)
    if not pinger.timestamping:
        out.note("netkit superping: this socket refused SO_TIMESTAMPING; no kernel-stamped RTT")
    view.start(pinger, timer is not None)
    replies: list[tuple[Reply, int | None]] = []
    errors = 0
    started = time.monotonic()
    try:
        for outcome in pinger.run(count, interval, timeout, deadline):
            if isinstance(outcome, Lost):
                view.lost(outcome)
                continue
            if isinstance(outcome, IcmpError):
                errors += 1
                view.error(outcome)
                continue
            stack_ns = None
            if timer is not None and not outcome.dup:
                stack_ns = timer.rtt_of(outcome.address, outcome.seq, patience_s=timeout)
            replies.append((outcome, stack_ns))
            view.reply(outcome, stack_ns)
    except KeyboardInterrupt:
        pass
    elapsed = time.monotonic() - started
    info = {"bpf": timer is not None, "lost_events": None, "unmatched_replies": None,
            "netns": netns.current()}
    if timer is not None:
        hist, source = timer.hist_slots(), "stack"
        info.update(lost_events=timer.lost_events(), unmatched_replies=timer.counts()["unmatched"])
        out.lost("superping", info["lost_events"])
    else:
        hist = Log2Hist.of_values(r.kernel_rtt_ns // 1000 for r, _ in replies
                                  if not r.dup and r.kernel_rtt_ns is not None).slots
        source = "kernel"
    view.summary(pinger, replies, errors, elapsed, hist, source, info)
    return 0 if any(not r.dup for r, _ in replies) else 1


def command(
    destination: DestArg = None,
    count: CountOpt = None,
    interval: IntervalOpt = 1.0,
    size: SizeOpt = 56,
    timeout: TimeoutOpt = 10.0,
    deadline: DeadlineOpt = None,
    interface: IfaceOpt = None,
    ttl: TtlOpt = None,
    ipv4: Ipv4Opt = False,
    ipv6: Ipv6Opt = False,
    quiet: QuietOpt = False,
    timestamp: StampOpt = False,
    milliseconds: MillisecondsOpt = False,
    passive: PassiveOpt = False,
    pid: PidOpt = None,
    name: NameOpt = None,
    netns: NetnsOpt = None,
    all_netns: AllNetnsOpt = False,
    tx_point: TxPointOpt = TxPoint.xmit,
    sock: SocketOpt = SocketKind.auto,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
):
    from netkit.cli.options import family_of, netns_of
    from netkit.render.fields import Units

    family = {0: None, 4: socket.AF_INET, 6: socket.AF_INET6}[family_of(ipv4, ipv6)]
    if passive and destination:
        raise UsageError("--passive sends nothing: give no DESTINATION")
    if not passive and not destination:
        raise UsageError("a DESTINATION is needed (or --passive)")
    if not passive and (pid is not None or name):
        raise UsageError("-p and -n select processes for --passive only")
    if not passive and (netns is not None or all_netns):
        raise UsageError("--netns and --all-netns select namespaces for --passive only (to ping "
                         "from another namespace, run superping in it: ip netns exec)")
    out = open_output(json, no_color, verbose)
    units = Units(milliseconds)
    if passive:
        raise typer.Exit(run_passive(out, units, netns_of(netns, all_netns), family, count,
                                     deadline, pid, name, tx_point))
    with Pinger(destination, family, size, interface, sock.value, ttl) as pinger:
        code = run_active(out, units, pinger, count, interval, timeout, deadline, quiet,
                          timestamp, tx_point)
    raise typer.Exit(code)
