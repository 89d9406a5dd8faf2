"""802.11 scans seen through nl80211, the wireless stack's generic-netlink family, in plain Python.

cfg80211 announces every scan on the nl80211 "scan" multicast group: TRIGGER_SCAN when a scan
starts, NEW_SCAN_RESULTS when it finished, SCAN_ABORTED when it was cut short (what `iw event`
prints). This module finds the family and its group through the generic-netlink controller
(nlctrl), subscribes, parses those three messages, pairs start and end per interface into
ScanRecords with a duration, and asks the kernel how many BSSes the scan saw:

    nl = Nl80211()                               # NoWireless when the kernel has no nl80211
    tracker, channels = ScanTracker(), nl.channels()
    for event in nl.events(timeout=0.5):         # None on each timeout, so Ctrl-C stays quick
        record = tracker.feed(event) if event else None
        if record:
            nl.complete(record, channels)        # BSSes found, full or partial

Times are taken when the event reaches this process (userspace receive time), so a duration
includes the delivery delay of both messages; the kernel does not stamp these events. The
requesting process is not in the messages (cfg80211 sends them with port id 0); a caller that
sees the requests themselves (ieee80211scan's BPF program) hands them to ScanTracker.requested(),
which gives each scan the latest request for its interface sent just before it started.

Constants are those of linux/netlink.h, linux/genetlink.h and linux/nl80211.h (a stable uapi).
"""
from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from dataclasses import dataclass, field

from netkit.engine import signals
from netkit.engine.errors import NetkitError

# --- netlink and generic netlink (linux/netlink.h, linux/genetlink.h) ---
NETLINK_GENERIC = 16            # the socket module does not export it
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300              # ROOT | MATCH: "give me all of them"
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF          # attribute type without the NESTED / NET_BYTEORDER bits

NLMSGHDR = struct.Struct("=IHHII")   # len, type, flags, seq, port id
GENLMSGHDR = struct.Struct("=BBH")   # cmd, version, reserved
NLATTR = struct.Struct("=HH")        # len (header included, padding excluded), type

GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
CTRL_ATTR_MCAST_GROUPS = 7
CTRL_ATTR_MCAST_GRP_NAME = 1
CTRL_ATTR_MCAST_GRP_ID = 2

# --- nl80211 (linux/nl80211.h) ---
CMD_GET_WIPHY = 1
CMD_GET_SCAN = 32
CMD_TRIGGER_SCAN = 33
CMD_NEW_SCAN_RESULTS = 34
CMD_SCAN_ABORTED = 35

ATTR_WIPHY = 1
ATTR_IFINDEX = 3
ATTR_WIPHY_BANDS = 22
ATTR_SCAN_FREQUENCIES = 44
ATTR_SCAN_SSIDS = 45
ATTR_BSS = 47
ATTR_WDEV = 153                 # u64; the only handle of a wdev without a netdev (P2P device)
ATTR_SCAN_FLAGS = 158
ATTR_SPLIT_WIPHY_DUMP = 174     # flag: let the kernel spread one wiphy over many messages

BAND_ATTR_FREQS = 1
FREQUENCY_ATTR_FREQ = 1
FREQUENCY_ATTR_DISABLED = 2

BSS_SEEN_MS_AGO = 10
BSS_LAST_SEEN_BOOTTIME = 15     # CLOCK_BOOTTIME ns of the last frame from this BSS

# NL80211_SCAN_FLAG_* bit numbers, named as `iw` users know them
SCAN_FLAG_NAMES = (
    "low-priority", "flush", "ap", "random-addr", "fils-max-channel-time",
    "accept-bcast-probe-resp", "oce-probe-req-high-tx-rate", "oce-probe-req-deferral-suppression",
    "low-span", "low-power", "high-accuracy", "random-sn", "min-preq-content", "freq-khz",
    "colocated-6ghz",
)

EVENT_KINDS = {CMD_TRIGGER_SCAN: "start", CMD_NEW_SCAN_RESULTS: "done", CMD_SCAN_ABORTED: "aborted"}


class NoWireless(NetkitError):
    """The kernel has no nl80211 family: no cfg80211, so no Wi-Fi at all."""


# --- attribute and message codec ---

def pack_attr(kind: int, value: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    raw = NLATTR.pack(NLATTR.size + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def parse_attrs(buf: bytes) -> list[tuple[int, bytes]]:
    """All attributes of a buffer as (type, payload), in order; a truncated tail is dropped."""
    out = []
    off = 0
    while off + NLATTR.size <= len(buf):
        length, kind = NLATTR.unpack_from(buf, off)
        if length < NLATTR.size or off + length > len(buf):
            break
        out.append((kind & NLA_TYPE_MASK, buf[off + NLATTR.size:off + length]))
        off += (length + 3) & ~3
    return out


def attr_map(buf: bytes) -> dict[int, bytes]:
    """Attributes by type (the kernel sends each top-level type once)."""
    return dict(parse_attrs(buf))


def iter_messages(buf: bytes):
    """Netlink messages of one datagram as (type, flags, seq, payload)."""
    off = 0
    while off + NLMSGHDR.size <= len(buf):
        length, kind, flags, seq, _port = NLMSGHDR.unpack_from(buf, off)
        if length < NLMSGHDR.size or off + length > len(buf):
            break
        yield kind, flags, seq, buf[off + NLMSGHDR.size:off + length]
        off += (length + 3) & ~3


def _u32(raw: bytes) -> int:
    return struct.unpack_from("=I", raw)[0]


def _u64(raw: bytes) -> int:
    return struct.unpack_from("=Q", raw)[0]


# --- scan events and records ---

@dataclass
class ScanEvent:
    """One message of the "scan" group: a scan started, finished or was aborted. (ieee80211scan's
    tracepoint backend makes them too, with the requester, and "refused": the driver said no.)"""
    kind: str                     # "start" | "done" | "aborted" | "refused"
    wiphy: int | None
    ifindex: int | None
    wdev: int | None
    ssids: list[bytes]            # b"" is the wildcard SSID (probe for any network)
    freqs: list[int]              # MHz
    flags: int                    # NL80211_SCAN_FLAG_* bits
    wall: float = 0.0             # time.time() at receipt
    boot_ns: int = 0              # CLOCK_BOOTTIME ns at receipt (the clock BSS stamps use)
    pid: int | None = None        # who asked, when the source knows (never in nl80211's events)
    comm: str | None = None

    @property
    def key(self) -> tuple:
        return scan_key(self.ifindex, self.wdev)


def scan_key(ifindex: int | None, wdev: int | None) -> tuple:
    """What a scan belongs to: the network interface, else the wdev (a P2P device has no netdev;
    wdev ids are unique across radios)."""
    return ("ifindex", ifindex) if ifindex else ("wdev", wdev)


@dataclass
class ScanRequest:
    """A process sent NL80211_CMD_TRIGGER_SCAN (seen by a BPF program at send())."""
    ifindex: int | None           # the request names an interface by ifindex or by wdev
    wdev: int | None
    boot_ns: int
    pid: int
    comm: str

    def names(self, event: ScanEvent) -> bool:
        """Whether this request is for the interface of `event` (which carries both ids)."""
        return bool((self.ifindex and self.ifindex == event.ifindex)
                    or (self.wdev and self.wdev == event.wdev))


def parse_scan_event(cmd: int, payload: bytes, wall: float = 0.0, boot_ns: int = 0
                     ) -> ScanEvent | None:
    """A ScanEvent from an nl80211 command and its attributes, None for other commands."""
    kind = EVENT_KINDS.get(cmd)
    if kind is None:
        return None
    attrs = attr_map(payload)
    ssids = [value for _i, value in parse_attrs(attrs.get(ATTR_SCAN_SSIDS, b""))]
    freqs = [_u32(value) for _i, value in parse_attrs(attrs.get(ATTR_SCAN_FREQUENCIES, b""))
             if len(value) >= 4]
    wiphy = _u32(attrs[ATTR_WIPHY]) if len(attrs.get(ATTR_WIPHY, b"")) >= 4 else None
    ifindex = _u32(attrs[ATTR_IFINDEX]) if len(attrs.get(ATTR_IFINDEX, b"")) >= 4 else None
    wdev = _u64(attrs[ATTR_WDEV]) if len(attrs.get(ATTR_WDEV, b"")) >= 8 else None
    flags = _u32(attrs[ATTR_SCAN_FLAGS]) if len(attrs.get(ATTR_SCAN_FLAGS, b"")) >= 4 else 0
    return ScanEvent(kind, wiphy, ifindex, wdev, ssids, freqs, flags, wall, boot_ns)


def parse_datagram(buf: bytes, family_id: int, wall: float = 0.0, boot_ns: int = 0
                   ) -> list[ScanEvent]:
    """The scan events in one datagram read from the multicast socket."""
    events = []
    for kind, _flags, _seq, payload in iter_messages(buf):
        if kind != family_id or len(payload) < GENLMSGHDR.size:
            continue
        cmd = payload[0]
        event = parse_scan_event(cmd, payload[GENLMSGHDR.size:], wall, boot_ns)
        if event is not None:
            events.append(event)
    return events


def flag_names(flags: int) -> list[str]:
    """NL80211_SCAN_FLAG_* bits as names; unknown bits as "bit<N>"."""
    names = []
    for bit in range(32):
        if flags & (1 << bit):
            names.append(SCAN_FLAG_NAMES[bit] if bit < len(SCAN_FLAG_NAMES) else f"bit{bit}")
    return names


def interface_name(ifindex: int | None, wdev: int | None) -> str:
    """The interface's name now, or a stable stand-in when it is gone or has no netdev."""
    if ifindex is not None:
        try:
            return socket.if_indextoname(ifindex)
        except OSError:
            return f"ifindex{ifindex}"
    return f"wdev0x{wdev:x}" if wdev is not None else "?"


@dataclass
class ScanRecord:
    """One scan from start to end on one interface."""
    interface: str
    ifindex: int | None
    wdev: int | None
    wiphy: int | None
    start_wall: float | None      # None: the scan began before we listened
    start_boot_ns: int | None
    duration_s: float | None
    result: str                   # "done" | "aborted" | "unfinished"
    ssids: list[bytes]
    freqs: list[int]
    flags: int
    full: bool | None = None      # every enabled channel of the wiphy? None: unknown
    bss_found: int | None = None  # BSSes heard since the scan started
    bss_total: int | None = None  # BSSes in the kernel's cache for this interface
    pid: int | None = None        # the requester, when a BPF program saw the request
    comm: str | None = None


@dataclass
class ScanTracker:
    """Pairs start and end events per interface into ScanRecords.

    cfg80211 runs at most one scan per wiphy, but interfaces on different wiphys scan at the
    same time, so scans are keyed by interface and may overlap freely.
    """
    name_of: object = interface_name
    pending: dict = field(default_factory=dict)
    requests: list = field(default_factory=list)

    REQUEST_WINDOW_NS = 2_000_000_000   # cfg80211 announces a scan as soon as it accepts it

    def requested(self, request: ScanRequest) -> None:
        """Remember who asked for a scan; the scan that starts next on that interface is theirs."""
        self.requests = [r for r in self.requests
                         if request.boot_ns - r.boot_ns < 5 * self.REQUEST_WINDOW_NS]
        self.requests.append(request)

    def _requester(self, start: ScanEvent) -> ScanRequest | None:
        """The latest request for the scan's interface sent shortly before the scan started.
        Requests arrive on another channel than the events, so this is asked when the scan ends."""
        before = [r for r in self.requests if r.names(start) and r.boot_ns <= start.boot_ns]
        # earlier requests for this interface are spent too (refused, e.g. busy): drop them
        self.requests = [r for r in self.requests if r not in before]
        if before and start.boot_ns - before[-1].boot_ns <= self.REQUEST_WINDOW_NS:
            return before[-1]
        return None

    def feed(self, event: ScanEvent) -> ScanRecord | None:
        """Take one event; return the finished scan it closes, if any."""
        if event.kind == "refused":   # it never ran: nothing to show (nl80211 never announces it)
            self.pending.pop(event.key, None)
            return None
        if event.kind == "start":
            # A start while one is open means we missed its end (socket overrun): close it.
            stale = self.pending.pop(event.key, None)
            self.pending[event.key] = event
            return self._record(stale, None, "unfinished") if stale else None
        start = self.pending.pop(event.key, None)
        return self._record(start, event, event.kind)

    def unfinished(self, boot_ns: int | None = None) -> list[ScanRecord]:
        """Scans still open (e.g. at Ctrl-C), with the time they have run so far."""
        now = boot_ns if boot_ns is not None else time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        records = [self._record(start, None, "unfinished", now) for start in self.pending.values()]
        self.pending.clear()
        return records

    def _record(self, start: ScanEvent | None, end: ScanEvent | None, result: str,
                now_ns: int | None = None) -> ScanRecord:
        base = start or end
        stop_ns = end.boot_ns if end else now_ns
        duration = (stop_ns - start.boot_ns) / 1e9 if start and stop_ns is not None else None
        requester = self._requester(start) if start and start.pid is None else start
        # The start message carries the request; an end without a start still names its channels.
        return ScanRecord(
            interface=self.name_of(base.ifindex, base.wdev), ifindex=base.ifindex,
            wdev=base.wdev, wiphy=base.wiphy, start_wall=start.wall if start else None,
            start_boot_ns=start.boot_ns if start else None, duration_s=duration, result=result,
            ssids=base.ssids, freqs=base.freqs, flags=base.flags,
            pid=requester.pid if requester else None, comm=requester.comm if requester else None)


def count_fresh_bss(bss_payloads: list[bytes], since_boot_ns: int | None, now_boot_ns: int
                    ) -> tuple[int | None, int]:
    """(BSSes last heard at or after since_boot_ns, all BSSes) from GET_SCAN dump payloads."""
    total = 0
    fresh = 0
    for payload in bss_payloads:
        bss = attr_map(attr_map(payload).get(ATTR_BSS, b""))
        if not bss:
            continue
        total += 1
        if since_boot_ns is None:
            continue
        if len(bss.get(BSS_LAST_SEEN_BOOTTIME, b"")) >= 8:
            seen_ns = _u64(bss[BSS_LAST_SEEN_BOOTTIME])
        elif len(bss.get(BSS_SEEN_MS_AGO, b"")) >= 4:   # kernels before 4.4: an age in ms
            seen_ns = now_boot_ns - _u32(bss[BSS_SEEN_MS_AGO]) * 1_000_000
        else:
            continue
        fresh += seen_ns >= since_boot_ns
    return (fresh if since_boot_ns is not None else None), total


def enabled_channels(wiphy_payloads: list[bytes]) -> dict[int, set[int]]:
    """Enabled channel frequencies per wiphy from a (split) GET_WIPHY dump.

    A split dump spreads one wiphy's bands over several messages, so frequencies are collected
    into sets and merged.
    """
    channels: dict[int, set[int]] = {}
    for payload in wiphy_payloads:
        attrs = attr_map(payload)
        if len(attrs.get(ATTR_WIPHY, b"")) < 4:
            continue
        freqs = channels.setdefault(_u32(attrs[ATTR_WIPHY]), set())
        for _band_no, band in parse_attrs(attrs.get(ATTR_WIPHY_BANDS, b"")):
            for _i, freq in parse_attrs(attr_map(band).get(BAND_ATTR_FREQS, b"")):
                fa = attr_map(freq)
                if len(fa.get(FREQUENCY_ATTR_FREQ, b"")) >= 4 and FREQUENCY_ATTR_DISABLED not in fa:
                    freqs.add(_u32(fa[FREQUENCY_ATTR_FREQ]))
    return channels


# --- the sockets ---

class GenlSocket:
    """A generic-netlink socket for request/response and dumps."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        self.sock.bind((0, 0))
        self.sock.settimeout(5)   # the kernel always answers; never hang if it does not
        self.seq = 0
        self.lost = 0   # multicast overruns (ENOBUFS): the kernel dropped messages for us

    def close(self):
        self.sock.close()

    def subscribe(self, group: int):
        """Receive a multicast group's messages on this socket (keep it apart from requests)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)

    def receive(self, timeout: float) -> bytes | None:
        """The next datagram, or None when none came within `timeout` seconds."""
        while True:
            signals.raise_if_lost()
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if not ready:
                return None
            try:
                return self.sock.recv(1 << 16)
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                self.lost += 1

    def request(self, family: int, cmd: int, attrs: bytes = b"", dump: bool = False,
                version: int = 1) -> list[tuple[int, bytes]]:
        """Send one command; return the replies as (cmd, attribute bytes). OSError on NLMSG_ERROR."""
        self.seq += 1
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
        body = GENLMSGHDR.pack(cmd, version, 0) + attrs
        self.sock.send(NLMSGHDR.pack(NLMSGHDR.size + len(body), family, flags, self.seq, 0) + body)
        replies = []
        while True:
            for kind, _flags, seq, payload in iter_messages(self.sock.recv(1 << 16)):
                if seq != self.seq:
                    continue
                if kind in (NLMSG_ERROR, NLMSG_DONE):
                    code = struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else 0
                    if code < 0:
                        raise OSError(-code, os.strerror(-code))
                    if kind == NLMSG_DONE or not dump:   # DONE ends a dump, the ACK a request
                        return replies
                elif kind != NLMSG_OVERRUN and len(payload) >= GENLMSGHDR.size:
                    replies.append((payload[0], payload[GENLMSGHDR.size:]))


def resolve_family(genl: GenlSocket, name: str) -> tuple[int, dict[str, int]]:
    """A generic-netlink family's id and its multicast groups {name: id}, asked of nlctrl."""
    replies = genl.request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY,
                           pack_attr(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0"))
    for _cmd, payload in replies:
        attrs = attr_map(payload)
        if CTRL_ATTR_FAMILY_ID not in attrs:
            continue
        groups = {}
        for _i, group in parse_attrs(attrs.get(CTRL_ATTR_MCAST_GROUPS, b"")):
            g = attr_map(group)
            if CTRL_ATTR_MCAST_GRP_NAME in g and CTRL_ATTR_MCAST_GRP_ID in g:
                groups[g[CTRL_ATTR_MCAST_GRP_NAME].rstrip(b"\0").decode()] = \
                    _u32(g[CTRL_ATTR_MCAST_GRP_ID])
        return struct.unpack_from("=H", attrs[CTRL_ATTR_FAMILY_ID])[0], groups
    raise OSError(errno.ENOENT, f"no generic-netlink family {name}")


class Nl80211:
    """The nl80211 family on this kernel: scan events, wiphy channels, cached BSSes."""

    def __init__(self):
        self.genl = GenlSocket()
        try:
            self.family, self.groups = resolve_family(self.genl, "nl80211")
        except OSError as e:
            self.genl.close()
            if e.errno == errno.ENOENT:
                raise NoWireless("no wireless support in this kernel (generic-netlink family "
                                 "nl80211 not found: no cfg80211)") from None
            raise NetkitError(f"cannot query generic netlink: {e.strerror}") from None
        if "scan" not in self.groups:
            self.genl.close()
            raise NetkitError("nl80211 has no \"scan\" multicast group on this kernel")
        self.events_sock = None
        self.backlog: list[ScanEvent] = []     # parsed from a datagram, not yet yielded

    @property
    def lost(self) -> int:
        """Times the kernel dropped scan events because we read too slowly."""
        return self.events_sock.lost if self.events_sock else 0

    def close(self):
        self.genl.close()
        if self.events_sock:
            self.events_sock.close()

    def subscribe(self):
        """Join the "scan" group now, so no event is missed while the caller sets up."""
        if self.events_sock is None:
            self.events_sock = GenlSocket()
            self.events_sock.subscribe(self.groups["scan"])

    def events(self, timeout: float = 0.5):
        """Yield ScanEvents as they arrive, and None after each quiet `timeout` seconds."""
        self.subscribe()
        while True:
            while self.backlog:
                yield self.backlog.pop(0)
            # A datagram taken from the socket is kept until each of its events is yielded: a
            # Ctrl-C between the recv and the yield would otherwise lose it (a VM run lost iw's
            # abort, received as the test's SIGINT came), and a later events() yields it first.
            with signals.held():
                buf = self.events_sock.receive(timeout)
                if buf is not None:
                    wall, boot_ns = time.time(), time.clock_gettime_ns(time.CLOCK_BOOTTIME)
                    self.backlog = parse_datagram(buf, self.family, wall, boot_ns)
            if buf is None:
                yield None

    def count_bss(self, record: ScanRecord) -> tuple[int | None, int]:
        """(BSSes heard since the scan started, all cached BSSes) for the record's interface."""
        if record.ifindex is not None:
            which = pack_attr(ATTR_IFINDEX, struct.pack("=I", record.ifindex))
        elif record.wdev is not None:
            which = pack_attr(ATTR_WDEV, struct.pack("=Q", record.wdev))
        else:
            return None, 0
        replies = self.genl.request(self.family, CMD_GET_SCAN, which, dump=True)
        return count_fresh_bss([p for _c, p in replies], record.start_boot_ns,
                               time.clock_gettime_ns(time.CLOCK_BOOTTIME))

    def channels(self) -> dict[int, set[int]]:
        """Enabled channels of every wiphy."""
        replies = self.genl.request(self.family, CMD_GET_WIPHY,
                                    pack_attr(ATTR_SPLIT_WIPHY_DUMP, b""), dump=True)
        return enabled_channels([p for _c, p in replies])

    def complete(self, record: ScanRecord, channels: dict[int, set[int]]):
        """Fill in what the kernel knows after the scan: BSS counts and full/partial."""
        if record.result == "done":
            try:
                record.bss_found, record.bss_total = self.count_bss(record)
            except OSError:
                pass   # the interface went away between the event and the dump
        mark_full(record, channels)


def mark_full(record: ScanRecord, channels: dict[int, set[int]]):
    """A scan is full when it visits every enabled channel of its wiphy, else partial."""
    enabled = channels.get(record.wiphy)
    if enabled and record.freqs:
        record.full = enabled <= set(record.freqs)
