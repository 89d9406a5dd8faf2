"""pchar's probes: one probe at a time with a TTL and a size (UDP, ICMP echo or TCP SYN), its
answer matched exactly and timed by kernel timestamps (netkit.net.timestamps): TX when the driver
takes the probe, RX when the answer enters the stack. A UDP probe carries its sequence number
in its payload (quoted back in the ICMP error), an echo as the ICMP sequence, a SYN as its TCP
sequence number."""
from __future__ import annotations

import errno
import os
import random
import select
import socket
import struct
import time
from dataclasses import dataclass

from netkit.engine import signals
from netkit.engine.errors import NetkitError
from netkit.net import timestamps
from netkit.net.icmp import answer_kind, checksum, resolve

MAGIC = b"NKpc"
IP_RECVERR, IPV6_RECVERR = 11, 25
IPV6_CHECKSUM = 7
# DF set, path-MTU cache ignored: a probe leaves at exactly its size or fails at send
IP_MTU_DISCOVER, IPV6_MTU_DISCOVER, PMTUDISC_PROBE = 10, 23, 3
IP_HDR, IP6_HDR, UDP_HDR, ICMP_HDR, TCP_HDR = 20, 40, 8, 8, 20
_PROBE_ID = struct.Struct("!4sI")   # MAGIC, sequence number


class PcharError(NetkitError):
    """A problem the user can act on (no route, bad address, no permission)."""


@dataclass
class Sample:
    """One probe: what was sent, and what came back (rtt_ns None: no answer in time)."""
    ttl: int
    size: int                       # IP bytes of the probe
    seq: int
    rtt_ns: int | None = None
    reply_size: int = 0             # IP bytes of the answer
    responder: str | None = None
    kind: str = ""                  # time-exceeded, port-unreachable, echo-reply, tcp-reset,
                                    # net-unreachable, host-unreachable, prohibited, unreachable,
                                    # too-big (the next link's MTU is below the probe's size)
    mtu: int = 0                    # the MTU a too-big answer reports

    @property
    def reached(self) -> bool:
        """The destination itself answered (the path ends at this TTL)."""
        return self.kind in ("port-unreachable", "echo-reply", "tcp-reset", "tcp-synack")

    @property
    def fatal(self) -> bool:
        return self.kind in ("net-unreachable", "host-unreachable", "prohibited", "unreachable",
                             "too-big")


class Prober:
    """Sends one probe at a time towards `dest` with a given TTL and size, and returns its
    Sample. Subclasses build the probe and recognise its answer."""
    header = 0                      # bytes of IP + transport header in a probe
    id_bytes = 0                    # payload bytes the probe needs to carry its number

    def __init__(self, dest: str, family: int | None = None, port: int | None = None,
                 timeout: float = 3.0, source: str | None = None):
        self.family, self.address = resolve(dest, family)
        self.v6 = self.family == socket.AF_INET6
        self.port = port
        self.timeout = timeout
        self.source = source
        self.seq = random.randrange(1 << 16)
        self.sent = 0
        self.unstamped = 0              # answers without kernel stamps (counted as lost)
        self._tx_socks: list[socket.socket] = []
        self._rx_socks: list[socket.socket] = []
        self._sends: dict[int, int] = {}   # OPT_ID counter per TX socket (fileno -> sends)
        self.src = self._route_source()
        try:
            self.open()
        except PermissionError:
            raise PcharError("raw sockets need root (CAP_NET_RAW)") from None
        except OSError as exc:
            raise PcharError(f"cannot open probe sockets: {exc.strerror}") from None

    @property
    def min_size(self) -> int:
        return self.header + self.id_bytes

    def _route_source(self) -> str:
        """The local address the kernel routes from (a UDP connect sends nothing); fails
        early with "no route" before any probe."""
        s = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            if self.source:
                s.bind((self.source, 0))
            s.connect((self.address, self.port or 9))
            return s.getsockname()[0]
        except OSError as exc:
            if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                raise PcharError(f"no route to {self.address}") from None
            raise PcharError(f"{self.source or self.address}: {exc.strerror}") from None
        finally:
            s.close()

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        for s in self._tx_socks + self._rx_socks:
            s.close()
        self._tx_socks, self._rx_socks = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _socket(self, stype: int, proto: int, tx: bool) -> socket.socket:
        s = socket.socket(self.family, stype, proto)
        s.setblocking(False)
        timestamps.enable(s)
        if self.source:
            s.bind((self.source, 0))
        (self._tx_socks if tx else self._rx_socks).append(s)
        if tx:
            self._sends[s.fileno()] = 0
            if self.v6:
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, PMTUDISC_PROBE)
            else:
                s.setsockopt(socket.SOL_IP, IP_MTU_DISCOVER, PMTUDISC_PROBE)
        return s

    def _set_ttl(self, sock: socket.socket, ttl: int) -> None:
        if self.v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
        else:
            sock.setsockopt(socket.SOL_IP, socket.IP_TTL, ttl)

    def _sendto(self, sock: socket.socket, data: bytes, port: int = 0) -> int:
        """Send and return the OPT_ID key the kernel gives this send's TX stamp.

        An ICMP error that answered an earlier probe can linger as the socket's pending error
        and fail the next send with it (ECONNREFUSED for a port-unreachable): clear it first,
        and send again once if one slipped in between; a real local error fails twice."""
        for attempt in (1, 2):
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            try:
                sock.sendto(data, (self.address, port))
                break
            except OSError as exc:
                if attempt == 2:
                    self._send_failed(exc, data)
        key = self._sends[sock.fileno()]
        self._sends[sock.fileno()] = key + 1
        return key

    def _send_failed(self, exc: OSError, data: bytes):
        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            raise PcharError(f"no route to {self.address}") from None
        if exc.errno == errno.EMSGSIZE:
            raise PcharError(f"a probe of {len(data) + self.header} bytes is larger than "
                             "the MTU of the outgoing device (lower -m)") from None
        raise PcharError(f"send to {self.address}: {exc.strerror}") from None

    def probe(self, ttl: int, size: int, into: list[Sample] | None = None) -> Sample:
        """Send one probe of `size` IP bytes with `ttl`; wait up to the timeout for its answer.
        The sample goes into `into` as soon as it is sent, so an interrupted wait still
        counts it (as unanswered)."""
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        sample = Sample(ttl, size, self.seq)
        tx_sock, key = self._send(ttl, size, self.seq)
        self.sent += 1
        if into is not None:
            into.append(sample)
        tx_ns = rx_ns = None
        answered = last_pass = False
        deadline = time.monotonic() + self.timeout
        poller = select.poll()
        for s in self._tx_socks + self._rx_socks:
            poller.register(s, select.POLLIN | select.POLLERR)
        while True:
            if not answered:
                signals.raise_if_lost()
                left = deadline - time.monotonic()
                if left <= 0 or not poller.poll(max(1, int(left * 1000))):
                    return sample                               # lost
            for s in self._tx_socks:
                for rec in timestamps.read_error_queue(s, 4096):
                    if rec.is_tx_stamp:
                        if s is tx_sock and rec.key == key and (tx_ns is None or rec.kind == "snd"):
                            tx_ns = rec.ns
                    elif not answered and self._match_error(rec, sample):
                        answered, rx_ns = True, rec.rx_ns
            for s in self._tx_socks + self._rx_socks:
                while not answered:
                    try:
                        got = timestamps.recv(s, 4096, socket.MSG_DONTWAIT)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:           # a pending ICMP error reported on a plain recv
                        break
                    if self._match_packet(s, got, sample):
                        answered, rx_ns = True, got.rx_ns
            # The TX stamp is queued when the probe leaves, long before its answer returns:
            # once answered, one more pass over the error queue has it if it exists at all.
            if answered:
                if tx_ns is not None or rx_ns is None or last_pass:
                    break
                last_pass = True
        if tx_ns is None or rx_ns is None:          # the kernel did not stamp it: no timing
            self.unstamped += 1
            sample.kind, sample.reply_size, sample.responder = "", 0, None
            return sample
        sample.rtt_ns = rx_ns - tx_ns
        return sample

    # Subclasses fill these in.
    def _send(self, ttl: int, size: int, seq: int) -> tuple[socket.socket, int]:
        raise NotImplementedError

    def _match_error(self, rec: timestamps.ErrQueueRecord, sample: Sample) -> bool:
        return False

    def _match_packet(self, sock: socket.socket, got: timestamps.Received, sample: Sample) -> bool:
        return False

    def _icmp_answer(self, data: bytes, sample: Sample, src: str,
                     quoted_match) -> bool:
        """Parse an ICMP(v6) packet from a raw socket (IPv4: with its IP header); when it is an
        error quoting our probe (quoted_match(transport header bytes) is True) or an echo reply
        to it, fill `sample` in."""
        if self.v6:
            icmp, reply_size = data, IP6_HDR + len(data)
        else:
            if len(data) < IP_HDR:
                return False
            icmp, reply_size = data[(data[0] & 0x0F) * 4:], len(data)
        if len(icmp) < ICMP_HDR:
            return False
        itype, code = icmp[0], icmp[1]
        if itype in ((129,) if self.v6 else (0,)):
            if not quoted_match(icmp, echo=True):
                return False
            sample.kind = "echo-reply"
        elif itype in ((1, 2, 3) if self.v6 else (3, 11)):
            inner = icmp[ICMP_HDR:]
            if self.v6:
                if len(inner) < IP6_HDR:
                    return False
                proto, transport = inner[6], inner[IP6_HDR:]
            else:
                if len(inner) < IP_HDR:
                    return False
                proto, transport = inner[9], inner[(inner[0] & 0x0F) * 4:]
            if proto != self._proto or not quoted_match(transport, echo=False):
                return False
            sample.kind = answer_kind(self.v6, itype, code)
            sample.mtu = struct.unpack_from("!I", icmp, 4)[0] if self.v6 else \
                struct.unpack_from("!H", icmp, 6)[0]
        else:
            return False
        sample.reply_size, sample.responder = reply_size, src
        return True


class UdpProber(Prober):
    """UDP datagrams to a high port (pchar's default). ICMP errors and TX stamps both arrive on
    the socket's error queue (IP_RECVERR); the quoted payload holds the probe's number."""
    _proto = socket.IPPROTO_UDP
    id_bytes = _PROBE_ID.size

    def open(self) -> None:
        self.header = (IP6_HDR if self.v6 else IP_HDR) + UDP_HDR
        self.port = self.port or 32768
        self.sock = self._socket(socket.SOCK_DGRAM, 0, tx=True)
        if self.v6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        else:
            self.sock.setsockopt(socket.SOL_IP, IP_RECVERR, 1)

    def _send(self, ttl, size, seq):
        self._set_ttl(self.sock, ttl)
        payload = _PROBE_ID.pack(MAGIC, seq).ljust(size - self.header, b"\0")
        return self.sock, self._sendto(self.sock, payload, self.port)

    def _match_error(self, rec, sample):
        if rec.origin not in (timestamps.ORIGIN_ICMP, timestamps.ORIGIN_ICMP6):
            return False
        if rec.payload[:_PROBE_ID.size] != _PROBE_ID.pack(MAGIC, sample.seq):
            return False
        # the error queue hands back what the ICMP message quoted after the UDP header
        ip = IP6_HDR if self.v6 else IP_HDR
        sample.reply_size = ip + ICMP_HDR + self.header + len(rec.payload)
        sample.responder = rec.offender
        sample.kind = answer_kind(self.v6, rec.type, rec.code)
        sample.mtu = rec.info if sample.kind == "too-big" else 0
        return True


class IcmpProber(Prober):
    """ICMP echo requests on a raw socket, which also receives the replies and the errors."""
    _proto = socket.IPPROTO_ICMP

    def open(self) -> None:
        self.header = (IP6_HDR if self.v6 else IP_HDR) + ICMP_HDR
        if self.v6:
            self._proto = socket.IPPROTO_ICMPV6
        self.ident = (os.getpid() ^ random.randrange(1 << 16)) & 0xFFFF
        self.sock = self._socket(socket.SOCK_RAW, self._proto, tx=True)

    def _send(self, ttl, size, seq):
        self._set_ttl(self.sock, ttl)
        head = struct.pack("!BBHHH", 128 if self.v6 else 8, 0, 0, self.ident, seq & 0xFFFF)
        packet = head + bytes(size - self.header)
        if not self.v6:   # the kernel checksums ICMPv6 for us
            packet = packet[:2] + struct.pack("!H", checksum(packet)) + packet[4:]
        return self.sock, self._sendto(self.sock, packet)

    def _match_packet(self, sock, got, sample):
        want = struct.pack("!HH", self.ident, sample.seq & 0xFFFF)
        echo_type = 128 if self.v6 else 8

        def ours(hdr: bytes, echo: bool) -> bool:
            return len(hdr) >= 8 and hdr[4:8] == want and (echo or hdr[0] == echo_type)
        return self._icmp_answer(got.data, sample, got.address[0], ours)


class TcpProber(Prober):
    """TCP SYNs (with padding as payload) on a raw socket; a closed port answers RST, an open
    one SYN-ACK (our kernel then resets it), routers time-exceeded on a raw ICMP socket."""
    _proto = socket.IPPROTO_TCP

    def open(self) -> None:
        self.header = (IP6_HDR if self.v6 else IP_HDR) + TCP_HDR
        self.port = self.port or 80
        self.sock = self._socket(socket.SOCK_RAW, socket.IPPROTO_TCP, tx=True)
        if self.v6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_CHECKSUM, 16)
        self.icmp = self._socket(socket.SOCK_RAW, socket.IPPROTO_ICMPV6 if self.v6
                                 else socket.IPPROTO_ICMP, tx=False)
        self.sport = random.randrange(20000, 60000)

    def _send(self, ttl, size, seq):
        self._set_ttl(self.sock, ttl)
        payload = bytes(size - self.header)
        tcp = struct.pack("!HHIIBBHHH", self.sport, self.port, seq, 0, 5 << 4, 0x02, 65535, 0, 0)
        if not self.v6:   # the IPv4 checksum covers our source address (self.src, the routed one)
            pseudo = (socket.inet_aton(self.src) + socket.inet_aton(self.address)
                      + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp) + len(payload)))
            csum = checksum(pseudo + tcp + payload)
            tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
        return self.sock, self._sendto(self.sock, tcp + payload)

    def _quoted(self, hdr: bytes, echo: bool, sample: Sample) -> bool:
        return (len(hdr) >= 8 and hdr[:8] == struct.pack("!HHI", self.sport, self.port,
                                                          sample.seq))

    def _match_packet(self, sock, got, sample):
        if sock is self.icmp:
            return self._icmp_answer(got.data, sample, got.address[0],
                                     lambda hdr, echo: not echo and self._quoted(hdr, echo, sample))
        data = got.data if self.v6 else got.data[(got.data[0] & 0x0F) * 4:]
        if len(data) < TCP_HDR:
            return False
        sport, dport, _seq, ack, _off, flags = struct.unpack_from("!HHIIBB", data)
        payload = sample.size - self.header
        if (sport, dport) != (self.port, self.sport) or \
                ack not in ((sample.seq + 1) & 0xFFFFFFFF, (sample.seq + 1 + payload) & 0xFFFFFFFF):
            return False
        if flags & 0x04:
            sample.kind = "tcp-reset"
        elif flags & 0x12 == 0x12:
            sample.kind = "tcp-synack"
        else:
            return False
        sample.reply_size = (IP6_HDR if self.v6 else 0) + len(got.data)
        sample.responder = got.address[0]
        return True


PROBERS = {"udp": UdpProber, "icmp": IcmpProber, "tcp": TcpProber}
