"""Trace 802.11 (Wi-Fi) scans: when each started, on which interface, what it asked for, how long
it took, whether it finished or was aborted, and how many BSSes it heard.

Scans cost a station hundreds of milliseconds off its channel; this shows who scans how often.
Two backends: cfg80211's tracepoints (rdev_scan, cfg80211_scan_done; stamped in the kernel, in
the requesting task), or nl80211's "scan" multicast group with a BPF program at send() of the
TRIGGER_SCAN request for the requester. On a kernel without wireless (no cfg80211) the tool
says so and exits 1; --list shows each backend and why it can or cannot run here.
"""
from __future__ import annotations

import contextlib
import enum
import time
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from netkit.cli.options import DurationOpt, JsonOpt, NoColorOpt, VerboseOpt
from netkit.cli.tool import ManPage, open_output
from netkit.engine import checks, signals
from netkit.engine.errors import NetkitError
from netkit.net import nl80211
from netkit.render.output import Column, Output, StreamTable

TOOL = "ieee80211scan"
SUMMARY = "Wi-Fi scans: start, interface, type, duration, done/aborted, BSSes found."

# What a tracepoint backend would attach to (cfg80211 builds them in when it is present).
TRACEPOINTS = [("cfg80211", "rdev_scan"), ("cfg80211", "cfg80211_scan_done")]

MAN = ManPage(
    description=(
        "Prints one line per 802.11 scan when it ends: its start time, the interface, the "
        "requesting process when known, the scan type (full when it visits every enabled "
        "channel of the radio, partial otherwise), the SSIDs it probed (* is the wildcard), the "
        "number of channels, the duration in milliseconds, whether it finished (done) or was "
        "aborted, and how many BSSes were heard during the scan out of those in the kernel's "
        "cache. On exit (Ctrl-C or --duration) it prints a summary per interface.\n\n"
        "Backends (--backend; auto, the default, takes the tracepoints where they load, else "
        "nl80211). tracepoint: BPF programs on cfg80211's own tracepoints (tp_btf): rdev_scan "
        "when cfg80211 hands a scan to the driver, rdev_return_int for the driver's answer (a "
        "scan it refuses never ran and is not shown) and cfg80211_scan_done when the driver "
        "reports it finished or aborted. Times are the kernel's (CLOCK_BOOTTIME), so a duration "
        "is the driver's scan from request to completion; the requester is the task rdev_scan "
        "runs in, which for nl80211 and the wireless-extensions ioctl is the process that asked. "
        "cfg80211 is a module: the fields read are relocated (CO-RE) against its BTF "
        "(/sys/kernel/btf/cfg80211); it needs root. Up to 256 channels and the first 4 SSIDs "
        "of a request are shown. nl80211: scans come from nl80211 generic-netlink events "
        "(TRIGGER_SCAN, NEW_SCAN_RESULTS, SCAN_ABORTED), timed when they reach netkit, so a "
        "duration includes two delivery delays (microseconds, more on a loaded machine); no "
        "BPF is needed for them. cfg80211 sends these events without the requesting process, so "
        "a small BPF program on the sys_enter raw tracepoint (tp_btf) watches "
        "sendto()/sendmsg() on generic-netlink sockets for TRIGGER_SCAN requests and credits "
        "each scan to the process whose request for that interface came last before it started "
        "(within 2 s). Scans that no process asked for through nl80211 (scheduled scans, the old "
        "wireless-extensions ioctl) and runs without root show PID and COMM as '-'. Both "
        "backends read the channels of each radio and the BSS cache through nl80211. On a "
        "kernel without cfg80211 (no nl80211 family) it says so in one line and exits 1.\n\n"
        "Where it is checked: our build kernel has no wireless, so tests/test_ieee80211scan.py's "
        "test_hwsim_scans_end_to_end runs on Debian 12's 6.1 kernel under qemu (tools/vmtest.py) "
        "with two mac80211_hwsim radios: hostapd runs an access point on one, and on the other "
        "iw's full and partial scans, the test's own nl80211 TRIGGER_SCAN and two aborted scans "
        "(NL80211_CMD_ABORT_SCAN, iw scan abort) are traced with each backend; PID, COMM, "
        "channels, SSIDs, result and BSS counts must match what the test started and asked for "
        "and iw's own scan results, and each duration must fit in the time measured around the "
        "scan."),
    examples=[
        ("netkit ieee80211scan", "trace scans until Ctrl-C"),
        ("netkit ieee80211scan -I wlan0 -d 60", "scans on wlan0 for one minute"),
        ("netkit ieee80211scan --json | jq .duration_ms", "durations as NDJSON"),
        ("netkit ieee80211scan --list", "which backends run on this kernel, and why not"),
        ("netkit ieee80211scan -b nl80211", "without the cfg80211 tracepoints (no root needed)"),
    ],
    output=(
        "Columns: TIME (scan start, HH:MM:SS.mmm; '-' when it began before netkit listened), "
        "INTERFACE, PID, COMM, TYPE (full/partial/?), FREQS (channel count), DURms, "
        "RESULT (done/aborted/unfinished), BSS (heard during the scan / cached), SSIDS (the "
        "SSIDs probed, comma-separated; * is the wildcard; bytes that are not printable UTF-8 "
        "as \\xNN).\n\n"
        "JSON, one object per scan: type=\"scan\", ts (start, ISO 8601, null if unknown), "
        "interface, ifindex, wiphy, pid, comm, scan_type (full, partial or null), ssids (list; \"\" is the wildcard), "
        "freq_count, freqs_mhz, flags (NL80211_SCAN_FLAG names), duration_ms, result, "
        "bss_found, bss_total. On exit one object per interface: type=\"summary\", interface, "
        "scans, done, aborted, unfinished, avg_duration_ms, max_duration_ms, bss_found_max, "
        "lost_events (times the kernel dropped scan events: the socket buffer was full). "
        "With --list: type=\"backend\", backend, available, reason."),
    see_also=["iw(8)", "wpa_supplicant(8)"],
)

class Backend(str, enum.Enum):
    auto = "auto"
    nl80211 = "nl80211"
    tracepoint = "tracepoint"


InterfaceOpt = Annotated[Optional[str], typer.Option(
    "-I", "--interface", metavar="IFACE", show_default=False,
    help="Only scans on this interface.")]
BackendOpt = Annotated[Backend, typer.Option(
    "-b", "--backend",
    help="Where scans come from: nl80211 events, cfg80211's tracepoints, or auto (the "
         "tracepoints where they load, else nl80211).")]
ListOpt = Annotated[bool, typer.Option(
    "-l", "--list", help="Show which backends can run on this kernel, and why not; then exit.")]

COLUMNS = [
    Column("TIME", 12, "<"), Column("INTERFACE", 10, "<", style="cyan"),
    Column("PID", 7), Column("COMM", 15, "<"), Column("TYPE", 7, "<"), Column("FREQS", 5),
    Column("DURms", 9, style="bold"), Column("RESULT", 10, "<"), Column("BSS", 7),
    Column("SSIDS", 0, "<"),   # last: a list of SSIDs has no fixed width
]
SUMMARY_COLUMNS = [
    Column("INTERFACE", 10, "<", style="cyan"), Column("SCANS", 5), Column("DONE", 5),
    Column("ABORTED", 7), Column("UNFINISHED", 10), Column("AVGms", 9), Column("MAXms", 9),
    Column("MAXBSS", 6),
]


# -- backends -------------------------------------------------------------------------------------

# The object's programs by backend: each run loads one set (the other's tracepoints may be absent).
REQUESTER_PROGRAMS = frozenset({"watch_send"})
TRACEPOINT_PROGRAMS = frozenset({"scan_start", "scan_return", "scan_done"})


def requester_object(family: int):
    """ieee80211scan.bpf.o's nl80211 side: reports each NL80211_CMD_TRIGGER_SCAN a process sends
    (sendto/sendmsg on a generic-netlink socket to nl80211 `family`)."""
    from netkit.engine.bpfobject import BPFObject   # libbpf only when it is used
    return BPFObject(TOOL, rodata={"nl80211_family": family}, disabled=TRACEPOINT_PROGRAMS)


def tracepoint_object():
    """ieee80211scan.bpf.o's tracepoint side: cfg80211:rdev_scan, rdev_return_int and
    cfg80211_scan_done, relocated against the cfg80211 module's BTF."""
    from netkit.engine.bpfobject import BPFObject
    return BPFObject(TOOL, disabled=REQUESTER_PROGRAMS)


class Requesters:
    """Who asks for scans: the requests the BPF object reports go to the tracker as
    ScanRequests."""

    def __init__(self, obj, tracker: nl80211.ScanTracker):
        self.tracker = tracker
        self.ring = obj.ring_buffer("requests", "scan_request", self._on_request)

    def _on_request(self, event) -> None:
        from netkit.render.fields import comm
        self.tracker.requested(nl80211.ScanRequest(
            ifindex=event.ifindex, wdev=event.wdev, boot_ns=event.boot_ns,
            pid=event.tgid, comm=comm(event.comm)))

    def poll(self) -> None:
        self.ring.poll(0)


class NetlinkSource:
    """The nl80211 backend: scan events from the multicast group, requesters from the BPF
    program at send() when it loads."""

    def __init__(self, nl: nl80211.Nl80211, requesters: Requesters | None):
        self.nl = nl
        self.requesters = requesters

    def events(self, timeout: float):
        for event in self.nl.events(timeout=timeout):
            if self.requesters:
                self.requesters.poll()   # before the event, so the request behind it is known
            yield event

    def pending(self):
        """The events already queued on the socket, without waiting."""
        for event in self.events(timeout=0):
            if event is None:
                return
            yield event

    @property
    def lost(self) -> int:
        return self.nl.lost


class TracepointSource:
    """The tracepoint backend: scan events from cfg80211's tracepoints, stamped in the kernel
    (CLOCK_BOOTTIME) and carrying the task that asked."""

    def __init__(self, obj):
        self.obj = obj
        self.kinds = {value: name for name, value in obj.enum("scan_kind").items()}
        self.ready: list[nl80211.ScanEvent] = []
        self.ring = obj.ring_buffer("scans", "scan_event", self._on_event)
        # wall clock = boot clock + offset (taken once; the tool runs for minutes, not months)
        self.wall_offset = time.time() - time.clock_gettime_ns(time.CLOCK_BOOTTIME) / 1e9

    def _on_event(self, e) -> None:
        from netkit.render.fields import comm
        kind = self.kinds.get(e.kind)
        if kind is None:
            return
        start = kind == "start"
        self.ready.append(nl80211.ScanEvent(
            kind=kind, wiphy=e.wiphy, ifindex=e.ifindex or None, wdev=e.wdev,
            ssids=[bytes(s.ssid[:s.len]) for s in e.ssids[:min(e.n_ssids, len(e.ssids))]],
            freqs=list(e.freqs[:min(e.n_freqs, len(e.freqs))]), flags=e.flags,
            wall=e.boot_ns / 1e9 + self.wall_offset, boot_ns=e.boot_ns,
            pid=e.tgid if start else None, comm=comm(e.comm) if start else None))

    def _take(self, timeout_ms: int) -> list:
        self.ring.poll(timeout_ms)
        batch, self.ready = self.ready, []
        return batch

    def events(self, timeout: float):
        while True:
            batch = self._take(int(timeout * 1000))
            if not batch:
                yield None
            yield from batch

    def pending(self):
        """The events already in the ring, without waiting."""
        yield from self._take(0)

    @property
    def lost(self) -> int:
        return self.obj.lost_events()


def tracepoints_present() -> list[str]:
    return [f"{g}:{e}" for g, e in TRACEPOINTS if checks.tracepoint_exists(g, e)]


def backends() -> list[tuple[str, bool, str]]:
    """(backend, usable here, why) for each way netkit could see scans and their requesters."""
    out = []
    try:
        nl = nl80211.Nl80211()
        out.append(("nl80211", True, f"scan events from generic-netlink family nl80211 "
                                     f"(id {nl.family}), multicast group scan (id {nl.groups['scan']})"))
        nl.close()
    except NetkitError as exc:
        out.append(("nl80211", False, str(exc)))
    try:
        with requester_object(0):            # a real load and attach, then detach
            pass
        out.append(("requester", True, "tp_btf/sys_enter sees each TRIGGER_SCAN request a process "
                                       "sends: PID and COMM of who asked (with nl80211)"))
    except NetkitError as exc:
        out.append(("requester", False, str(exc)))
    out.append(("tracepoint", *tracepoint_usable()))
    return out


def tracepoint_usable() -> tuple[bool, str]:
    """Whether the tracepoint backend runs here (a real load and attach), and why not."""
    try:
        present = tracepoints_present()
        if len(present) < len(TRACEPOINTS):
            return False, ("no cfg80211 tracepoints (rdev_scan, cfg80211_scan_done): no cfg80211 "
                           "in this kernel")
        with tracepoint_object():
            pass
    except NetkitError as exc:
        return False, str(exc)
    return True, (f"tp_btf on {', '.join(present)} (and rdev_return_int): kernel timestamps, "
                  "the requesting task, typed by the cfg80211 module's BTF")


def list_backends(out: Output) -> None:
    rows = backends()
    if out.mode == "json":
        for name, ok, why in rows:
            out.record({"type": "backend", "backend": name, "available": ok, "reason": why})
        return
    out.table([Column("BACKEND", 10, "<"), Column("AVAILABLE", 9, "<"), Column("REASON", 0, "<")],
              [(name, "yes" if ok else "no", why) for name, ok, why in rows])


# -- view -----------------------------------------------------------------------------------------

def ssid_text(ssid: bytes) -> str:
    """An SSID is any 32 bytes: show it as text, with undecodable and control bytes escaped."""
    text = ssid.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def cell(value) -> str:
    """A summary cell: '-' for unknown, milliseconds to 0.1."""
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def scan_type(record: nl80211.ScanRecord) -> str | None:
    return None if record.full is None else ("full" if record.full else "partial")


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class ScanView:
    """Prints each scan as it ends and keeps what the per-interface summary needs."""

    def __init__(self, out: Output):
        self.out = out
        self.table = StreamTable(out, COLUMNS)
        self.by_interface: dict[str, list[nl80211.ScanRecord]] = defaultdict(list)

    def scan(self, r: nl80211.ScanRecord) -> None:
        self.by_interface[r.interface].append(r)
        from netkit.render.fields import clock_ms, iso
        if self.out.mode == "json":
            start = iso(r.start_wall) if r.start_wall is not None else None
            self.out.record({
                "type": "scan", "ts": start, "interface": r.interface, "ifindex": r.ifindex,
                "wiphy": r.wiphy, "pid": r.pid, "comm": r.comm, "scan_type": scan_type(r),
                "ssids": [ssid_text(s) for s in r.ssids], "freq_count": len(r.freqs),
                "freqs_mhz": r.freqs, "flags": nl80211.flag_names(r.flags),
                "duration_ms": ms(r.duration_s), "result": r.result,
                "bss_found": r.bss_found, "bss_total": r.bss_total})
            return
        start = clock_ms(r.start_wall) if r.start_wall is not None else "-"
        ssids = ",".join(ssid_text(s) or "*" for s in r.ssids) or "-"
        bss = ("-" if r.bss_total is None else
               f"{'-' if r.bss_found is None else r.bss_found}/{r.bss_total}")
        duration = ms(r.duration_s)
        self.table.row([start, r.interface, r.pid if r.pid is not None else "-", r.comm or "-",
                        scan_type(r) or "?", len(r.freqs),
                        "-" if duration is None else f"{duration:.1f}", r.result, bss, ssids])

    def summary_rows(self, lost: int) -> list[dict]:
        rows = []
        for name in sorted(self.by_interface):
            scans = self.by_interface[name]
            timed = [s.duration_s for s in scans if s.duration_s is not None and s.result != "unfinished"]
            found = [s.bss_found for s in scans if s.bss_found is not None]
            rows.append({
                "interface": name, "scans": len(scans),
                "done": sum(s.result == "done" for s in scans),
                "aborted": sum(s.result == "aborted" for s in scans),
                "unfinished": sum(s.result == "unfinished" for s in scans),
                "avg_duration_ms": ms(sum(timed) / len(timed)) if timed else None,
                "max_duration_ms": ms(max(timed)) if timed else None,
                "bss_found_max": max(found) if found else None, "lost_events": lost})
        return rows

    def summary(self, lost: int) -> None:
        """Per interface; `lost`: times the kernel dropped scan events (socket buffer full)."""
        self.out.lost(TOOL, lost, "scan event batches", "the netlink socket's buffer was full")
        rows = self.summary_rows(lost)
        if self.out.mode == "json":
            for row in rows:
                self.out.record({"type": "summary", **row})
            return
        if not rows:
            self.out.note("No scans seen.")
            return
        self.out.line()
        self.out.table(SUMMARY_COLUMNS, [[cell(v) for k, v in row.items() if k != "lost_events"]
                                         for row in rows],
                       title="Scans per interface:")


# -- command --------------------------------------------------------------------------------------

def command(interface: InterfaceOpt = None, backend: BackendOpt = Backend.auto,
            duration: DurationOpt = None, json: JsonOpt = False, no_color: NoColorOpt = False,
            verbose: VerboseOpt = False, list_: ListOpt = False):
    out = open_output(json, no_color, verbose)
    if list_:
        list_backends(out)
        return
    if interface:
        check_interface(interface)
    nl = open_nl80211()
    try:
        trace(nl, out, Backend(backend), interface, duration)
    finally:
        nl.close()


def check_interface(name: str) -> None:
    """-I must name an existing wireless interface (cfg80211 gives those a phy80211 link)."""
    net = Path("/sys/class/net") / name
    if "/" in name or not net.exists():
        raise NetkitError(f"no interface {name}")
    if not (net / "phy80211").exists():
        raise NetkitError(f"{name} is not a wireless interface")


def open_nl80211() -> nl80211.Nl80211:
    """Both backends need nl80211: the events or (tracepoint) the channels and the BSS cache."""
    try:
        return nl80211.Nl80211()
    except nl80211.NoWireless:
        raise NetkitError("no wireless support in this kernel (no cfg80211: no nl80211 "
                          "generic-netlink family, no cfg80211 tracepoints); see --list") from None


def open_requesters(stack: contextlib.ExitStack, family: int, tracker: nl80211.ScanTracker,
                    out: Output) -> Requesters | None:
    """The BPF side is a bonus: without it (not root, object not built) PID and COMM show '-'."""
    try:
        return Requesters(stack.enter_context(requester_object(family)), tracker)
    except NetkitError as exc:
        out.note(f"netkit {TOOL}: requesting processes unknown: {exc}")
        return None


def open_source(stack: contextlib.ExitStack, nl: nl80211.Nl80211, backend: Backend,
                tracker: nl80211.ScanTracker, out: Output):
    """The chosen backend's event source. auto: the tracepoints where they load (kernel
    timestamps, every requester), else nl80211 (no root needed)."""
    if backend != Backend.nl80211:
        try:
            return TracepointSource(stack.enter_context(tracepoint_object()))
        except NetkitError as exc:
            if backend == Backend.tracepoint:
                raise
            if tracepoints_present():   # they exist but did not load: say why nl80211 is used
                out.note(f"netkit {TOOL}: using nl80211: tracepoint backend: {exc}")
    return NetlinkSource(nl, open_requesters(stack, nl.family, tracker, out))


def trace(nl: nl80211.Nl80211, out: Output, backend: Backend, interface: str | None,
          duration: float | None) -> None:
    if backend != Backend.tracepoint:
        nl.subscribe()   # before anything else, so a scan starting now is not missed
    if duration == 0 and backend == Backend.nl80211:
        return
    try:
        channels = nl.channels()
    except OSError:
        channels = {}   # full/partial becomes "?"
    tracker = nl80211.ScanTracker()
    with contextlib.ExitStack() as stack:
        source = open_source(stack, nl, backend, tracker, out)
        if duration == 0:
            return
        view = ScanView(out)
        follow(nl, out, view, tracker, source, channels, interface, duration)


def follow(nl, out, view, tracker, source, channels, interface, duration) -> None:
    """Print each scan as it ends, until Ctrl-C or the duration, then the summary."""
    out.note("Tracing ieee80211 SSID scans. Hit Ctrl-C to end.")   # the original's banner
    stop_at = None if duration is None else time.monotonic() + duration

    def show(event) -> None:
        nonlocal channels
        record = tracker.feed(event) if event else None
        if record is None or (interface and record.interface != interface):
            return
        if record.wiphy not in channels:   # a radio that appeared since we started
            try:
                channels = nl.channels()
            except OSError:
                pass
        nl.complete(record, channels)
        view.scan(record)

    # An event is taken in whole or not at all: Ctrl-C waits while one is shown (its record
    # fed, completed from the kernel and printed), or the scan would be neither printed nor
    # left unfinished.
    try:
        for event in source.events(timeout=0.2):
            if stop_at is not None and time.monotonic() >= stop_at:
                break
            with signals.held():
                show(event)
    except KeyboardInterrupt:
        pass
    # What the kernel had delivered before the end (a scan that ended just before Ctrl-C, its
    # event not yet read) is shown, not dropped with the socket or the ring.
    try:
        for event in source.pending():
            with signals.held():
                show(event)
    except KeyboardInterrupt:
        pass
    for record in tracker.unfinished():
        if not interface or record.interface == interface:
            nl80211.mark_full(record, channels)
            view.scan(record)
    view.summary(source.lost)
