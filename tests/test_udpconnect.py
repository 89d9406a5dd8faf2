"""netkit udpconnect against real UDP connects: a workload sets the peer of UDP sockets to known
IPv4, IPv6 and IPv4-mapped addresses, disconnects one (AF_UNSPEC) and makes a TCP connect that
must not show; the tool, filtered to it, must print exactly those UDP calls in order."""
from __future__ import annotations

import time

import pytest

from conftest import Traced
from sockworkload import json_records, workload_fixture

pytestmark = pytest.mark.kernel

STEPS = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
u4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u4.connect(("127.0.0.1", 5301))
u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u6.connect(("::1", 5302))
mapped = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
mapped.connect(("::ffff:127.0.0.2", 5303))
u4.connect(("127.0.0.3", 5304))                      # a new peer for the same socket
assert libc.connect(u4.fileno(), bytes(16), 16) == 0  # AF_UNSPEC: forget the peer
tcp = socket.socket()
assert tcp.connect_ex(("127.0.0.1", 9)) != 0          # TCP: not udpconnect's
for s in (u4, u6, mapped, tcp):
    s.close()
"""

EXPECTED = [(4, "127.0.0.1", 5301, "UDP"), (6, "::1", 5302, "UDPv6"),
            (6, "::ffff:127.0.0.2", 5303, "UDPv6"), (4, "127.0.0.3", 5304, "UDP"),
            (None, None, None, "UDP")]


workload = workload_fixture("soconnect", "nkudp")


def test_each_udp_connect_and_the_disconnect(workload):
    tool = Traced(["udpconnect", "-p", str(workload.pid), "--json"])
    text = Traced(["udpconnect", "-n", "nkudp", "-6"])
    workload.run(STEPS)
    time.sleep(0.2)
    out, err = tool.finish()
    plain, _ = text.finish()
    assert tool.proc.returncode == 0, err
    events = json_records(out)["udpconnect"]
    assert [(e["ip"], e["raddr"], e["rport"], e["protocol"]) for e in events] == EXPECTED
    assert [e["disconnect"] for e in events] == [False] * 4 + [True]
    assert {(e["pid"], e["comm"], e["result"]) for e in events} == {(workload.pid, "nkudp", "OK")}
    lines = plain.splitlines()
    assert lines[0].split() == ["TIME", "PID", "COMM", "IP", "RADDR", "RPORT", "RESULT"]
    assert [line.split()[3:6] for line in lines[1:]] == [
        ["6", "::1", "5302"], ["6", "::ffff:127.0.0.2", "5303"]]
