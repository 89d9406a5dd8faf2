"""ICMP echo prober for superping: ping's probes, timed twice per reply.

Each reply carries
  user_rtt_ns   — sendto() call to recvmsg() return, as a ping program sees it (includes the
                  scheduler's and Python's delays on both ends);
  kernel_rtt_ns — software TX stamp of the request (driver hands it to the device) to software
                  RX stamp of the reply (it enters the stack), from SO_TIMESTAMPING.
The socket is a raw ICMP socket when we have CAP_NET_RAW, else an ICMP datagram ("ping")
socket, which the kernel allows when our group is in net.ipv4.ping_group_range. On a datagram
socket the kernel writes its own echo id (the socket's port) and filters replies for us.
"""
from __future__ import annotations

import errno
import ipaddress
import math
import os
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Iterator

from netkit.engine import signals
from netkit.engine.errors import NetkitError
from netkit.net import icmp, timestamps
from netkit.net.icmp import (ECHO, ICMP6_ECHO, ICMP6_ECHOREPLY, ICMP6_ERRORS,
                             ICMP_ECHO, ICMP_ECHOREPLY, ICMP_ERRORS, echo_request, resolve)

IP_RECVTTL = 12            # IPv4 TTL of received datagrams as a control message (IP_TTL type)
IPV6_RECVHOPLIMIT = 51
IPV6_HOPLIMIT = 52
ICMP6_FILTER = 1           # raw ICMPv6 socket option: a 256-bit "block this type" mask


class PingError(NetkitError):
    """A problem the user can fix (bad address, no permission, no such interface)."""


@dataclass
class Reply:
    seq: int
    ident: int
    address: str
    nbytes: int                 # ICMP bytes received (header + payload), as ping prints
    ttl: int | None
    user_rtt_ns: int
    kernel_rtt_ns: int | None   # None if a stamp is missing
    tx_ns: int | None           # kernel TX stamp of the request (CLOCK_REALTIME)
    rx_ns: int | None           # kernel RX stamp of the reply (CLOCK_REALTIME)
    dup: bool = False


@dataclass
class Lost:
    seq: int
    ident: int


@dataclass
class IcmpError:
    """An ICMP error about one of our requests (unreachable, time exceeded), as ping's "From"."""
    seq: int
    ident: int
    address: str                # who sent the error
    type: int
    code: int

    @property
    def text(self) -> str:
        return icmp.error_text(self.v6, self.type, self.code)

    @property
    def v6(self) -> bool:
        return ":" in self.address


@dataclass
class _Pending:
    sent_ns: int                # perf_counter_ns() just before sendto()
    deadline_ns: int
    tx_ns: int | None = None


@dataclass
class Pinger:
    """One echo session towards `dest`: open(), then run() yields a Reply, an IcmpError or a
    Lost for each request."""
    dest: str
    family: int | None = None           # socket.AF_INET / AF_INET6, or None to follow dest
    size: int = 56
    iface: str | None = None            # device name (SO_BINDTODEVICE) or a source address
    sock_type: str = "auto"             # "raw", "dgram" or "auto" (raw if permitted)
    ttl: int | None = None
    address: str = field(init=False, default="")
    ident: int = field(init=False, default=0)
    kind: str = field(init=False, default="")
    timestamping: bool = field(init=False, default=False)
    transmitted: int = field(init=False, default=0)     # requests sent by run() so far
    _sock: socket.socket | None = field(init=False, default=None, repr=False)

    @property
    def v6(self) -> bool:
        return self.family == socket.AF_INET6

    def open(self) -> "Pinger":
        if not 0 <= self.size <= 65507:
            raise PingError(f"invalid packet size {self.size}: must be 0..65507")
        self.family, self.address = resolve(self.dest, self.family)
        proto = socket.IPPROTO_ICMPV6 if self.v6 else socket.IPPROTO_ICMP
        kinds = {"auto": ("raw", "dgram"), "raw": ("raw",), "dgram": ("dgram",)}[self.sock_type]
        last = None
        for kind in kinds:
            try:
                stype = socket.SOCK_RAW if kind == "raw" else socket.SOCK_DGRAM
                self._sock = socket.socket(self.family, stype, proto)
                self.kind = kind
                break
            except PermissionError as exc:
                last = exc
        if self._sock is None:
            raise PingError("cannot open an ICMP socket: no CAP_NET_RAW, and this group is not in "
                            f"net.ipv4.ping_group_range ({last.strerror if last else 'denied'})")
        self._configure()
        return self

    def _configure(self) -> None:
        sock = self._sock
        source = ""
        if self.iface:
            try:
                ipaddress.ip_address(self.iface)
                source = self.iface
            except ValueError:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.iface.encode())
                except OSError as exc:
                    raise PingError(f"interface {self.iface}: {exc.strerror}") from None
        try:
            if self.kind == "dgram" or source:
                sock.bind((source, 0))
        except OSError as exc:
            raise PingError(f"cannot bind to {source or 'any address'}: {exc.strerror}") from None
        # On a datagram socket the kernel uses the bound port as the echo id.
        self.ident = sock.getsockname()[1] if self.kind == "dgram" else os.getpid() & 0xFFFF
        if self.v6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
            if self.kind == "raw":      # let only echo replies and errors through to this socket
                block = [0xFFFFFFFF] * 8
                for t in ICMP6_ERRORS | {ICMP6_ECHOREPLY}:
                    block[t >> 5] &= ~(1 << (t & 31))
                sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("=8I", *block))
            else:                       # ICMP errors of a ping socket come by the error queue
                sock.setsockopt(socket.IPPROTO_IPV6, timestamps.IPV6_RECVERR, 1)
            if self.ttl is not None:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, self.ttl)
        else:
            if self.kind == "dgram":
                sock.setsockopt(socket.SOL_IP, IP_RECVTTL, 1)
                sock.setsockopt(socket.SOL_IP, timestamps.IP_RECVERR, 1)
            if self.ttl is not None:
                sock.setsockopt(socket.SOL_IP, socket.IP_TTL, self.ttl)
        try:
            timestamps.enable(sock)             # waits until RX stamping is really on
            self.timestamping = True
        except timestamps.TimestampingError:
            self.timestamping = False
        sock.setblocking(False)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "Pinger":
        return self.open() if self._sock is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the session ---------------------------------------------------------------------------

    def run(self, count: int | None = None, interval: float = 1.0,
            timeout: float = 10.0,
            deadline: float | None = None) -> Iterator[Reply | IcmpError | Lost]:
        """Send `count` requests (forever if None) `interval` s apart; yield each outcome.

        A request unanswered `timeout` s after its send is Lost; a reply to an answered
        request is yielded with dup=True. Ends when every request is answered or lost, or
        `deadline` s after the start (ping's -w) whatever is still outstanding.
        """
        sock = self._sock
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLERR)
        pending: dict[int, _Pending] = {}
        answered: dict[int, int] = {}    # seq -> its send time, to spot duplicates
        key_to_seq: dict[int, int] = {}   # OPT_ID key of a send -> its sequence number
        sent = 0
        next_key = 0                      # the kernel numbers successful sends only
        next_send = time.perf_counter_ns()
        interval_ns = int(interval * 1e9)
        timeout_ns = int(timeout * 1e9)
        stop_ns = None if deadline is None else next_send + int(deadline * 1e9)
        while True:
            now = time.perf_counter_ns()
            if stop_ns is not None and now >= stop_ns:
                return
            if (count is None or sent < count) and now >= next_send:
                seq = (sent + 1) & 0xFFFF
                if self._send(seq, pending, timeout_ns) and self.timestamping:
                    key_to_seq[next_key] = seq
                    next_key += 1
                sent += 1
                self.transmitted = sent
                next_send += interval_ns
                answered.pop(seq, None)       # a wrapped sequence number starts afresh
                continue
            for seq in [s for s, p in pending.items() if p.deadline_ns <= now]:
                del pending[seq]
                yield Lost(seq, self.ident)
            if count is not None and sent >= count and not pending:
                return
            waits = [p.deadline_ns for p in pending.values()]
            if count is None or sent < count:
                waits.append(next_send)
            if stop_ns is not None:
                waits.append(stop_ns)
            wait_ms = max(0, math.ceil((min(waits) - now) / 1e6))
            events = 0
            signals.raise_if_lost()
            for _fd, ev in poller.poll(wait_ms):
                events |= ev
            if events & select.POLLERR:
                yield from self._take_tx_stamps(pending, key_to_seq)
            if events & select.POLLIN:
                yield from self._receive(pending, answered, key_to_seq)

    def _send(self, seq: int, pending: dict, timeout_ns: int) -> bool:
        packet = echo_request(self.ident, seq, self.size, self.v6)
        t0 = time.perf_counter_ns()
        try:
            self._sock.sendto(packet, (self.address, 0))
        except BlockingIOError:
            pending[seq] = _Pending(t0, t0 + timeout_ns)   # queue full: it will count as lost
            return False
        except OSError as exc:
            if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL,
                             errno.EINVAL):
                raise PingError(f"sendto {self.address}: {exc.strerror}") from None
            pending[seq] = _Pending(t0, t0 + timeout_ns)
            return False
        pending[seq] = _Pending(t0, t0 + timeout_ns)
        return True

    def _take_tx_stamps(self, pending: dict, key_to_seq: dict) -> Iterator[IcmpError]:
        """Drain the error queue: TX stamps go to their requests; ICMP errors (datagram
        sockets only) quote our echo header and are yielded."""
        for rec in timestamps.read_error_queue(self._sock):
            if rec.origin in (timestamps.ORIGIN_ICMP, timestamps.ORIGIN_ICMP6):
                if len(rec.payload) >= ECHO.size:
                    seq = ECHO.unpack_from(rec.payload)[4]
                    if pending.pop(seq, None) is not None:
                        yield IcmpError(seq, self.ident, rec.offender or "?", rec.type, rec.code)
                continue
            if not rec.is_tx_stamp or rec.kind != "snd":
                continue
            seq = key_to_seq.pop(rec.key, None)
            if seq in pending and pending[seq].tx_ns is None:
                pending[seq].tx_ns = rec.ns

    def _receive(self, pending: dict, answered: dict,
                 key_to_seq: dict) -> Iterator[Reply | IcmpError]:
        while True:
            try:
                got = timestamps.recv(self._sock, 65536 + 64)
            except (BlockingIOError, InterruptedError):
                return
            t1 = time.perf_counter_ns()
            parsed = self._parse(got)
            if isinstance(parsed, IcmpError):
                if pending.pop(parsed.seq, None) is not None:
                    yield parsed
                continue
            if parsed is None:
                continue
            seq, nbytes, ttl, src = parsed
            if seq in pending:
                if pending[seq].tx_ns is None:    # its TX stamp may still sit in the queue
                    yield from self._take_tx_stamps(pending, key_to_seq)
                p = pending.pop(seq, None)
                if p is None:                     # an ICMP error settled it meanwhile
                    continue
                krtt = got.rx_ns - p.tx_ns if got.rx_ns and p.tx_ns else None
                reply = Reply(seq, self.ident, src, nbytes, ttl, t1 - p.sent_ns, krtt,
                              p.tx_ns, got.rx_ns)
                answered[seq] = p.sent_ns
                yield reply
            elif seq in answered:
                yield Reply(seq, self.ident, src, nbytes, ttl, t1 - answered[seq], None,
                            None, got.rx_ns, dup=True)

    def _parse(self, got: timestamps.Received):
        """(seq, icmp bytes, ttl, source) of an echo reply meant for us, else None."""
        data = got.data
        ttl = None
        if not self.v6 and self.kind == "raw":
            if len(data) < 20:
                return None
            ttl = data[8]
            data = data[(data[0] & 0x0F) * 4:]
        for level, ctype, cdata in got.ancdata:
            if (level, ctype) in ((socket.SOL_IP, socket.IP_TTL),
                                  (socket.IPPROTO_IPV6, IPV6_HOPLIMIT)) and len(cdata) >= 4:
                ttl = struct.unpack("=i", cdata[:4])[0]
        if len(data) < ECHO.size:
            return None
        rtype, code, _sum, rid, rseq = ECHO.unpack_from(data)
        src = got.address[0].split("%")[0]
        if self.kind == "raw" and rtype in (ICMP6_ERRORS if self.v6 else ICMP_ERRORS):
            seq = self._quoted_seq(data[8:])
            return None if seq is None else IcmpError(seq, self.ident, src, rtype, code)
        if rtype != (ICMP6_ECHOREPLY if self.v6 else ICMP_ECHOREPLY):
            return None
        if self.kind == "raw" and (rid != self.ident or src != self._peer()):
            return None                           # a raw socket sees every echo reply
        return rseq, len(data), ttl, src

    def _quoted_seq(self, quote: bytes) -> int | None:
        """The sequence number of our request quoted in an ICMP error, else None."""
        if self.v6:
            if len(quote) < 48 or quote[6] != socket.IPPROTO_ICMPV6:
                return None
            dst, echo = socket.inet_ntop(socket.AF_INET6, quote[24:40]), quote[40:48]
            want = ICMP6_ECHO
        else:
            ihl = (quote[0] & 0x0F) * 4 if quote else 0
            if ihl < 20 or len(quote) < ihl + 8 or quote[9] != socket.IPPROTO_ICMP:
                return None
            dst, echo = socket.inet_ntop(socket.AF_INET, quote[16:20]), quote[ihl:ihl + 8]
            want = ICMP_ECHO
        qtype, _c, _s, qid, qseq = ECHO.unpack(echo)
        if qtype != want or qid != self.ident or dst != self._peer():
            return None
        return qseq

    def _peer(self) -> str:
        return str(ipaddress.ip_address(self.address.split("%")[0]))


@dataclass(frozen=True)
class Stats:
    n: int
    min: float
    avg: float
    max: float
    mdev: float     # ping's mdev: sqrt(mean(x^2) - mean(x)^2)


def stats(values: list[float]) -> Stats | None:
    if not values:
        return None
    n = len(values)
    mean = sum(values) / n
    mean_sq = sum(v * v for v in values) / n
    return Stats(n, min(values), mean, max(values), math.sqrt(max(0.0, mean_sq - mean * mean)))
