"""The kernel's own network counters, as nstat(8) shows them: /proc/net/snmp, /proc/net/netstat
and /proc/net/snmp6 of one network namespace, named as nstat names them (TcpRetransSegs,
UdpRcvbufErrors, TcpExtListenOverflows, Udp6RcvbufErrors), and what moved between two reads.

These files belong to the network namespace of the thread that reads them, so a namespace other
than netkit's own is read from a short-lived thread that enters it first (setns(2) moves only
the calling thread).
"""
from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

from netkit.engine.errors import NetkitError

CLONE_NEWNET = 0x40000000
FILES = ("snmp", "netstat")
_libc = ctypes.CDLL(None, use_errno=True)


def parse_pairs(text: str) -> dict[str, int]:
    """snmp/netstat: a header line `Tcp: RtoAlgorithm RtoMin ...` and a value line
    `Tcp: 1 200 ...` per group; each counter is named group + field, as nstat does."""
    counters: dict[str, int] = {}
    lines = text.splitlines()
    for header, values in zip(lines[::2], lines[1::2]):
        group, _, names = header.partition(":")
        group2, _, numbers = values.partition(":")
        if group != group2:
            continue
        for name, number in zip(names.split(), numbers.split()):
            counters[group + name] = int(number)
    return counters


def parse_lines(text: str) -> dict[str, int]:
    """snmp6: one `Udp6RcvbufErrors 0` per line."""
    counters = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            counters[parts[0]] = int(parts[1])
    return counters


def _read_here() -> dict[str, int]:
    base = Path("/proc/thread-self/net")
    counters: dict[str, int] = {}
    for name in FILES:
        counters.update(parse_pairs((base / name).read_text()))
    snmp6 = base / "snmp6"
    if snmp6.exists():                      # no IPv6 in this kernel or namespace: no file
        counters.update(parse_lines(snmp6.read_text()))
    return counters


def namespace_file(inode: int) -> Path | None:
    """A file that holds network namespace `inode` open: a name from `ip netns`, or some
    process's /proc/PID/ns/net."""
    candidates = list(Path("/run/netns").glob("*")) if Path("/run/netns").is_dir() else []
    candidates += Path("/proc").glob("[0-9]*/ns/net")
    for path in candidates:
        try:
            if os.stat(path).st_ino == inode:
                return path
        except OSError:
            continue                        # a process that ended meanwhile
    return None


def read(netns: int | None = None) -> dict[str, int]:
    """Every counter of network namespace `netns` (an inode; None: netkit's own)."""
    from netkit.engine import netns as namespaces
    if netns is None or netns == namespaces.current():
        return _read_here()
    path = namespace_file(netns)
    if path is None:
        raise NetkitError(f"network namespace {netns} has no file to enter it by (no name in "
                          f"/run/netns, no process in it): its counters cannot be read")
    result: dict = {}

    def inside():
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {path}")
            finally:
                os.close(fd)
            result["counters"] = _read_here()
        except OSError as exc:
            result["error"] = exc

    thread = threading.Thread(target=inside, name="netkit-snmp")
    thread.start()
    thread.join()
    if "error" in result:
        raise NetkitError(f"cannot read the counters of network namespace {netns}: "
                          f"{result['error']}")
    return result["counters"]


class Counters:
    """What moved since the start (or the last `interval()`), as nstat prints it: the counters
    whose value changed, by name."""

    def __init__(self, netns: int | None = None, names=None):
        self.netns = netns
        self.names = set(names) if names is not None else None
        self.first = self.last = self._read()

    def _read(self) -> dict[str, int]:
        counters = read(self.netns)
        return counters if self.names is None else {n: counters.get(n, 0) for n in self.names}

    @staticmethod
    def _moved(now: dict[str, int], then: dict[str, int]) -> dict[str, int]:
        return {name: value - then.get(name, 0) for name, value in sorted(now.items())
                if value != then.get(name, 0)}

    def interval(self) -> dict[str, int]:
        now = self._read()
        moved, self.last = self._moved(now, self.last), now
        return moved

    def total(self) -> dict[str, int]:
        """Since the start (reads the counters again)."""
        self.last = self._read()
        return self._moved(self.last, self.first)

    def since_start(self, names) -> dict[str, int]:
        """These counters' change since the start, zero included (reads them again)."""
        self.last = self._read()
        return {name: self.last.get(name, 0) - self.first.get(name, 0) for name in names}
