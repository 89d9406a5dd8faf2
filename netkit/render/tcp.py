"""What the tcp* tools show of a socket: its state names, its addresses and ports (struct
tcp_tuple of bpf_programs/tcpsock.h, IPv4-mapped IPv6 already folded to IPv4 by the kernel
side), the time columns of bcc's tools (-T time of day, -t seconds since tracing began), and
the part of an event view they share (owners, times, the summary)."""
from __future__ import annotations

import time
from typing import NamedTuple

from netkit.render.fields import KernelClock, clock, ip_address, iso
from netkit.render.output import Column

# include/net/tcp_states.h: the kernel ABI behind /proc/net/tcp and sock_diag (values 1..13;
# tests/test_tcpstates.py ties them to this kernel's BTF).
STATES = ("", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
          "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV",
          "BOUND_INACTIVE")


def state_name(state: int) -> str:
    return STATES[state] if 0 < state < len(STATES) else f"STATE{state}"


class Endpoints(NamedTuple):
    family: int                 # 4 or 6
    laddr: str
    lport: int
    raddr: str
    rport: int


def endpoints(t) -> Endpoints:
    """A struct tcp_tuple as text addresses and integer ports."""
    return Endpoints(t.family, ip_address(t.family, t.laddr), t.lport,
                     ip_address(t.family, t.raddr), t.rport)


class EventTimes:
    """bcc's time columns for events stamped with bpf_ktime_get_ns(): TIME (HH:MM:SS, -T) and
    TIME(s) (seconds since tracing began, -t), and the wall time for JSON's ts."""

    def __init__(self):
        self.kernel = KernelClock()
        self.start_ns = time.monotonic_ns()

    def wall(self, ns: int) -> float:
        return self.kernel.wall(ns)

    def clock(self, ns: int) -> str:
        return clock(self.wall(ns))

    def since_start(self, ns: int) -> float:
        return max(0, ns - self.start_ns) / 1e9


class TcpEventView:
    """The shared half of a tcp* tool's view of its events: each event's owner decoded
    (netkit/engine/sockowner.py), bcc's time columns, the count of events shown and the closing
    summary (`counted`: its JSON key and what the lost ones are called in text)."""

    def __init__(self, out, tool: str, counted: str, clock: bool = False,
                 timestamp: bool = False):
        from netkit.engine.sockowner import Owners
        self.out, self.tool, self.counted = out, tool, counted
        self.clock, self.timestamp = clock, timestamp
        self.owners = Owners()
        self.times = EventTimes()
        self.shown = 0

    def decode(self, e):
        """An event (its owner and tuple fields) counted and decoded: (Owner, Endpoints)."""
        self.shown += 1
        return self.owners(e.owner), endpoints(e.tuple)

    def time_columns(self) -> list[Column]:
        return (([Column("TIME", 8, "<", style="dim")] if self.clock else []) +
                ([Column("TIME(s)", 9, "<", fmt=lambda v: f"{v:.3f}")] if self.timestamp
                 else []))

    def time_cells(self, ns: int) -> list:
        return (([self.times.clock(ns)] if self.clock else []) +
                ([self.times.since_start(ns)] if self.timestamp else []))

    def iso(self, ns: int) -> str:
        """JSON's ts for an event stamped `ns`."""
        return iso(self.times.wall(ns), "microseconds")

    def summary(self, seconds: float, lost: int, count: int | None = None) -> None:
        if self.out.mode == "json":
            self.out.record({"type": "summary", "duration_s": round(seconds, 3),
                             self.counted: self.shown if count is None else count,
                             "lost_events": lost})
        self.out.lost(self.tool, lost, self.counted)
