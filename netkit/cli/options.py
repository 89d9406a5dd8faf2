"""Every option more than one tool takes, declared once, with the letters bcc and libbpf-tools
users know. A tool writes `pid: PidOpt = None`; the help text, metavar and range come from here.

Numbers are checked by click before a tool runs: a float must be finite and within range (NaN
passes any `min`/`max` comparison, so click's own FloatRange lets it through), an integer within
what it feeds (a PID fits the kernel's PID space, a port 16 bits). Choices are Enums, so every
bad choice is the same one-line usage error.
"""
from __future__ import annotations

import math
from typing import Annotated, Optional

import typer
from typer._click.types import ParamType

from netkit.engine.errors import UsageError

MAX_SECONDS = 1_000_000     # ~11.6 days: a wait in ms still fits poll(2)'s int
PID_MAX = 4_194_304         # PID_MAX_LIMIT on 64-bit kernels
MAX_PORTS = 8               # common.h's MAX_PORTS (tests/test_engine.py ties the two)


class Number(ParamType):
    """A finite float in [low, high]; `low_open` excludes low itself (an interval of 0)."""

    def __init__(self, low: float = 0.0, high: float = MAX_SECONDS, low_open: bool = False,
                 name: str = "seconds"):
        self.low, self.high, self.low_open, self.name = low, high, low_open, name

    def get_metavar(self, param, ctx=None) -> str:
        bound = ">" if self.low_open else ">="
        return f"<{self.name} {bound}{self.low:g}, <={self.high:g}>"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            number = value
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if number < self.low or (self.low_open and number == self.low) or number > self.high:
            bound = ">" if self.low_open else ">="
            self.fail(f"{value!r} is not in the range x {bound} {self.low:g} and x <= "
                      f"{self.high:g}", param, ctx)
        return number


def seconds(low: float = 0.0, high: float = MAX_SECONDS, low_open: bool = False) -> Number:
    return Number(low, high, low_open)


# -- the process filters and common switches of every tracing tool ---------------------------------
PidOpt = Annotated[Optional[int], typer.Option(
    "-p", "--pid", metavar="PID", min=1, max=PID_MAX, show_default=False,
    help="Trace only this process (PID).")]
NameOpt = Annotated[Optional[str], typer.Option(
    "-n", "--name", metavar="COMM", show_default=False,
    help="Trace only processes with this command name (as in /proc/PID/comm, 15 characters).")]
CgroupOpt = Annotated[Optional[str], typer.Option(
    "-c", "--cgroup", metavar="PATH", show_default=False,
    help="Trace only tasks in this cgroup v2 (a path under /sys/fs/cgroup, or / for all).")]
DurationOpt = Annotated[Optional[float], typer.Option(
    "-d", "--duration", metavar="SECONDS", click_type=seconds(), show_default=False,
    help="Stop after this many seconds (0: attach and exit).")]
JsonOpt = Annotated[bool, typer.Option("-j", "--json", help="Write NDJSON: one object per line.")]
NoColorOpt = Annotated[bool, typer.Option(
    "--no-color", help="Plain text even on a terminal (also when NO_COLOR is set).")]
VerboseOpt = Annotated[bool, typer.Option(
    "-v", "--verbose", help="Show libbpf's messages and the full verifier log on failure.")]
MillisecondsOpt = Annotated[bool, typer.Option(
    "-m", "--milliseconds", help="Show times in milliseconds, not microseconds.")]
TimestampOpt = Annotated[bool, typer.Option(
    "-t", "--timestamp", help="Start each line with TIME(s), seconds since tracing began "
                              "(bcc's -t).")]
ClockOpt = Annotated[bool, typer.Option(
    "-T", "--time", help="Start each line with TIME, the time of day (HH:MM:SS) (bcc's -T).")]
CountModeOpt = Annotated[bool, typer.Option(
    "-C", "--count", help="Count instead of printing each event: totals at the end, or every "
                          "INTERVAL (bcc's -c; -c is the cgroup filter here).")]
WideOpt = Annotated[bool, typer.Option(
    "-w", "--wide", help="Wide columns: full IPv6 addresses, the IP version and the owner's "
                         "cgroup (bcc's -w).")]
TopOpt = Annotated[Optional[int], typer.Option(
    "-T", "--top", metavar="N", min=1, max=1_000_000, show_default=False,
    help="Show only the N busiest entries.")]

# -- addresses and ports ------------------------------------------------------------------------
Ipv4Opt = Annotated[bool, typer.Option("-4", "--ipv4", help="IPv4 only.")]
Ipv6Opt = Annotated[bool, typer.Option("-6", "--ipv6", help="IPv6 only.")]
DportOpt = Annotated[Optional[list[str]], typer.Option(
    "-D", "--dport", metavar="PORT[,PORT]", show_default=False,
    help=f"Only these remote (destination) ports: a list, or the option repeated; up to "
         f"{MAX_PORTS}.")]
LportColumnOpt = Annotated[bool, typer.Option(
    "-L", "--lport", help="Add an LPORT column: the local port (bcc's -L).")]
LportOpt = Annotated[Optional[list[str]], typer.Option(
    "-L", "--lport", metavar="PORT[,PORT]", show_default=False,
    help=f"Only these local ports: a list, or the option repeated; up to {MAX_PORTS}.")]

# -- network namespaces (packet events: bpf_programs/netns.h, netkit/engine/netns.py) -----------
NetnsOpt = Annotated[Optional[str], typer.Option(
    "--netns", metavar="NETNS", show_default=False,
    help="Trace this network namespace instead of netkit's own: a name from `ip netns list`, a "
         "path (/run/netns/NAME, /proc/PID/ns/net) or an inode number (as lsns shows it).")]
AllNetnsOpt = Annotated[bool, typer.Option(
    "--all-netns", help="Trace every network namespace and show which one each event is in "
                        "(its inode: a NETNS column or in a histogram's title, a \"netns\" "
                        "key).")]

PerDeviceOpt = Annotated[bool, typer.Option(
    "--dev", help="One histogram per network device (titled with its name, \"dev\" key), not "
                  "one for all devices of the namespace.")]

# -- [INTERVAL [COUNT]] ---------------------------------------------------------------------------
IntervalArg = Annotated[Optional[float], typer.Argument(
    metavar="[INTERVAL]", click_type=seconds(0.01),
    help="Seconds between outputs.")]
CountArg = Annotated[Optional[int], typer.Argument(
    metavar="[COUNT]", min=1, max=10**9, show_default=False,
    help="Number of outputs, then exit.")]


def family_of(ipv4: bool, ipv6: bool) -> int:
    """-4/-6 as the 4 or 6 a BPF filter compares with (0: both)."""
    if ipv4 and ipv6:
        raise UsageError("-4 and -6 exclude each other (give neither for both)")
    return 4 if ipv4 else 6 if ipv6 else 0


def ports_of(ports: list[str] | None, option: str) -> list[int]:
    """-D/-L (or bcc's -P): `80,443` or the option repeated, as a sorted list of at most
    MAX_PORTS ports."""
    chosen = set()
    for given in ports or []:
        for text in given.split(","):
            if not text.strip().isdecimal() or not 1 <= int(text) <= 65535:
                raise UsageError(f"{option} {given}: {text.strip()!r} is not a port (1-65535)")
            chosen.add(int(text))
    if len(chosen) > MAX_PORTS:
        raise UsageError(f"at most {MAX_PORTS} ports with {option}")
    return sorted(chosen)


def netns_of(netns: str | None, all_netns: bool) -> int | None:
    """--netns/--all-netns as the inode of the namespace to trace, None for all of them; by
    default the one netkit runs in."""
    from netkit.engine import netns as namespaces
    if netns is not None and all_netns:
        raise UsageError("--netns and --all-netns exclude each other")
    if all_netns:
        return None
    return namespaces.current() if netns is None else namespaces.resolve(netns)
