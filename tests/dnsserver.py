"""A small authoritative DNS server for tests: it answers A and AAAA queries for the names it is
given after a chosen delay, answers NXDOMAIN (after the default delay) for every other name, and
counts what it was asked. It never forwards anything anywhere.

    server = DnsServer({"slow.netkit.test": Zone("192.0.2.7", "2001:db8::7", delay=0.3)},
                       default_delay=0.1)
    server.start()            # bound to 127.0.0.1:53 (run it in a network namespace of your own)
    ...
    server.queries            # [(name, qtype), ...] in arrival order
    server.stop()

As a program (handy for trying a tool by hand inside `unshare -n -m`):
    python tests/dnsserver.py --delay 0.1 slow.netkit.test=192.0.2.7,2001:db8::7@0.3
"""
from __future__ import annotations

import argparse
import ipaddress
import socket
import struct
import threading
from dataclasses import dataclass

QTYPE_A, QTYPE_AAAA = 1, 28
RCODE_OK, RCODE_FORMERR, RCODE_NXDOMAIN = 0, 1, 3
FLAG_QR, FLAG_AA, FLAG_RD, FLAG_RA = 0x8000, 0x0400, 0x0100, 0x0080


@dataclass
class Zone:
    ipv4: str | None = None
    ipv6: str | None = None
    delay: float | None = None        # None: the server's default delay


def parse_query(packet: bytes) -> tuple[int, int, str, int, bytes]:
    """(id, flags, name, qtype, raw question) of a query with one question; ValueError if not."""
    if len(packet) < 12:
        raise ValueError("short header")
    ident, flags, qdcount = struct.unpack("!HHH", packet[:6])
    if qdcount != 1 or flags & FLAG_QR:
        raise ValueError("not a single-question query")
    labels, pos = [], 12
    while True:
        if pos >= len(packet):
            raise ValueError("truncated name")
        length = packet[pos]
        pos += 1
        if length == 0:
            break
        if length > 63:
            raise ValueError("compressed or bad label in a question")
        labels.append(packet[pos:pos + length].decode("ascii", "replace"))
        pos += length
    if pos + 4 > len(packet):
        raise ValueError("truncated question")
    qtype, _qclass = struct.unpack("!HH", packet[pos:pos + 4])
    return ident, flags, ".".join(labels).lower(), qtype, packet[12:pos + 4]


def build_answer(ident: int, query_flags: int, question: bytes, rcode: int,
                 records: list[tuple[int, bytes]]) -> bytes:
    """A response echoing the question, with `records` as (type, rdata) for the asked name."""
    flags = FLAG_QR | FLAG_AA | FLAG_RA | (query_flags & FLAG_RD) | rcode
    header = struct.pack("!HHHHHH", ident, flags, 1, len(records), 0, 0)
    answers = b"".join(struct.pack("!HHHIH", 0xC00C, rtype, 1, 0, len(rdata)) + rdata
                       for rtype, rdata in records)          # 0xC00C: the name in the question
    return header + question + answers


class DnsServer:
    def __init__(self, zones: dict[str, Zone], default_delay: float = 0.0,
                 address: str = "127.0.0.1", port: int = 53):
        self.zones = {name.lower().rstrip("."): zone for name, zone in zones.items()}
        self.default_delay = default_delay
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, port))
        self.queries: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._timers: list[threading.Timer] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._running = False

    def start(self) -> "DnsServer":
        self._running = True
        self._thread.start()
        return self

    def stop(self) -> None:
        self._running = False
        self.sock.close()
        for timer in self._timers:
            timer.cancel()

    def reply_for(self, packet: bytes) -> tuple[bytes, float] | None:
        """The answer to one query and how long to hold it back (None: ignore the packet)."""
        try:
            ident, flags, name, qtype, question = parse_query(packet)
        except ValueError:
            if len(packet) >= 2:
                return struct.pack("!HHHHHH", packet[0] << 8 | packet[1], FLAG_QR | RCODE_FORMERR,
                                   0, 0, 0, 0), 0.0
            return None
        with self._lock:
            self.queries.append((name, qtype))
        zone = self.zones.get(name)
        if zone is None:
            return build_answer(ident, flags, question, RCODE_NXDOMAIN, []), self.default_delay
        records = []
        if qtype == QTYPE_A and zone.ipv4:
            records.append((QTYPE_A, ipaddress.IPv4Address(zone.ipv4).packed))
        elif qtype == QTYPE_AAAA and zone.ipv6:
            records.append((QTYPE_AAAA, ipaddress.IPv6Address(zone.ipv6).packed))
        delay = self.default_delay if zone.delay is None else zone.delay
        return build_answer(ident, flags, question, RCODE_OK, records), delay

    def _serve(self) -> None:
        while self._running:
            try:
                packet, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            reply = self.reply_for(packet)
            if reply is None:
                continue
            data, delay = reply
            # Each answer waits on its own timer: glibc asks A and AAAA at once, and both must
            # be held for the same delay, not one after the other.
            timer = threading.Timer(delay, self._send, (data, peer))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()

    def _send(self, data: bytes, peer) -> None:
        try:
            self.sock.sendto(data, peer)
        except OSError:
            pass


def _zone_arg(text: str) -> tuple[str, Zone]:
    """name=ipv4[,ipv6][@delay]"""
    name, _, rest = text.partition("=")
    rest, _, delay = rest.partition("@")
    addrs = [a for a in rest.split(",") if a]
    v4 = next((a for a in addrs if ":" not in a), None)
    v6 = next((a for a in addrs if ":" in a), None)
    return name, Zone(v4, v6, float(delay) if delay else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zones", nargs="*", type=_zone_arg, metavar="NAME=IPV4[,IPV6][@DELAY]")
    parser.add_argument("--delay", type=float, default=0.0, help="default delay (seconds)")
    parser.add_argument("--listen", default="127.0.0.1:53", metavar="ADDR:PORT")
    args = parser.parse_args()
    address, _, port = args.listen.rpartition(":")
    server = DnsServer(dict(args.zones), args.delay, address, int(port)).start()
    print(f"serving {len(args.zones)} names on {args.listen}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
