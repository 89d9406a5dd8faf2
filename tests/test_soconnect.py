"""netkit soconnect against real connects: a workload makes a known list of IP connect() calls
(blocking, non-blocking with its status checks, refused, UDP, IPv4 and IPv6) to listeners this
test holds; the tool, filtered to it, must print each call once, in order, with its family,
address, port, protocol and result, and a latency within the workload's own timing of it."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from conftest import Traced, require_or_skip, require_root_bpf
from sockworkload import SocketWorkload, json_records, workload_fixture

pytestmark = pytest.mark.kernel

STEPS = """
made = []
def connect(family, addr, port, blocking=True, udp=False, again=0):
    s = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    s.setblocking(blocking)
    for call in range(1 + again):
        if call:                          # the non-blocking idiom: wait, then ask again
            select.select([], [s], [], 5)
        t = time.monotonic(); code = s.connect_ex((addr, port)); t = time.monotonic() - t
        made.append([errno.errorcode[code] if code else "OK", t])
    s.close()
for c in plan:
    connect(socket.AF_INET6 if c["family"] == 6 else socket.AF_INET, c["addr"], c["port"],
            c.get("blocking", True), c.get("udp", False), c.get("again", 0))
result = made
"""


@pytest.fixture(scope="module")
def targets():
    """A listener on 127.0.0.1 and on ::1 (the kernel completes handshakes without accept),
    and a port on each where nothing listens."""
    listeners, closed = {}, {}
    for family, addr, af in ((4, "127.0.0.1", socket.AF_INET), (6, "::1", socket.AF_INET6)):
        listener = socket.socket(af)
        listener.bind((addr, 0))
        listener.listen(128)
        listeners[family] = listener
        probe = socket.socket(af)
        probe.bind((addr, 0))
        closed[family] = (addr, probe.getsockname()[1])
        probe.close()
    yield {f: (s.getsockname()[0], s.getsockname()[1]) for f, s in listeners.items()}, closed
    for listener in listeners.values():
        listener.close()


def plan_of(targets) -> tuple[list[dict], list[tuple]]:
    """The connects to make, and what each call must show: (family, address, port, protocol,
    result)."""
    listening, closed = targets
    open4, open6, closed4, closed6 = listening[4], listening[6], closed[4], closed[6]
    plan = [
        {"family": 4, "addr": open4[0], "port": open4[1], "again": 1},
        {"family": 4, "addr": closed4[0], "port": closed4[1]},
        {"family": 4, "addr": open4[0], "port": open4[1], "blocking": False, "again": 2},
        {"family": 6, "addr": open6[0], "port": open6[1]},
        {"family": 6, "addr": closed6[0], "port": closed6[1]},
        {"family": 6, "addr": open6[0], "port": open6[1], "blocking": False},
        {"family": 4, "addr": "127.0.0.1", "port": 9, "udp": True},
    ]
    expected = [
        ("IPv4", *open4, "TCP", "OK"), ("IPv4", *open4, "TCP", "EISCONN"),
        ("IPv4", *closed4, "TCP", "ECONNREFUSED"),
        ("IPv4", *open4, "TCP", "EINPROGRESS"), ("IPv4", *open4, "TCP", "OK"),
        ("IPv4", *open4, "TCP", "EISCONN"),
        ("IPv6", *open6, "TCPv6", "OK"), ("IPv6", *closed6, "TCPv6", "ECONNREFUSED"),
        ("IPv6", *open6, "TCPv6", "EINPROGRESS"),
        ("IPv4", "127.0.0.1", 9, "UDP", "OK"),
    ]
    return plan, expected


workload = workload_fixture("soconnect", "nkconnect")


def test_every_call_in_order_with_result_and_latency(workload, targets):
    plan, expected = plan_of(targets)
    tool = Traced(["soconnect", "-p", str(workload.pid), "--json"])
    made = workload.run(STEPS, plan=plan)
    time.sleep(0.2)
    out, err = tool.finish()
    assert tool.proc.returncode == 0, err
    got = json_records(out)
    events = got["connect"]
    assert [(e["family"], e["address"], e["port"], e["protocol"], e["result"])
            for e in events] == expected
    assert [e["result"] for e in events] == [result for result, _ in made]
    errnos = {"OK": 0, "EISCONN": 106, "ECONNREFUSED": 111, "EINPROGRESS": 115}
    for e, (_, seconds) in zip(events, made):
        assert (e["pid"], e["tid"], e["comm"]) == (workload.pid, workload.pid, "nkconnect")
        assert e["errno"] == errnos[e["result"]] and e["cgroup"].startswith("/")
        assert 0 < e["latency_us"] <= seconds * 1e6 + 1, (e, seconds)
    summary = got["summary"][0]
    assert summary["events"] == len(expected) and summary["lost_events"] == 0
    assert summary["results"] == {"OK": 4, "EISCONN": 2, "ECONNREFUSED": 2, "EINPROGRESS": 2}


def test_family_and_port_filters_and_plain_columns(workload, targets):
    plan, expected = plan_of(targets)
    port6 = targets[0][6][1]
    only6 = Traced(["soconnect", "-p", str(workload.pid), "-6", "-D", str(port6), "-t"])
    only4 = Traced(["soconnect", "-p", str(workload.pid), "-4", "--json"])
    workload.run(STEPS, plan=plan)
    time.sleep(0.2)
    out6, _ = only6.finish()
    out4, _ = only4.finish()
    lines = out6.splitlines()
    assert lines[0].split() == ["TIME(s)", "PID", "PROCESS", "FAM", "ADDRESS", "PORT", "LAT(us)",
                                "RESULT"]
    rows = [line.split() for line in lines[1:]]
    assert [(r[3], r[4], int(r[5]), r[7]) for r in rows] == [
        (fam, addr, port, result) for fam, addr, port, _, result in expected
        if fam == "IPv6" and port == port6]
    assert all(0 < float(r[0]) < 30 and float(r[6]) > 0 for r in rows)
    assert [e["family"] for e in json_records(out4)["connect"]] == [
        fam for fam, *_ in expected if fam == "IPv4"]


def test_cgroup_filter_and_the_owners_cgroup_path(targets):
    """Each event names its caller's cgroup v2 path (bpf_get_current_cgroup_id, found again by
    inode in the hierarchy); -c keeps that cgroup's callers only."""
    require_root_bpf("soconnect")
    root = next((r for r in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))
                 if (r / "cgroup.controllers").exists()), None)
    if root is None:
        require_or_skip("no cgroup v2 hierarchy mounted")
    group = root / f"nksoconnect{os.getpid()}"
    group.mkdir()
    try:
        with SocketWorkload("nkcgroup") as inside, SocketWorkload("nkcgroup") as outside:
            (group / "cgroup.procs").write_text(str(inside.pid))
            tool = Traced(["soconnect", "-c", str(group), "--json"])
            addr, port = targets[0][4]
            plan = [{"family": 4, "addr": addr, "port": port}]
            outside.run(STEPS, plan=plan)
            inside.run(STEPS, plan=plan * 2)
            time.sleep(0.2)
            out, _ = tool.finish()
        events = json_records(out)["connect"]
        assert [(e["pid"], e["cgroup"], e["port"]) for e in events] == \
            [(inside.pid, f"/{group.name}", port)] * 2
    finally:
        time.sleep(0.1)
        group.rmdir()
