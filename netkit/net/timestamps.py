"""Kernel packet timestamps on ordinary sockets (SO_TIMESTAMPING), for probers.

A prober that times its own packets in userspace also measures its own scheduling delay.
The kernel can stamp each packet instead: a software TX stamp when the driver hands the packet
to the device (delivered back through the socket's error queue) and a software RX stamp when
the packet enters the stack (delivered with the packet as a control message). This module turns
those on and parses them; it knows nothing about ICMP or UDP, so any prober can use it:

    flags = enable(sock)                       # software TX + RX stamps, OPT_ID, OPT_TSONLY
                                               # (waits until the kernel stamps RX: it turns
                                               # that on lazily, system-wide)
    sock.sendto(packet, addr)                  # the n-th send gets key n (n counts from 0)
    reply = recv(sock, 2048)                   # reply.data, reply.address, reply.rx_ns
    for rec in read_error_queue(sock):         # non-blocking drain
        if rec.is_tx_stamp: ...                # rec.key == n, rec.ns == the TX stamp
        elif rec.origin == ORIGIN_ICMP: ...    # an ICMP error (needs IP_RECVERR), e.g. TTL
                                               # exceeded for a UDP probe: rec.offender, rec.rx_ns

Software stamps are CLOCK_REALTIME nanoseconds; subtract two of them for an RTT, do not
compare them with time.monotonic_ns(). Linux-only; the constants are those of the
asm-generic socket ABI (x86, arm64, riscv ...), which is where netkit runs.
"""
from __future__ import annotations

import errno
import select
import socket
import struct
import time
from dataclasses import dataclass

from netkit.engine import signals

# socket options (asm-generic/socket.h). _NEW always carries 64-bit timespecs.
SO_TIMESTAMPING_OLD = 37
SO_TIMESTAMPING_NEW = 65

# SOF_TIMESTAMPING_* flags (linux/net_tstamp.h)
TX_HARDWARE = 1 << 0
TX_SOFTWARE = 1 << 1     # generate: stamp when the driver passes the packet to the device
RX_HARDWARE = 1 << 2
RX_SOFTWARE = 1 << 3     # generate: stamp when the packet enters the stack
SOFTWARE = 1 << 4        # report software stamps (needed with either of the two above)
OPT_ID = 1 << 7          # number the TX stamps: ee_data = index of the send on this socket
TX_SCHED = 1 << 8        # also stamp at qdisc enqueue (before traffic shaping)
TX_ACK = 1 << 9          # TCP: stamp when the peer acknowledged the data
OPT_CMSG = 1 << 10
OPT_TSONLY = 1 << 11     # do not loop the packet back with its TX stamp, only the stamp
OPT_ID_TCP = 1 << 16     # TCP: OPT_ID counts bytes from the current write position

DEFAULT_FLAGS = TX_SOFTWARE | RX_SOFTWARE | SOFTWARE | OPT_ID | OPT_TSONLY

# ee_info of a timestamp record: which point of the TX path stamped it
TSTAMP_SND, TSTAMP_SCHED, TSTAMP_ACK = 0, 1, 2
TSTAMP_KIND = {TSTAMP_SND: "snd", TSTAMP_SCHED: "sched", TSTAMP_ACK: "ack"}

# struct sock_extended_err origins (linux/errqueue.h)
ORIGIN_LOCAL, ORIGIN_ICMP, ORIGIN_ICMP6, ORIGIN_TIMESTAMPING = 1, 2, 3, 4

# where the extended error arrives: (level, type) for IPv4 and IPv6 sockets
IP_RECVERR = 11
IPV6_RECVERR = 25
_RECVERR_CMSGS = {(socket.SOL_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)}

# struct sock_extended_err: ee_errno, ee_origin, ee_type, ee_code, ee_pad, ee_info, ee_data
_EXT_ERR = struct.Struct("=IBBBBII")
_TS_NEW = struct.Struct("=qq")          # struct __kernel_timespec
_TS_OLD = struct.Struct("=ll")          # struct timespec (native long)
_ANC_SIZE = 512                         # room for stamps + an extended error + its offender address


class TimestampingError(OSError):
    """The socket refused SO_TIMESTAMPING (old kernel, or flags it does not allow)."""


def enable(sock: socket.socket, flags: int = DEFAULT_FLAGS, wait_rx: bool = True) -> int:
    """Turn on SO_TIMESTAMPING with `flags` and return the option number that took them.

    The _NEW option is tried first (64-bit stamps everywhere); both forms parse the same.
    With RX_SOFTWARE in `flags` it also waits (wait_rx_stamping) until the kernel really
    stamps received packets, unless wait_rx is False.
    """
    last: OSError | None = None
    for opt in (SO_TIMESTAMPING_NEW, SO_TIMESTAMPING_OLD):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, flags)
            if wait_rx and flags & RX_SOFTWARE:
                wait_rx_stamping()
            return opt
        except OSError as exc:
            last = exc
    raise TimestampingError(last.errno if last else errno.EINVAL,
                            f"SO_TIMESTAMPING refused: {last}")


def wait_rx_stamping(timeout: float = 0.5) -> bool:
    """Wait until the kernel stamps received packets (enable() calls it for RX stamps).

    Linux switches RX software stamping on for the whole system lazily: the first socket that
    asks schedules a work item that flips a static key, and packets that arrive before it runs
    carry no stamp. This loops a datagram through 127.0.0.1 until it comes back stamped.
    Returns False when it did not within `timeout` s (or loopback is down in this namespace).
    """
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", 0))
            enable(probe, RX_SOFTWARE | SOFTWARE, wait_rx=False)
            probe.settimeout(0.05)
            while time.monotonic() < deadline:
                probe.sendto(b"", probe.getsockname())
                try:
                    if recv(probe, 16).rx_ns is not None:
                        return True
                except TimeoutError:
                    pass
        except OSError:
            return False
    return False


def software_stamp_ns(ancdata) -> int | None:
    """The software stamp (ts[0] of struct scm_timestamping) in `ancdata`, or None.

    `ancdata` is the list of (level, type, data) that socket.recvmsg returns. A zero
    stamp means the kernel did not stamp this packet, so it is reported as None.
    """
    for level, ctype, data in ancdata:
        if level != socket.SOL_SOCKET:
            continue
        if ctype == SO_TIMESTAMPING_NEW and len(data) >= _TS_NEW.size:
            sec, nsec = _TS_NEW.unpack_from(data, 0)
        elif ctype == SO_TIMESTAMPING_OLD and len(data) >= _TS_OLD.size:
            sec, nsec = _TS_OLD.unpack_from(data, 0)
        else:
            continue
        ns = sec * 1_000_000_000 + nsec
        return ns or None
    return None


@dataclass(frozen=True)
class ErrQueueRecord:
    """One message from a socket's error queue: a TX timestamp or an ICMP/local error."""
    errno: int          # ENOMSG for timestamps; EHOSTUNREACH etc. for ICMP errors
    origin: int         # ORIGIN_*
    type: int           # ICMP type for ORIGIN_ICMP(6)
    code: int           # ICMP code
    info: int           # TSTAMP_* for timestamps; e.g. the MTU for "fragmentation needed"
    data: int           # the OPT_ID key for timestamps
    offender: str | None  # address of the host that sent the ICMP error
    ns: int | None      # the software stamp: TX time for timestamps, RX time for ICMP errors
    payload: bytes      # looped-back packet (empty with OPT_TSONLY) or the offending datagram

    @property
    def is_tx_stamp(self) -> bool:
        return self.origin == ORIGIN_TIMESTAMPING

    @property
    def key(self) -> int:
        """The OPT_ID key of a TX stamp: 0 for the socket's first send after enable()."""
        return self.data

    @property
    def kind(self) -> str:
        """'snd', 'sched' or 'ack' for TX stamps."""
        return TSTAMP_KIND.get(self.info, str(self.info))

    @property
    def rx_ns(self) -> int | None:
        return self.ns


def _offender(raw: bytes) -> str | None:
    """The sockaddr that follows struct sock_extended_err (SO_EE_OFFENDER)."""
    if len(raw) < 2:
        return None
    family = struct.unpack_from("=H", raw, 0)[0]
    if family == socket.AF_INET and len(raw) >= 8:
        return socket.inet_ntop(socket.AF_INET, raw[4:8])
    if family == socket.AF_INET6 and len(raw) >= 24:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24])
    return None


def parse_error_message(payload: bytes, ancdata) -> ErrQueueRecord | None:
    """Build a record from one recvmsg(MSG_ERRQUEUE) result; None if it carries no error."""
    for level, ctype, data in ancdata:
        if (level, ctype) in _RECVERR_CMSGS and len(data) >= _EXT_ERR.size:
            eno, origin, etype, code, _pad, info, edata = _EXT_ERR.unpack_from(data, 0)
            return ErrQueueRecord(eno, origin, etype, code, info, edata,
                                  _offender(data[_EXT_ERR.size:]),
                                  software_stamp_ns(ancdata), payload)
    return None


def read_error_queue(sock: socket.socket, bufsize: int = 2048) -> list[ErrQueueRecord]:
    """Drain the error queue without blocking and return what it held, oldest first."""
    records = []
    while True:
        try:
            payload, anc, _flags, _addr = sock.recvmsg(bufsize, _ANC_SIZE,
                                                       socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return records
        rec = parse_error_message(payload, anc)
        if rec is not None:
            records.append(rec)


def wait_error_queue(sock: socket.socket, timeout: float) -> list[ErrQueueRecord]:
    """Wait up to `timeout` seconds for the error queue to hold something, then drain it.

    The TX stamp of a send lands a few microseconds after the send returns (when the driver
    transmits); poll() signals it as POLLERR.
    """
    poller = select.poll()
    poller.register(sock, select.POLLERR)
    signals.raise_if_lost()
    if poller.poll(max(0, int(timeout * 1000))):
        return read_error_queue(sock)
    return []


@dataclass(frozen=True)
class Received:
    """A datagram with its kernel RX stamp (None if the kernel did not stamp it)."""
    data: bytes
    address: tuple
    rx_ns: int | None
    ancdata: list


def recv(sock: socket.socket, bufsize: int, flags: int = 0) -> Received:
    """recvmsg() that also returns the software RX stamp of the datagram."""
    data, anc, _flags, addr = sock.recvmsg(bufsize, _ANC_SIZE, flags)
    return Received(data, addr, software_stamp_ns(anc), anc)
