"""ICMP and ICMPv6 for the probers: addresses to probe, echo requests, the Internet checksum,
and what an ICMP error means (ping's wording, pchar's kind of answer)."""
from __future__ import annotations

import ipaddress
import socket
import struct

from netkit.engine.errors import NetkitError

ICMP_ECHO, ICMP_ECHOREPLY = 8, 0
ICMP6_ECHO, ICMP6_ECHOREPLY = 128, 129
ICMP_ERRORS = {3, 11}           # IPv4 types that quote the offending packet
ICMP6_ERRORS = {1, 2, 3}
ECHO = struct.Struct("!BBHHH")  # type, code, checksum, id, sequence


def checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total >> 16) + (total & 0xFFFF)
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int, size: int, v6: bool, payload: bytes | None = None) -> bytes:
    """An echo request with `size` payload bytes (ping's pattern unless `payload` is given);
    the kernel checksums ICMPv6 and ping sockets itself."""
    if payload is None:
        payload = bytes((i + 0x10) & 0xFF for i in range(size))
    packet = ECHO.pack(ICMP6_ECHO if v6 else ICMP_ECHO, 0, 0, ident, seq & 0xFFFF) + payload
    if v6:
        return packet
    return packet[:2] + struct.pack("!H", checksum(packet)) + packet[4:]


def resolve(dest: str, family: int | None) -> tuple[int, str]:
    """(family, numeric address) of `dest`; a literal address is used as given (an IPv6 scope
    such as fe80::1%eth0 must name an existing interface)."""
    literal, _, scope = dest.partition("%")
    try:
        addr = ipaddress.ip_address(literal)
    except ValueError:
        addr = None
    if addr is not None:
        fam = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
        if family not in (None, fam):
            raise NetkitError(f"{dest} is not an IPv{4 if family == socket.AF_INET else 6} "
                              "address")
        if scope:
            if fam != socket.AF_INET6:
                raise NetkitError(f"{dest}: only IPv6 addresses take a %scope")
            try:
                socket.if_nametoindex(scope)
            except OSError:
                if not scope.isdigit():
                    raise NetkitError(f"{dest}: no interface {scope}") from None
        return fam, dest
    try:
        infos = socket.getaddrinfo(dest, None, family or socket.AF_UNSPEC, socket.SOCK_RAW)
    except socket.gaierror as exc:
        raise NetkitError(f"{dest}: {exc.strerror}") from None
    except UnicodeError:
        raise NetkitError(f"{dest!r} is not a host name") from None
    fam, *_rest, sockaddr = infos[0]
    return fam, sockaddr[0]


# (is IPv6, type, code or None for any code) -> ping's wording
ERROR_TEXT = {
    (False, 3, 0): "Destination Net Unreachable", (False, 3, 1): "Destination Host Unreachable",
    (False, 3, 2): "Destination Protocol Unreachable",
    (False, 3, 3): "Destination Port Unreachable",
    (False, 3, 4): "Frag needed", (False, 3, 13): "Communication prohibited by filter",
    (False, 3, None): "Destination Unreachable", (False, 11, None): "Time to live exceeded",
    (True, 1, 0): "Destination unreachable: No route",
    (True, 1, 1): "Destination unreachable: Administratively prohibited",
    (True, 1, 3): "Destination unreachable: Address unreachable",
    (True, 1, None): "Destination unreachable", (True, 2, None): "Packet too big",
    (True, 3, None): "Time exceeded: Hop limit",
}


def error_text(v6: bool, itype: int, code: int) -> str:
    """How ping words an ICMP error."""
    return (ERROR_TEXT.get((v6, itype, code)) or ERROR_TEXT.get((v6, itype, None))
            or f"ICMP type {itype} code {code}")


# ICMP type/code -> the kind of answer a probe got, for IPv4 and IPv6
_V4_KINDS = {(11, 0): "time-exceeded", (3, 3): "port-unreachable", (3, 0): "net-unreachable",
             (3, 1): "host-unreachable", (3, 13): "prohibited", (3, 10): "prohibited",
             (3, 9): "prohibited", (3, 4): "too-big"}
_V6_KINDS = {(3, 0): "time-exceeded", (1, 4): "port-unreachable", (1, 0): "net-unreachable",
             (1, 3): "host-unreachable", (1, 1): "prohibited"}


def answer_kind(v6: bool, itype: int, code: int) -> str:
    """time-exceeded, port-unreachable, net-/host-unreachable, prohibited, too-big,
    unreachable (another code), or icmp-TYPE/CODE."""
    kinds = _V6_KINDS if v6 else _V4_KINDS
    if (itype, code) in kinds:
        return kinds[(itype, code)]
    if v6 and itype == 2:
        return "too-big"
    return "unreachable" if itype == (1 if v6 else 3) else f"icmp-{itype}/{code}"
