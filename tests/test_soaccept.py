"""netkit soaccept against real accepts: this test connects known clients to a workload's IPv4
and IPv6 listeners; the workload accepts them, fails an accept() on a socket that does not
listen (EINVAL) and tries a non-blocking one with nothing pending (EAGAIN). The tool, filtered
to the workload, must show each accepted peer (the clients' own addresses and ports), the
failure, and count the EAGAIN without showing it."""
from __future__ import annotations

import socket
import time

import pytest

from conftest import Traced
from sockworkload import json_records, workload_fixture

pytestmark = pytest.mark.kernel

N4, N6 = 3, 4

LISTEN = """
l4 = socket.socket(); l4.bind(("127.0.0.1", 0)); l4.listen(16)
l6 = socket.socket(socket.AF_INET6); l6.bind(("::1", 0)); l6.listen(16)
result = [l4.getsockname()[1], l6.getsockname()[1]]
"""
ACCEPT = """
accepted = [l4.accept()[0] for _ in range(n4)] + [l6.accept()[0] for _ in range(n6)]
idle = socket.socket()
try:
    idle.accept()
except OSError as exc:
    assert exc.errno == errno.EINVAL
l4.setblocking(False)
try:
    l4.accept()
except BlockingIOError:
    pass
for s in accepted + [idle, l4, l6]:
    s.close()
"""


workload = workload_fixture("soaccept", "nkaccept")


def connect_clients(port4: int, port6: int) -> tuple[list[socket.socket], list[tuple]]:
    clients, peers = [], []
    for af, addr, port, n in ((socket.AF_INET, "127.0.0.1", port4, N4),
                              (socket.AF_INET6, "::1", port6, N6)):
        for _ in range(n):
            c = socket.create_connection((addr, port))
            clients.append(c)
            peers.append(("IPv4" if af == socket.AF_INET else "IPv6", addr,
                          c.getsockname()[1], port))
    return clients, peers


def test_peers_results_and_would_block(workload):
    tool = Traced(["soaccept", "-p", str(workload.pid), "--json"])
    only6 = Traced(["soaccept", "-p", str(workload.pid), "-6", "-t"])
    port4, port6 = workload.run(LISTEN)
    clients, peers = connect_clients(port4, port6)
    workload.run(ACCEPT, n4=N4, n6=N6)
    time.sleep(0.2)
    out, err = tool.finish()
    text, _ = only6.finish()
    for c in clients:
        c.close()
    assert tool.proc.returncode == 0, err
    got = json_records(out)
    events = got["accept"]
    assert [(e["family"], e["address"], e["port"], e["lport"]) for e in events[:-1]] == peers
    assert all(e["result"] == "OK" and e["fd"] >= 0 for e in events[:-1])
    assert (events[-1]["result"], events[-1]["errno"], events[-1]["address"]) == \
        ("EINVAL", 22, None)
    assert {(e["pid"], e["comm"]) for e in events} == {(workload.pid, "nkaccept")}
    summary = got["summary"][0]
    assert (summary["events"], summary["would_block"], summary["results"]) == \
        (N4 + N6 + 1, 1, {"OK": N4 + N6, "EINVAL": 1})
    lines = text.splitlines()
    assert lines[0].split() == ["TIME(s)", "PID", "PROCESS", "FAM", "ADDRESS", "PORT", "RESULT"]
    assert [tuple(line.split()[3:]) for line in lines[1:]] == [
        (fam, addr, str(port), "OK") for fam, addr, port, _ in peers if fam == "IPv6"]


def test_local_port_filter(workload):
    port4, port6 = workload.run(LISTEN)
    tool = Traced(["soaccept", "-p", str(workload.pid), "-L", f"{port4},1", "--json"])
    clients, peers = connect_clients(port4, port6)
    workload.run(ACCEPT, n4=N4, n6=N6)
    time.sleep(0.2)
    out, _ = tool.finish()
    for c in clients:
        c.close()
    events = json_records(out)["accept"]
    assert [(e["address"], e["port"]) for e in events] == [
        (addr, port) for _, addr, port, lport in peers if lport == port4]
