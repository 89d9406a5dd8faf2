"""TCP listening sockets from the kernel's sock_diag netlink interface (what `ss -ltm` shows):
each listener's address, accept queue (connections waiting for accept()), backlog, drops
(sk_drops: accept-queue overflows and the other SYNs a listener dropped) and inode, and the
process that holds it (found through /proc/PID/fd, cached by inode).

No BPF: the accept queue is state, read when it is shown."""
from __future__ import annotations

import os
import socket
import struct
from typing import NamedTuple

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_DONE, NLMSG_ERROR = 3, 2
TCP_LISTEN = 10
INET_DIAG_SKMEMINFO = 7            # enum in linux/inet_diag.h
SK_MEMINFO_DROPS = 8            # index in the u32 array (linux/sock_diag.h)

_HEADER = struct.Struct("=IHHII")                   # struct nlmsghdr
_REQUEST = struct.Struct("=BBBxI48x")               # struct inet_diag_req_v2, id left zero
_MESSAGE = struct.Struct("=BBBB2s2s16s16sIQIIIII")  # struct inet_diag_msg
_ATTR = struct.Struct("=HH")                        # struct rtattr


class Listener(NamedTuple):
    family: int                 # 4 or 6
    address: str
    port: int
    accept_queue: int           # established connections not yet accept()ed (sk_ack_backlog)
    backlog: int                # the queue's limit (sk_max_ack_backlog)
    drops: int                  # sk_drops, cumulative
    inode: int


def _align(n: int) -> int:
    return (n + 3) & ~3


def _dump(family: int) -> list[Listener]:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        body = _REQUEST.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_SKMEMINFO - 1),
                             1 << TCP_LISTEN)
        nl.send(_HEADER.pack(_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY,
                             NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
        found = []
        while True:
            data = nl.recv(1 << 16)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, kind, _, _, _ = _HEADER.unpack_from(data, offset)
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, offset + _HEADER.size)[0]
                    raise OSError(code, f"sock_diag: {os.strerror(code)}")
                found.append(_listener(data[offset + _HEADER.size:offset + length]))
                offset += _align(length)
            if not data:
                return found


def _listener(msg: bytes) -> Listener:
    (family, _, _, _, sport, _, src, _, _, _, _, rqueue, wqueue, _, inode) = \
        _MESSAGE.unpack_from(msg)
    size = 4 if family == socket.AF_INET else 16
    drops = 0
    offset = _MESSAGE.size
    while offset + _ATTR.size <= len(msg):
        length, kind = _ATTR.unpack_from(msg, offset)
        if length < _ATTR.size:
            break
        if kind == INET_DIAG_SKMEMINFO and length >= _ATTR.size + 4 * (SK_MEMINFO_DROPS + 1):
            drops = struct.unpack_from("=I", msg, offset + _ATTR.size + 4 * SK_MEMINFO_DROPS)[0]
        offset += _align(length)
    return Listener(4 if family == socket.AF_INET else 6, socket.inet_ntop(family, src[:size]),
                    struct.unpack("!H", sport)[0], rqueue, wqueue, drops, inode)


def listeners() -> list[Listener]:
    """Every TCP listener of the current network namespace, IPv4 and IPv6."""
    return _dump(socket.AF_INET) + _dump(socket.AF_INET6)


class SocketOwners:
    """inode -> pid of a process holding the socket, from /proc/*/fd. A scan of every process
    costs milliseconds, so it is made for an inode first seen (one scan finds every new one),
    and for an inode the last scan found no owner of (a socket no process holds) at most every
    `rescan_s` seconds. (Rescanning for any unknown inode at most every 5 s left a listener
    opened just after a scan without its process for up to 5 s, and out of `top -n`.)"""

    def __init__(self, rescan_s: float = 5.0):
        self.pids: dict[int, int] = {}
        self.unowned: set[int] = set()      # inodes the last scan found no process for
        self.rescan_s = rescan_s
        self.scanned_at = float("-inf")

    def pid(self, inode: int, now: float) -> int | None:
        if inode not in self.pids and (inode not in self.unowned or
                                       now - self.scanned_at >= self.rescan_s):
            self.scanned_at = now
            self.unowned = set()
            self._scan()
        owner = self.pids.get(inode)
        if owner is None:
            self.unowned.add(inode)
        return owner

    def _scan(self) -> None:
        found: dict[int, int] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdecimal():
                continue
            try:
                fds = os.scandir(f"/proc/{entry.name}/fd")
            except OSError:
                continue
            with fds:
                for fd in fds:
                    try:
                        target = os.readlink(fd.path)
                    except OSError:
                        continue
                    if target.startswith("socket:["):
                        found.setdefault(int(target[8:-1]), int(entry.name))
        self.pids = found
