"""netkit socketio against real I/O: a workload talks TCP and connected UDP with this test and
over a UNIX socket pair with itself, in known calls and sizes (a MSG_PEEK read and an EAGAIN
among them); the tool, filtered to the workload, must count each (direction, protocol, remote
port) exactly: calls whatever they return, bytes of the successful ones, peeks not at all."""
from __future__ import annotations

import socket
import time

import pytest

from conftest import Traced, require_root_bpf
from sockworkload import SocketWorkload, json_records

pytestmark = pytest.mark.kernel

OPEN = """
tcp = socket.create_connection(("127.0.0.1", tcp_port))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.connect(("127.0.0.1", udp_port))
left, right = socket.socketpair()
result = [tcp.getsockname()[1], udp.getsockname()[1]]
"""
TALK = """
for _ in range(4):
    tcp.send(b"t" * 250)
for _ in range(5):
    udp.send(b"u" * 60)
for _ in range(6):
    left.send(b"x" * 10)
assert right.recv(60, socket.MSG_WAITALL) == b"x" * 60
assert len(tcp.recv(3000, socket.MSG_PEEK | socket.MSG_WAITALL)) == 3000   # not counted
assert len(tcp.recv(3000, socket.MSG_WAITALL)) == 3000
assert [len(udp.recv(100)), len(udp.recv(100))] == [70, 70]
udp.setblocking(False)
try:
    udp.recv(100)                      # EAGAIN: a call that moved nothing
except BlockingIOError:
    pass
for s in (tcp, udp, left, right):
    s.close()
"""


@pytest.fixture
def conversation():
    """The workload connected to this test's TCP listener and UDP socket; yields a function that
    runs the talk (sending this side's share first) and returns the two ports the workload
    sees as remote."""
    require_root_bpf("socketio")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    peer_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer_udp.bind(("127.0.0.1", 0))
    ports = (listener.getsockname()[1], peer_udp.getsockname()[1])
    with SocketWorkload("nkio") as w:
        def talk():
            _, udp_local = w.run(OPEN, tcp_port=ports[0], udp_port=ports[1])
            server, _ = listener.accept()
            server.sendall(b"s" * 3000)
            for _ in range(2):
                peer_udp.sendto(b"r" * 70, ("127.0.0.1", udp_local))
            w.run(TALK)
            server.close()
        yield w, talk, ports
    listener.close()
    peer_udp.close()


def expected_rows(tcp_port: int, udp_port: int) -> dict[tuple, tuple[int, int]]:
    return {("write", "TCP", tcp_port): (4, 1000), ("read", "TCP", tcp_port): (1, 3000),
            ("write", "UDP", udp_port): (5, 300), ("read", "UDP", udp_port): (3, 140),
            ("write", "UNIX-STREAM", 0): (6, 60), ("read", "UNIX-STREAM", 0): (1, 60)}


def test_calls_and_bytes_per_direction_protocol_and_port(conversation):
    workload, talk, ports = conversation
    tool = Traced(["socketio", "-p", str(workload.pid), "--json"])
    talk()
    time.sleep(0.2)
    out, err = tool.finish()
    assert tool.proc.returncode == 0, err
    got = json_records(out)
    run = {(r["dir"], r["protocol"], r["rport"]): (r["calls"], r["bytes"])
           for r in got["io"] if r["scope"] == "run"}
    expected = expected_rows(*ports)
    assert run == expected
    assert {(r["pid"], r["comm"]) for r in got["io"]} == {(workload.pid, "nkio")}
    summary = got["summary"][0]
    for d in ("read", "write"):
        assert summary[f"{d}_calls"] == sum(c for (dr, *_), (c, _) in expected.items() if dr == d)
        assert summary[f"{d}_bytes"] == sum(b for (dr, *_), (_, b) in expected.items() if dr == d)


def test_port_family_and_top_filters(conversation):
    workload, talk, ports = conversation
    by_port = Traced(["socketio", "-p", str(workload.pid), "-D", str(ports[0]), "--json"])
    ipv4_top = Traced(["socketio", "-n", "nkio", "-4", "-T", "2", "--no-color"])
    talk()
    time.sleep(0.2)
    out, _ = by_port.finish()
    text, _ = ipv4_top.finish()
    expected = expected_rows(*ports)
    assert {(r["dir"], r["protocol"], r["rport"]): (r["calls"], r["bytes"])
            for r in json_records(out)["io"]} == {k: v for k, v in expected.items()
                                                  if k[2] == ports[0]}
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["PID"])
    assert lines[header].split() == ["PID", "COMM", "DIR", "PROTO", "RPORT", "CALLS", "BYTES"]
    rows = [tuple(line.split()[2:]) for line in lines[header + 1:] if line.strip()]
    ip_rows = sorted(((k, v) for k, v in expected.items() if k[1] != "UNIX-STREAM"),
                     key=lambda kv: -kv[1][0])[:2]                     # busiest by calls
    assert rows == [(d, p, str(port), str(c), str(b)) for (d, p, port), (c, b) in ip_rows]
