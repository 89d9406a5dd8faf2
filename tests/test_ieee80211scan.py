"""ieee80211scan: nl80211 parsing and scan pairing on messages built here, the real no-wireless path,
and a mac80211_hwsim integration test for kernels that have wireless.

The message builders below follow the netlink / nl80211 uapi layout on their own (struct only),
so a layout mistake in netkit.net.nl80211 is not mirrored by the test that checks it.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import struct
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import (Traced, assert_one_line_error, kernel_has_tracepoint, read_until,
                      require_root_bpf, run_netkit, skip_for_hardware)
from netkit.cli import build_app
from netkit.net import nl80211 as nl

FAMILY = 0x1d        # any id nlctrl might hand out; the parser must not assume one
NESTED = 0x8000      # NLA_F_NESTED, which the kernel sets on nested attributes


# --- byte builders from the uapi layout: nlattr {u16 len; u16 type}, 4-byte aligned ---

def attr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("<HH", 4 + len(value), kind) + value
    return raw + bytes(-len(raw) % 4)


def u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("<I", value))


def u64(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("<Q", value))


def nested(kind: int, *members: bytes) -> bytes:
    return attr(kind | NESTED, b"".join(members))


def message(cmd: int, *attrs: bytes, family: int = FAMILY, flags: int = 0) -> bytes:
    """nlmsghdr {u32 len, u16 type, u16 flags, u32 seq, u32 pid} + genlmsghdr {u8 cmd, u8 ver, u16}."""
    body = struct.pack("<BBH", cmd, 1, 0) + b"".join(attrs)
    return struct.pack("<IHHII", 16 + len(body), family, flags, 0, 0) + body


def scan_message(cmd, *, ifindex=None, wiphy=0, wdev=None, ssids=(), freqs=(), flags=None):
    """A scan-group message as cfg80211 sends it: wiphy, ifindex, wdev, SSIDs, freqs, flags."""
    parts = [u32(1, wiphy)]                                  # NL80211_ATTR_WIPHY
    if ifindex is not None:
        parts.append(u32(3, ifindex))                        # NL80211_ATTR_IFINDEX
    if wdev is not None:
        parts.append(u64(153, wdev))                         # NL80211_ATTR_WDEV
    if ssids:                                                # NL80211_ATTR_SCAN_SSIDS, 1-based
        parts.append(nested(45, *(attr(i, s) for i, s in enumerate(ssids))))
    if freqs:                                                # NL80211_ATTR_SCAN_FREQUENCIES
        parts.append(nested(44, *(u32(i, f) for i, f in enumerate(freqs))))
    if flags is not None:
        parts.append(u32(158, flags))                        # NL80211_ATTR_SCAN_FLAGS
    return message(cmd, *parts)


TRIGGER, RESULTS, ABORTED = 33, 34, 35
FREQS_24 = [2412, 2417, 2422, 2427, 2432, 2437, 2442, 2447, 2452, 2457, 2462]


def events(buf: bytes, wall: float = 0.0, boot_ns: int = 0):
    return nl.parse_datagram(buf, FAMILY, wall, boot_ns)


# --- parsing ---

def test_trigger_scan_attributes_are_parsed():
    buf = scan_message(TRIGGER, ifindex=7, wiphy=2, ssids=[b"", b"homenet"],
                       freqs=[2412, 5180, 5955], flags=(1 << 1) | (1 << 3))
    [ev] = events(buf, wall=1700000000.5, boot_ns=123)
    assert ev.kind == "start"
    assert (ev.wiphy, ev.ifindex, ev.wdev) == (2, 7, None)
    assert ev.ssids == [b"", b"homenet"]
    assert ev.freqs == [2412, 5180, 5955]
    assert ev.flags == 0b1010
    assert nl.flag_names(ev.flags) == ["flush", "random-addr"]
    assert (ev.wall, ev.boot_ns) == (1700000000.5, 123)


def test_end_messages_and_foreign_messages():
    # One datagram: done, aborted, a scheduled-scan event (cmd 77) and a message of another
    # family. Only the two scan ends come out, in order.
    buf = (scan_message(RESULTS, ifindex=3) + scan_message(ABORTED, ifindex=4)
           + scan_message(77, ifindex=3) + message(TRIGGER, u32(3, 9), family=FAMILY + 1))
    kinds = [(e.kind, e.ifindex) for e in events(buf)]
    assert kinds == [("done", 3), ("aborted", 4)]


def test_truncated_datagram_stops_cleanly():
    buf = scan_message(TRIGGER, ifindex=5, freqs=FREQS_24)
    assert [e.ifindex for e in events(buf + buf[:20])] == [5]   # second message cut short
    assert events(buf[:10]) == []


def test_wdev_only_scan_and_unknown_flag_bits():
    [ev] = events(scan_message(TRIGGER, wdev=0x100000001, flags=1 << 30))
    assert ev.ifindex is None and ev.wdev == 0x100000001
    assert ev.key == ("wdev", 0x100000001)
    assert nl.flag_names(ev.flags) == ["bit30"]
    assert nl.interface_name(None, ev.wdev) == "wdev0x100000001"


# --- pairing ---

def names(ifindex, wdev):
    return {11: "wlan0", 12: "wlan1", 13: "wlan2"}.get(ifindex) or nl.interface_name(None, wdev)


def feed_all(tracker, timed_messages):
    out = []
    for t_ms, buf in timed_messages:
        for ev in events(buf, wall=1000 + t_ms / 1e3, boot_ns=t_ms * 1_000_000):
            rec = tracker.feed(ev)
            if rec:
                out.append(rec)
    return out


def test_overlapping_scans_on_two_interfaces_pair_per_interface():
    tracker = nl.ScanTracker(name_of=names)
    records = feed_all(tracker, [
        (0, scan_message(TRIGGER, ifindex=11, wiphy=0, ssids=[b""], freqs=FREQS_24)),
        (100, scan_message(TRIGGER, ifindex=12, wiphy=1, ssids=[b"corp"], freqs=[5180, 5200])),
        (350, scan_message(RESULTS, ifindex=12, wiphy=1)),
        (1200, scan_message(ABORTED, ifindex=11, wiphy=0)),
    ])
    assert [(r.interface, r.result) for r in records] == [("wlan1", "done"), ("wlan0", "aborted")]
    wlan1, wlan0 = records
    assert wlan1.duration_s == pytest.approx(0.250)
    assert wlan0.duration_s == pytest.approx(1.200)
    assert wlan1.ssids == [b"corp"] and wlan1.freqs == [5180, 5200]   # from the start message
    assert wlan0.start_wall == pytest.approx(1000.0)
    assert wlan0.pid is None and wlan0.comm is None                   # netlink cannot know
    assert tracker.pending == {}


def request(ifindex, t_ms, pid, comm, wdev=None):
    return nl.ScanRequest(ifindex, wdev, t_ms * 1_000_000, pid, comm)


def test_requesters_are_paired_with_the_scan_they_started():
    tracker = nl.ScanTracker(name_of=names)
    tracker.requested(request(11, 0, 100, "stale"))              # > 2 s before its scan
    tracker.requested(request(11, 2990, 200, "iw"))              # superseded by the next one
    tracker.requested(request(11, 2995, 300, "wpa_supplicant"))
    tracker.requested(request(12, 2998, 400, "iwd"))
    tracker.requested(request(None, 2999, 500, "p2p", wdev=0x100000002))
    tracker.requested(request(None, 2999, 600, "by-wdev", wdev=0x200000013))   # a netdev's wdev
    records = feed_all(tracker, [
        (3000, scan_message(TRIGGER, ifindex=11, freqs=FREQS_24)),
        (3001, scan_message(TRIGGER, ifindex=12, wiphy=1, freqs=[5180])),
        (3002, scan_message(TRIGGER, wdev=0x100000002, wiphy=1, freqs=[2437])),
        (3003, scan_message(TRIGGER, ifindex=13, wdev=0x200000013, wiphy=2, freqs=[2412])),
        (3500, scan_message(RESULTS, ifindex=12, wiphy=1)),
        (3600, scan_message(ABORTED, ifindex=11)),
        (3700, scan_message(RESULTS, wdev=0x100000002, wiphy=1)),
        (3800, scan_message(RESULTS, ifindex=13, wdev=0x200000013, wiphy=2)),
    ])
    assert [(r.interface, r.pid, r.comm) for r in records] == [
        ("wlan1", 400, "iwd"), ("wlan0", 300, "wpa_supplicant"),
        ("wdev0x100000002", 500, "p2p"), ("wlan2", 600, "by-wdev")]
    # a request sent after the scan began (the kernel refused it: busy) is not its requester
    tracker.requested(request(11, 3900, 700, "late"))
    [rec] = feed_all(tracker, [(3850, scan_message(TRIGGER, ifindex=11)),
                               (3950, scan_message(RESULTS, ifindex=11))])
    assert (rec.pid, rec.comm) == (None, None)
    # nor is one sent more than 2 s before it (its scan was refused; this one is somebody's
    # the kernel started on its own, or whose request we did not see)
    tracker.requested(request(12, 4000, 800, "old"))
    [rec] = feed_all(tracker, [(6001, scan_message(TRIGGER, ifindex=12, wiphy=1)),
                               (6100, scan_message(RESULTS, ifindex=12, wiphy=1))])
    assert (rec.interface, rec.pid, rec.comm) == ("wlan1", None, None)


def test_tracepoint_events_carry_their_requester_and_refusals_vanish():
    """The tracepoint backend's events name the task that asked (no request list needed); a scan
    the driver refused closes nothing and leaves nothing open."""
    tracker = nl.ScanTracker(name_of=names)
    tracker.requested(request(11, 999, 100, "nl80211-req"))      # ignored: the event knows better

    def ev(kind, t_ms, pid=None, comm=None, ifindex=11):
        return nl.ScanEvent(kind, 0, ifindex, 0x100000001, [b""], [2412], 0, 1000 + t_ms / 1e3,
                            t_ms * 1_000_000, pid, comm)
    assert tracker.feed(ev("start", 1000, 42, "iw")) is None
    assert tracker.feed(ev("refused", 1001, 42, "iw", ifindex=12)) is None   # other interface
    rec = tracker.feed(ev("done", 1300))
    assert (rec.interface, rec.pid, rec.comm, rec.result) == ("wlan0", 42, "iw", "done")
    assert rec.duration_s == pytest.approx(0.3)
    assert tracker.feed(ev("start", 2000, 43, "wpa_supplicant")) is None
    assert tracker.feed(ev("refused", 2001, 43, "wpa_supplicant")) is None
    assert tracker.pending == {} and tracker.unfinished() == []
    # an end after a refusal has no start: shown without one, as a missed start would be
    rec = tracker.feed(ev("aborted", 2500))
    assert (rec.pid, rec.duration_s, rec.result) == (None, None, "aborted")


def test_end_without_start_and_start_without_end():
    tracker = nl.ScanTracker(name_of=names)
    records = feed_all(tracker, [
        (0, scan_message(RESULTS, ifindex=11, freqs=[2412])),        # began before we listened
        (10, scan_message(TRIGGER, ifindex=11, freqs=FREQS_24)),
        (500, scan_message(TRIGGER, ifindex=11, freqs=[2412])),      # the end of 10 was lost
        (600, scan_message(TRIGGER, ifindex=12, freqs=[5180])),
    ])
    assert [(r.result, r.duration_s, r.start_wall) for r in records] == [
        ("done", None, None), ("unfinished", None, pytest.approx(1000.010))]
    assert records[0].freqs == [2412]
    still_open = tracker.unfinished(boot_ns=700_000_000)
    assert sorted((r.interface, r.result, round(r.duration_s, 3)) for r in still_open) == [
        ("wlan0", "unfinished", 0.2), ("wlan1", "unfinished", 0.1)]
    assert tracker.pending == {}


# --- what the kernel knows after a scan ---

def bss_entry(last_seen_ns=None, seen_ms_ago=None, freq=2412):
    members = [attr(1, bytes(6)), u32(2, freq)]                  # BSSID, FREQUENCY
    if seen_ms_ago is not None:
        members.append(u32(10, seen_ms_ago))                     # SEEN_MS_AGO
    if last_seen_ns is not None:
        members.append(u64(15, last_seen_ns))                    # LAST_SEEN_BOOTTIME
    return nested(47, *members)                                  # NL80211_ATTR_BSS


def payload(*attrs):
    return b"".join(attrs)


def test_bss_found_during_the_scan_are_counted():
    start = 5_000_000_000
    dump = [payload(u32(46, 1), u32(3, 11), bss_entry(last_seen_ns=start + 10)),
            payload(u32(3, 11), bss_entry(last_seen_ns=start - 1)),          # stale cache entry
            payload(u32(3, 11), bss_entry(seen_ms_ago=50)),                  # old kernels: age
            payload(u32(3, 11), bss_entry(seen_ms_ago=5000)),
            payload(u32(3, 11))]                                             # no BSS attribute
    now = start + 1_000_000_000
    assert nl.count_fresh_bss(dump, start, now) == (2, 4)
    assert nl.count_fresh_bss(dump, None, now) == (None, 4)


def wiphy_part(wiphy, band, freqs, disabled=()):
    chans = [nested(i, u32(1, f), *([attr(2, b"")] if f in disabled else []))
             for i, f in enumerate(freqs)]
    return payload(u32(1, wiphy), nested(22, nested(band, nested(1, *chans))))


def test_split_wiphy_dump_and_full_or_partial():
    dump = [payload(u32(1, 0), attr(2, b"phy0\0")),                    # a part without bands
            wiphy_part(0, 0, FREQS_24 + [2467, 2472], disabled=(2467, 2472)),
            wiphy_part(0, 1, [5180, 5200]),                            # same wiphy, next message
            wiphy_part(1, 1, [5180])]
    channels = nl.enabled_channels(dump)
    assert channels == {0: set(FREQS_24) | {5180, 5200}, 1: {5180}}

    def record(wiphy, freqs):
        return nl.ScanRecord("wlan0", 11, None, wiphy, 0.0, 0, 0.1, "done", [b""], freqs, 0)
    full, partial, unknown = (record(0, FREQS_24 + [5180, 5200]), record(0, [2412, 2437]),
                              record(7, [2412]))
    for r in (full, partial, unknown):
        nl.mark_full(r, channels)
    assert (full.full, partial.full, unknown.full) == (True, False, None)


# --- generic netlink against this kernel ---

def test_nlctrl_resolves_itself_and_dumps_families():
    genl = nl.GenlSocket()
    try:
        family, groups = nl.resolve_family(genl, "nlctrl")
        assert family == 0x10 and "notify" in groups
        dump = genl.request(0x10, 3, dump=True)        # CTRL_CMD_GETFAMILY, every family
        names_seen = {nl.attr_map(p)[2].rstrip(b"\0").decode() for _c, p in dump}
        assert "nlctrl" in names_seen and len(names_seen) >= 2
    finally:
        genl.close()


@pytest.mark.kernel
def test_multicast_subscription_receives_kernel_events():
    """The subscribe/receive path nl80211's scan group uses, on a genl family this kernel has:
    the netdev family announces a new interface on its "mgmt" group."""
    genl, events = nl.GenlSocket(), nl.GenlSocket()
    name = f"nk80211t{os.getpid() % 100000}"
    try:
        family, groups = nl.resolve_family(genl, "netdev")
        events.subscribe(groups["mgmt"])
        assert events.receive(0.05) is None                      # quiet: the timeout path
        subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"],
                       check=True)
        deadline = time.monotonic() + 5
        seen = []
        while time.monotonic() < deadline and not seen:
            buf = events.receive(0.5)
            seen += [kind for kind, _f, _s, _p in nl.iter_messages(buf or b"")]
        assert family in seen
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True)
        genl.close()
        events.close()


def unused_family_id() -> int:
    """A generic-netlink family id nothing has here: requests to it fail with ENOENT, harmlessly."""
    genl = nl.GenlSocket()
    try:
        taken = {struct.unpack_from("<H", nl.attr_map(p)[1])[0] for _c, p in genl.request(0x10, 3, dump=True)}
    finally:
        genl.close()
    return next(i for i in range(0x7ff0, 0x7000, -1) if i not in taken)


@pytest.mark.kernel
def test_bpf_sees_who_sends_trigger_scan_and_the_tracker_credits_them():
    """The requester backend for real: ieee80211scan.bpf.o watches this process send
    TRIGGER_SCAN requests (to an unused family id standing in for nl80211) by sendto() and
    sendmsg(); other commands, families and non-netlink sockets are ignored."""
    require_root_bpf("ieee80211scan")
    from netkit.tools.ieee80211scan import Requesters, requester_object
    family = unused_family_id()
    wiphy = u32(1, 0)
    ssids = nested(45, attr(1, b""), attr(2, b"homenet"))
    request = 0x5                                        # NLM_F_REQUEST | NLM_F_ACK
    trigger_if = message(TRIGGER, wiphy, ssids, u32(158, 8), u32(3, 42), family=family,
                         flags=request)
    trigger_wdev = message(TRIGGER, wiphy, u64(153, 0x300000004), family=family, flags=request)
    get_scan = message(32, u32(3, 43), family=family, flags=request)
    other_family = message(TRIGGER, u32(3, 44), family=family - 1, flags=request)
    not_a_request = message(TRIGGER, u32(3, 45), family=family)

    tracker = nl.ScanTracker(name_of=names)
    genl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nl.NETLINK_GENERIC)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with requester_object(family) as obj, genl, udp:
        requesters = Requesters(obj, tracker)
        genl.bind((0, 0))
        sent_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        genl.sendto(trigger_if, (0, 0))
        genl.sendmsg([trigger_wdev])
        genl.sendto(get_scan, (0, 0))
        genl.sendto(other_family, (0, 0))
        genl.sendto(not_a_request, (0, 0))
        udp.sendto(trigger_if, ("127.0.0.1", 9))
        requesters.poll()
    comm = Path("/proc/self/comm").read_text().strip()
    got = [(r.ifindex, r.wdev, r.pid, r.comm) for r in tracker.requests]
    assert got == [(42, 0, os.getpid(), comm), (0, 0x300000004, os.getpid(), comm)]
    assert all(0 <= r.boot_ns - sent_ns < 1_000_000_000 for r in tracker.requests)

    # the scans the kernel would announce next are credited to this process
    now_ms = time.clock_gettime_ns(time.CLOCK_BOOTTIME) // 1_000_000 + 1
    records = feed_all(tracker, [(now_ms, scan_message(TRIGGER, ifindex=42)),
                                 (now_ms + 1, scan_message(TRIGGER, wdev=0x300000004)),
                                 (now_ms + 50, scan_message(RESULTS, ifindex=42)),
                                 (now_ms + 60, scan_message(ABORTED, wdev=0x300000004))])
    assert [(r.result, r.pid, r.comm) for r in records] == [
        ("done", os.getpid(), comm), ("aborted", os.getpid(), comm)]


def kernel_has_nl80211() -> bool:
    genl = nl.GenlSocket()
    try:
        nl.resolve_family(genl, "nl80211")
        return True
    except OSError as e:
        assert e.errno == errno.ENOENT, e
        return False
    finally:
        genl.close()


def test_nl80211_lookup_matches_the_kernel():
    """The family exists exactly when the kernel has wireless (a phy in /sys/class/ieee80211)."""
    if kernel_has_nl80211():
        assert nl.Nl80211().groups.get("scan")
    else:
        assert not Path("/sys/class/ieee80211").exists()
        with pytest.raises(nl.NoWireless, match="no wireless support"):
            nl.Nl80211()


# --- the view: records from the real pairing, rendered plain and as NDJSON ---

def rendered(json_mode: bool) -> tuple[str, list]:
    import io
    from netkit.render.output import Output
    from netkit.tools.ieee80211scan import ScanView
    tracker = nl.ScanTracker(name_of=names)
    records = feed_all(tracker, [
        (0, scan_message(TRIGGER, ifindex=11, wiphy=0, ssids=[b""], freqs=FREQS_24, flags=8)),
        (100, scan_message(TRIGGER, ifindex=12, wiphy=1, ssids=[b"corp", b"caf\xe9", b"a\nb"],
                           freqs=[5180, 5200])),
        (350, scan_message(RESULTS, ifindex=12, wiphy=1)),
        (1200, scan_message(ABORTED, ifindex=11, wiphy=0)),
        (1300, scan_message(TRIGGER, ifindex=11, wiphy=0, freqs=[2412])),
        (1500, scan_message(RESULTS, ifindex=11, wiphy=0)),
    ])
    channels = {0: set(FREQS_24), 1: {5180, 5200, 5220}}
    for r in records:
        nl.mark_full(r, channels)
    records[0].bss_found, records[0].bss_total = 3, 5
    stream = io.StringIO()
    view = ScanView(Output(json_mode=json_mode, stream=stream))
    for r in records:
        view.scan(r)
    view.summary(0)
    return stream.getvalue(), records


def test_plain_view_lines_up_and_summarises_per_interface():
    text, _ = rendered(json_mode=False)
    lines = text.splitlines()
    header = lines[0].split()
    assert header == ["TIME", "INTERFACE", "PID", "COMM", "TYPE", "FREQS", "DURms", "RESULT",
                      "BSS", "SSIDS"]
    scans = lines[1:4]
    assert [line.split()[1:] for line in scans] == [
        ["wlan1", "-", "-", "partial", "2", "250.0", "done", "3/5", "corp,caf\\xe9,a\\x0ab"],
        ["wlan0", "-", "-", "full", "11", "1200.0", "aborted", "-", "*"],
        ["wlan0", "-", "-", "partial", "1", "200.0", "done", "-", "-"]]
    # aligned: every column of a row starts where its header starts
    starts = [lines[0].index(h) for h in ("INTERFACE", "TYPE", "RESULT", "SSIDS")]
    for line in scans:
        for pos in starts:
            assert line[pos - 1] == " " and line[pos] != " "
    assert "Scans per interface:" in text
    summary = [line.split() for line in lines[lines.index("Scans per interface:") + 2:]]
    assert summary == [["wlan0", "2", "1", "1", "0", "700.0", "1200.0", "-"],
                       ["wlan1", "1", "1", "0", "0", "250.0", "250.0", "3"]]
    assert "\u2500" not in text and "\x1b" not in text          # no box drawing, no colour


def test_json_view_has_stable_keys_and_units():
    text, records = rendered(json_mode=True)
    objs = [json.loads(line) for line in text.splitlines()]
    scans = [o for o in objs if o["type"] == "scan"]
    assert [(o["interface"], o["result"], o["duration_ms"], o["scan_type"]) for o in scans] == [
        ("wlan1", "done", 250.0, "partial"), ("wlan0", "aborted", 1200.0, "full"),
        ("wlan0", "done", 200.0, "partial")]
    first = scans[0]
    assert first["ssids"] == ["corp", "caf\\xe9", "a\\x0ab"] and first["freq_count"] == 2
    assert first["freqs_mhz"] == [5180, 5200]
    assert (first["bss_found"], first["bss_total"], first["pid"], first["comm"]) == (3, 5, None, None)
    assert scans[1]["ssids"] == [""] and scans[1]["flags"] == ["random-addr"]
    # ts is the scan's start (wall 1000.1 s here), ISO 8601 with the UTC offset
    assert first["ts"] == datetime.fromtimestamp(1000.1).astimezone().isoformat(timespec="milliseconds")
    assert first["ts"][-6] in "+-"
    summaries = {o["interface"]: o for o in objs if o["type"] == "summary"}
    assert summaries["wlan0"] == {"ts": summaries["wlan0"]["ts"], "type": "summary",
                                  "interface": "wlan0", "scans": 2, "done": 1, "aborted": 1,
                                  "unfinished": 0, "avg_duration_ms": 700.0,
                                  "max_duration_ms": 1200.0, "bss_found_max": None,
                                  "lost_events": 0}


# --- the command, through typer's runner and as the installed program ---

def scan_cmd(*args):
    return run_netkit("ieee80211scan", *args)


def test_no_wireless_is_one_line_and_exit_1():
    """On this kernel (no cfg80211) the real nlctrl lookup fails with ENOENT."""
    proc = scan_cmd("-d", "1")
    if kernel_has_nl80211():
        assert proc.returncode == 0, proc.stderr
        return
    line = assert_one_line_error(proc, "ieee80211scan")
    assert line.startswith("netkit ieee80211scan: no wireless support in this kernel")
    assert proc.stdout == ""


def test_interface_must_exist_and_be_wireless():
    proc = scan_cmd("-I", "nosuch0")
    assert assert_one_line_error(proc, "ieee80211scan") == "netkit ieee80211scan: no interface nosuch0"
    proc = scan_cmd("-I", "lo", "-d", "0")
    assert (assert_one_line_error(proc, "ieee80211scan")
            == "netkit ieee80211scan: lo is not a wireless interface")


@pytest.mark.kernel
def test_list_shows_backends_and_why():
    require_root_bpf("ieee80211scan")
    proc = scan_cmd("--list")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    assert set(rows) == {"nl80211", "requester", "tracepoint"}
    assert rows["requester"].split()[1] == "yes"       # root, object built: it loads here
    has_nl = kernel_has_nl80211()
    assert rows["nl80211"].split()[1] == ("yes" if has_nl else "no")
    assert "nl80211" in rows["nl80211"].split(None, 2)[2]
    has_tp = kernel_has_tracepoint("cfg80211", "rdev_scan")
    assert ("tp_btf on cfg80211:rdev_scan" if has_tp else "no cfg80211 tracepoints") in rows["tracepoint"]

    proc = scan_cmd("--list", "--json")
    objs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(o["type"], o["backend"], o["available"]) for o in objs] == [
        ("backend", "nl80211", has_nl), ("backend", "requester", True),
        ("backend", "tracepoint", has_tp)]
    assert all(o["reason"] for o in objs)


def test_usage_errors_exit_2():
    runner = CliRunner()
    for bad in (["--bogus"], ["-d", "-1"], ["-d", "soon"]):
        result = runner.invoke(build_app(), ["ieee80211scan", *bad])
        assert result.exit_code == 2, (bad, result.output)
    result = runner.invoke(build_app(), ["ieee80211scan", "--help"])
    assert result.exit_code == 0 and "--list" in result.output and "--interface" in result.output


# --- end to end on mac80211_hwsim: an access point on one radio, scans on the other ---
#
# Our 6.18 kernel has no wireless; these run on Debian's 6.1 under qemu (tools/vmtest.py), where
# mac80211_hwsim makes two radios that hear each other. hostapd runs an access point on the
# first; every kind of scan runs on the second while ieee80211scan traces it, with each backend.
# The values are checked against what the test itself knows: the PIDs it started, the channels
# and SSID it asked for, iw's own BSS list, the channels iw says the radio has, and the time it
# measured around each scan.

AP_SSID = "netkit-hwsim-ap"
AP_FREQ = 2412                 # hostapd's channel 1
CMD_ABORT_SCAN = 114           # NL80211_CMD_ABORT_SCAN (linux/nl80211.h)
REQUEST_ACK = 0x5              # NLM_F_REQUEST | NLM_F_ACK


def hwsim_interfaces() -> list[str]:
    if not Path("/sys/module/mac80211_hwsim").exists() and shutil.which("modprobe"):
        subprocess.run(["modprobe", "mac80211_hwsim", "radios=2"], capture_output=True)
        time.sleep(0.5)
    net = Path("/sys/class/net")
    return sorted(i.name for i in net.iterdir() if (i / "phy80211").exists()
                  and "hwsim" in os.path.realpath(i / "phy80211"))


@pytest.fixture(scope="module")
def hwsim_ap():
    """(station interface, AP's BSSID): hostapd's access point AP_SSID on the first hwsim radio,
    the second radio's interface up for scanning."""
    require_root_bpf("ieee80211scan")
    ifaces = hwsim_interfaces()
    if len(ifaces) < 2:
        if os.environ.get("NETKIT_IN_VM") == "1":
            pytest.fail(f"the VM has no two mac80211_hwsim radios (interfaces: {ifaces})")
        # this kernel has no Wi-Fi: the VM subset (Debian's 6.1 with mac80211_hwsim) runs these
        skip_for_hardware("wifi", "mac80211_hwsim cannot be loaded")
    for tool in ("iw", "hostapd"):
        assert shutil.which(tool), f"install {tool} (apt-get install {tool})"
    ap, sta = ifaces[:2]
    conf = Path(f"/tmp/netkit-hostapd-{os.getpid()}.conf")
    conf.write_text(f"interface={ap}\ndriver=nl80211\nssid={AP_SSID}\nhw_mode=g\nchannel=1\n")
    hostapd = subprocess.Popen(["hostapd", str(conf)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        up, seen = read_until(hostapd, hostapd.stdout, "AP-ENABLED", 30)
        assert up, f"hostapd did not start its access point: {seen}"
        subprocess.run(["ip", "link", "set", sta, "up"], check=True)
        bssid = Path(f"/sys/class/net/{ap}/address").read_text().strip()
        yield sta, bssid
    finally:
        hostapd.terminate()
        hostapd.wait(10)
        conf.unlink()


def iw(*args: str, timeout: float = 60) -> tuple[int, str]:
    """Run iw; (its PID, its output). A scan that never ends fails the test, not hangs it."""
    proc = subprocess.Popen(["iw", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"iw {' '.join(args)} did not finish in {timeout} s: {out}")
    assert proc.returncode == 0, (args, out)
    return proc.pid, out


def iw_bss_list(out: str) -> dict[str, str]:
    """BSSID -> SSID from `iw dev X scan` output (its own dump of the scan results)."""
    found, bssid = {}, None
    for line in out.splitlines():
        if line.startswith("BSS "):
            bssid = line.split()[1].split("(")[0]
            found[bssid] = ""
        elif line.strip().startswith("SSID: ") and bssid:
            found[bssid] = line.strip()[len("SSID: "):]
    return found


def enabled_freqs(iface: str) -> list[int]:
    """The radio's channels as iw lists them, without the disabled ones."""
    phy = Path(f"/sys/class/net/{iface}/phy80211/name").read_text().strip()
    _pid, out = iw("phy", phy, "info")
    return sorted(int(line.split()[1]) for line in out.splitlines()
                  if line.strip().startswith("* ") and " MHz [" in line and "disabled" not in line)


class OwnScanner:
    """This process asks nl80211 for scans itself (TRIGGER_SCAN, ABORT_SCAN) and waits for the
    kernel's answer on the scan group, timing each scan from before its request to the end."""

    def __init__(self, iface: str):
        self.ifindex = socket.if_nametoindex(iface)
        genl = nl.GenlSocket()
        try:
            self.family, groups = nl.resolve_family(genl, "nl80211")
        finally:
            genl.close()
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nl.NETLINK_GENERIC)
        self.sock.bind((0, 0))
        self.events = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nl.NETLINK_GENERIC)
        self.events.bind((0, 0))
        self.events.setsockopt(270, 1, groups["scan"])     # SOL_NETLINK, ADD_MEMBERSHIP
        self.seq = 0

    def close(self):
        self.sock.close()
        self.events.close()

    def send(self, cmd: int, *attrs: bytes) -> None:
        self.seq += 1
        msg = bytearray(message(cmd, u32(3, self.ifindex), *attrs, family=self.family,
                                flags=REQUEST_ACK))
        struct.pack_into("<I", msg, 8, self.seq)
        self.sock.send(bytes(msg))
        reply = self.sock.recv(65536)
        kind, = struct.unpack_from("<H", reply, 4)
        error, = struct.unpack_from("<i", reply, 16)
        assert kind == 2 and error == 0, f"nl80211 command {cmd}: {os.strerror(-error)}"

    def drain(self) -> None:
        """Forget the events of scans before the next one (iw's, earlier ones)."""
        self.events.setblocking(False)
        try:
            while True:
                self.events.recv(65536)
        except BlockingIOError:
            pass
        finally:
            self.events.setblocking(True)

    def wait_end(self, timeout: float = 60) -> int:
        """The command of the scan's end on our interface: 34 (results) or 35 (aborted)."""
        deadline = time.monotonic() + timeout
        seen = []
        while (left := deadline - time.monotonic()) > 0:
            self.events.settimeout(left)
            try:
                buf = self.events.recv(65536)
            except TimeoutError:
                break
            for kind, _f, _s, payload in nl.iter_messages(buf):
                if kind == self.family and \
                        nl.attr_map(payload[4:]).get(3) == struct.pack("<I", self.ifindex):
                    seen.append(payload[0])
                    if payload[0] in (RESULTS, ABORTED):
                        return payload[0]
        raise AssertionError(f"the kernel did not end the scan in {timeout} s "
                             f"(nl80211 scan events for it: {seen})")

    def around(self, trigger) -> tuple:
        """(what trigger() returns, seconds from before it to the scan's end): a scan someone
        else requests, awaited here."""
        self.drain()
        start = time.clock_gettime(time.CLOCK_BOOTTIME)
        result = trigger()
        assert self.wait_end() == RESULTS
        return result, time.clock_gettime(time.CLOCK_BOOTTIME) - start

    def scan(self, freqs: list[int], ssid: bytes) -> float:
        """A scan of `freqs` probing for `ssid`, to its end; seconds from request to end."""
        self.drain()
        start = time.clock_gettime(time.CLOCK_BOOTTIME)
        self.send(TRIGGER, nested(44, *(u32(i, f) for i, f in enumerate(freqs, 1))),
                  nested(45, attr(1, ssid)))
        assert self.wait_end() == RESULTS
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start

    def scan_and_abort(self) -> None:
        """A scan of every channel (seconds long), aborted right after it starts."""
        self.drain()
        self.send(TRIGGER)
        self.send(CMD_ABORT_SCAN)
        assert self.wait_end() == ABORTED


def scans_by(objs: list[dict]) -> list[dict]:
    return [o for o in objs if o["type"] == "scan"]


@pytest.mark.vm
@pytest.mark.kernel
@pytest.mark.parametrize("backend", ["nl80211", "tracepoint"])
def test_hwsim_scans_end_to_end(hwsim_ap, backend):
    """Five scans on the station radio, each backend: iw's full scan and a partial one, this
    process's own request, an abort through nl80211 and one through iw; every field checked."""
    sta, ap_bssid = hwsim_ap
    channels = enabled_freqs(sta)
    own = OwnScanner(sta)
    comm = Path("/proc/self/comm").read_text().strip()
    tracer = Traced(["ieee80211scan", "--json", "-I", sta, "--backend", backend])
    try:
        began = time.time()
        # iw's combined "scan" subscribes to the scan events only after its trigger is
        # answered, so it can miss the end of a scan that ends within that gap and then wait
        # forever (iw's source warns of it; 2 of 21 two-channel scans hung so in the guest with
        # nothing else running). So iw triggers ("scan trigger", the request iw's "scan" sends),
        # the end is awaited on the test's socket, subscribed before, and iw dumps the results.
        iw_full_pid, iw_full_s = own.around(lambda: iw("dev", sta, "scan", "trigger")[0])
        _pid, iw_full = iw("dev", sta, "scan", "dump")
        iw_part_pid, iw_part_s = own.around(lambda: iw("dev", sta, "scan", "trigger", "freq",
                                                       "2412", "2437", "ssid", AP_SSID)[0])
        _pid, iw_part = iw("dev", sta, "scan", "dump")
        own_s = own.scan([2412, 2462], AP_SSID.encode())
        own.scan_and_abort()
        own.drain()
        iw_abort_pid, _ = iw("dev", sta, "scan", "trigger")
        iw("dev", sta, "scan", "abort")
        assert own.wait_end() == ABORTED      # iw's abort, as the kernel announced it
    finally:
        own.close()
        out, err = tracer.finish()
    assert tracer.proc.returncode == 0, err
    objs = [json.loads(line) for line in out.splitlines()]
    scans = scans_by(objs)
    assert [(o["interface"], o["pid"], o["comm"], o["result"]) for o in scans] == [
        (sta, iw_full_pid, "iw", "done"), (sta, iw_part_pid, "iw", "done"),
        (sta, os.getpid(), comm, "done"), (sta, os.getpid(), comm, "aborted"),
        (sta, iw_abort_pid, "iw", "aborted")]
    full, part, mine, mine_aborted, iw_aborted = scans

    # iw's own results: the access point, and only it, is what the scan found
    assert iw_bss_list(iw_full) == {ap_bssid: AP_SSID}
    assert iw_bss_list(iw_part) == {ap_bssid: AP_SSID}
    for o in (full, part, mine):
        assert (o["bss_found"], o["bss_total"]) == (1, 1), o
    for o in (mine_aborted, iw_aborted):
        assert (o["bss_found"], o["bss_total"]) == (None, None), o   # no results to count

    # what was asked: every enabled channel (iw's list) and the wildcard, or our channels and SSID
    assert full["scan_type"] == "full" and full["freqs_mhz"] == channels
    assert full["freq_count"] == len(channels) and full["ssids"] == [""]
    assert part["scan_type"] == "partial" and part["freqs_mhz"] == [2412, 2437]
    assert part["ssids"] == [AP_SSID]
    assert (mine["scan_type"], mine["freqs_mhz"], mine["ssids"]) == ("partial", [2412, 2462],
                                                                     [AP_SSID])
    assert mine_aborted["scan_type"] == "full" and mine_aborted["freqs_mhz"] == channels

    # durations: inside the time measured around each scan. The tracepoint backend stamps in
    # the kernel between our request and the end event; nl80211's stamps are the tool's receipt
    # of the two events, which may trail ours by a scheduling delay.
    slack = 0.0 if backend == "tracepoint" else 0.5
    for o, outer in ((full, iw_full_s), (part, iw_part_s), (mine, own_s)):
        assert 0 < o["duration_ms"] <= (outer + slack) * 1000, (o["duration_ms"], outer)
    assert all(o["duration_ms"] > 0 for o in (mine_aborted, iw_aborted))
    starts = [datetime.fromisoformat(o["ts"]).timestamp() for o in scans]
    assert starts == sorted(starts) and began - 0.01 <= starts[0]

    [summary] = [o for o in objs if o["type"] == "summary"]
    assert (summary["interface"], summary["scans"], summary["done"], summary["aborted"],
            summary["unfinished"], summary["bss_found_max"], summary["lost_events"]) == (
            sta, 5, 3, 2, 0, 1, 0)


@pytest.mark.vm
@pytest.mark.kernel
def test_hwsim_auto_backend_and_list(hwsim_ap):
    """With cfg80211 present and root, --list says both backends run, and auto loads the
    tracepoints without a word (falling back to nl80211 would print why)."""
    proc = run_netkit("ieee80211scan", "--list", "--json")
    assert proc.returncode == 0, proc.stderr
    available = {o["backend"]: o["available"] for o in map(json.loads, proc.stdout.splitlines())}
    assert available == {"nl80211": True, "requester": True, "tracepoint": True}
    proc = run_netkit("ieee80211scan", "-d", "0")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
