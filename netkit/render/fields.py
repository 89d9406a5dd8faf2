"""How netkit writes the fields its tools share: addresses and ports, command names, errno
names, times (of day, ISO 8601 for JSON, kernel monotonic stamps), and durations in the unit
the user chose (-m)."""
from __future__ import annotations

import errno
import socket
import time
from datetime import datetime

AF_INET, AF_INET6 = 2, 10


def is_v6(family: int) -> bool:
    """A family as BPF programs store it: AF_INET/AF_INET6 (2/10) or the IP version (4/6)."""
    return family in (AF_INET6, 6)


_V4_MAPPED = b"\0" * 10 + b"\xff\xff"


def ip_address(family: int, raw: bytes, unmap: bool = True) -> str:
    """The address in `raw` (IPv4 in its first 4 bytes) as text; an IPv4-mapped IPv6 address
    reads as IPv4 unless unmap is false."""
    raw = bytes(raw)
    if is_v6(family):
        if unmap and raw[:12] == _V4_MAPPED:
            return socket.inet_ntop(socket.AF_INET, raw[12:16])
        return socket.inet_ntop(socket.AF_INET6, raw[:16])
    return socket.inet_ntop(socket.AF_INET, raw[:4])


def with_port(address: str, port: int) -> str:
    """ADDR:PORT, an IPv6 address in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def ip_version(family: int) -> str:
    return "IPv6" if is_v6(family) else "IPv4"


def comm(raw) -> str:
    """A task's command name from a C char array (NUL-terminated, maybe not UTF-8)."""
    return bytes(raw).split(b"\0")[0].decode(errors="replace")


def errno_name(code: int) -> str:
    """ECONNREFUSED for 111; E<n> for a number Python does not know."""
    return errno.errorcode.get(code, f"E{code}")


# -- time ------------------------------------------------------------------------------------------
def clock(ts: float | None = None) -> str:
    """Time of day, HH:MM:SS (now when ts is None)."""
    return time.strftime("%H:%M:%S", time.localtime(ts))


def clock_ms(ts: float) -> str:
    """Time of day with milliseconds, HH:MM:SS.mmm."""
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S.%f")[:-3]


def iso(ts: float | None = None, timespec: str = "milliseconds") -> str:
    """The `ts` of JSON records: local time, ISO 8601 with its UTC offset (now when None)."""
    when = datetime.now() if ts is None else datetime.fromtimestamp(ts)
    return when.astimezone().isoformat(timespec=timespec)


class KernelClock:
    """Turns bpf_ktime_get_ns() stamps (CLOCK_MONOTONIC) into wall-clock seconds."""

    def __init__(self):
        self.offset = time.time() - time.monotonic()

    def wall(self, ns: int) -> float:
        return ns / 1e9 + self.offset


class Units:
    """Durations in microseconds, or milliseconds with -m: `name` for headers and JSON keys
    (LAT(us), latency_us), `value` for JSON, `text` for columns, `-` for a missing value."""

    def __init__(self, ms: bool):
        self.name = "ms" if ms else "us"
        self.ns = 1_000_000 if ms else 1_000
        self.digits = 3 if ms else 1

    def value(self, ns: float | None) -> float | None:
        return None if ns is None else round(ns / self.ns, 3)

    def text(self, ns: float | None) -> str:
        return "-" if ns is None else f"{ns / self.ns:.{self.digits}f}"

    def key(self, what: str) -> str:
        """The JSON key of a duration: latency -> latency_us (or latency_ms)."""
        return f"{what}_{self.name}"
