"""netkit tcptop against TCP transfers of known sizes: two workloads of one command name talk to
each other over IPv4 and IPv6, with different sizes each way (and a MSG_PEEK read, and a UDP
send, which are not TCP bytes of a flow); every flow must show exactly its bytes received and
sent, mirrored on the other end, in JSON and in the text blocks."""
from __future__ import annotations

import os
import re
import socket
import time

import pytest

from conftest import Traced, require_root_bpf
from sockworkload import SocketWorkload, json_records

pytestmark = pytest.mark.kernel

# The workloads' command name, filtered on with -n: another run of these tests at the same time
# (a mutation run) must not show up in this one's flows.
COMM = f"nktop{os.getpid() % 10**9:x}"[:15]

# bytes each way, by family: distinct everywhere, so that a swapped counter or family fails
SIZES = {4: {"to_server": 150_001, "to_client": 71_203}, 6: {"to_server": 9_999,
                                                              "to_client": 212_345}}

LISTEN = """
listeners = {}
for family, addr in ((4, "127.0.0.1"), (6, "::1")):
    l = socket.socket(socket.AF_INET if family == 4 else socket.AF_INET6)
    l.bind((addr, 0)); l.listen(4); listeners[family] = l
result = {f: l.getsockname()[1] for f, l in listeners.items()}
"""
CONNECT = """
conns = {}
for family, addr in ((4, "127.0.0.1"), (6, "::1")):
    conns[family] = socket.create_connection((addr, ports[str(family)]))
result = {f: c.getsockname()[1] for f, c in conns.items()}
"""
ACCEPT = """
conns = {f: l.accept()[0] for f, l in listeners.items()}
"""
SEND = """
import threading
# In a thread: more than the socket buffers hold, while the peer reads in its own request.
sending = [threading.Thread(target=c.sendall, args=(b"s" * sizes[str(f)],))
           for f, c in conns.items()]
for t in sending:
    t.start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(b"u" * 500, ("127.0.0.1", 9))
"""
SENT = """
for t in sending:
    t.join()
"""
RECEIVE = """
for f, c in conns.items():
    c.recv(1000, socket.MSG_PEEK | socket.MSG_WAITALL)      # not counted: still queued
    got = 0
    while got < sizes[str(f)]:
        got += len(c.recv(65536))
"""
CLOSE = """
for c in conns.values():
    c.close()
"""


@pytest.fixture
def pair():
    """Two workloads named nktop, connected over IPv4 and IPv6; yields them and a function that
    runs the transfers (client to server first, then back) and closes the connections."""
    require_root_bpf("tcptop")
    with SocketWorkload(COMM) as server, SocketWorkload(COMM) as client:
        ports = server.run(LISTEN)
        local_ports = client.run(CONNECT, ports=ports)
        server.run(ACCEPT)

        def transfer():
            for sender, receiver, way in ((client, server, "to_server"),
                                          (server, client, "to_client")):
                sender.run(SEND, sizes={f: s[way] for f, s in SIZES.items()})
                receiver.run(RECEIVE, sizes={f: s[way] for f, s in SIZES.items()})
                sender.run(SENT)
            for w in (client, server):
                w.run(CLOSE)
        yield server, client, {int(f): p for f, p in ports.items()}, \
            {int(f): p for f, p in local_ports.items()}, transfer


def expected_flows(server, client, ports, local_ports) -> dict[tuple, tuple[int, int]]:
    """(pid, family, laddr, lport, raddr, rport) -> (rx_bytes, tx_bytes)."""
    flows = {}
    for family, addr in ((4, "127.0.0.1"), (6, "::1")):
        s, c = ports[family], local_ports[family]
        sizes = SIZES[family]
        flows[client.pid, family, addr, c, addr, s] = (sizes["to_client"], sizes["to_server"])
        flows[server.pid, family, addr, s, addr, c] = (sizes["to_server"], sizes["to_client"])
    return flows


def test_bytes_per_flow_are_exact_both_ways(pair):
    server, client, ports, local_ports, transfer = pair
    tool = Traced(["tcptop", "-n", COMM, "--json", "0.2"])
    transfer()
    out, err = tool.finish()
    assert tool.proc.returncode == 0, err
    got = json_records(out)
    summed: dict[tuple, list[int]] = {}
    for r in got["flow"]:
        assert r["comm"] == COMM
        key = (r["pid"], int(r["family"][-1]), r["laddr"], r["lport"], r["raddr"], r["rport"])
        sums = summed.setdefault(key, [0, 0])
        sums[0] += r["rx_bytes"]
        sums[1] += r["tx_bytes"]
    expected = expected_flows(server, client, ports, local_ports)
    assert {k: tuple(v) for k, v in summed.items()} == expected
    summary = got["summary"][0]
    assert summary["flows"] == 4 and summary["missed_flows"] == 0
    assert summary["rx_bytes"] == summary["tx_bytes"] == sum(rx for rx, _ in expected.values())


def test_text_blocks_sort_rows_and_family(pair):
    server, client, ports, local_ports, transfer = pair
    by_sent = Traced(["tcptop", "-n", COMM, "--no-color", "-s", "sent", "2", "1"])
    by_received_v6 = Traced(["tcptop", "-n", COMM, "--no-color", "-S", "-6", "-s",
                             "received", "-r", "1", "2", "1"])
    transfer()
    text, err = by_sent.wait()
    assert by_sent.proc.returncode == 0, err
    expected = expected_flows(server, client, ports, local_ports)

    def block(lines: list[str], header: list[str]) -> list[tuple]:
        start = next(i for i, line in enumerate(lines) if line.split() == header)
        rows = []
        for line in lines[start + 1:]:
            if not line.strip():
                break
            rows.append(tuple(line.split()))
        return rows

    def as_row(key, value) -> tuple:
        pid, family, laddr, lport, raddr, rport = key
        fmt = "{}:{}" if family == 4 else "[{}]:{}"
        return (str(pid), COMM, fmt.format(laddr, lport), fmt.format(raddr, rport),
                str(value[0] // 1024), str(value[1] // 1024))

    lines = text.splitlines()
    assert re.fullmatch(r"\d\d:\d\d:\d\d loadavg: [\d.]+ [\d.]+ [\d.]+ \d+/\d+ \d+",
                        next(line for line in lines if "loadavg" in line))
    for family, header in ((4, ["PID", "COMM", "LADDR", "RADDR", "RX_KB", "TX_KB"]),
                           (6, ["PID", "COMM", "LADDR6", "RADDR6", "RX_KB", "TX_KB"])):
        flows = sorted(((k, v) for k, v in expected.items() if k[1] == family),
                       key=lambda kv: -kv[1][1])                       # most sent first
        assert block(lines, header) == [as_row(k, v) for k, v in flows]
    text6, _ = by_received_v6.wait()
    lines6 = text6.splitlines()
    assert not any("loadavg" in line for line in lines6)
    assert not any(line.split()[:3] == ["PID", "COMM", "LADDR"] for line in lines6)
    top6 = max(((k, v) for k, v in expected.items() if k[1] == 6), key=lambda kv: kv[1][0])
    assert block(lines6, ["PID", "COMM", "LADDR6", "RADDR6", "RX_KB", "TX_KB"]) == \
        [as_row(*top6)]


def connected() -> tuple[socket.socket, socket.socket, socket.socket]:
    """A loopback listener, and a connection to it from both ends (client, server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
    return listener, client, listener.accept()[0]


def test_closed_flows_leave_the_map_and_their_bytes_stay_counted():
    """A flow is kept while its socket is open (its next bytes are changes of the same entry)
    and leaves the kernel's map once closed, though its process lives on: the map holds the
    open flows, not every flow since the start."""
    from netkit.tools import tcptop
    require_root_bpf("tcptop")
    with tcptop._open(os.getpid(), None, None) as obj:
        table = tcptop.FlowTable(obj.map("flows"))
        listener, client, server = connected()
        client.sendall(b"a" * 3001)
        server.recv(3001, socket.MSG_WAITALL)
        first = table.read()
        client.sendall(b"b" * 17)
        server.recv(17, socket.MSG_WAITALL)
        second = table.read()
        assert sorted(c[:2] for c in first.values()) == [(0, 3001), (3001, 0)]
        assert sorted(c[:2] for c in second.values()) == [(0, 17), (17, 0)]
        assert first.keys() == second.keys()
        for s in (client, server, listener):
            s.close()
        time.sleep(tcptop.CLOSED_GRACE_NS / 1e9 + 0.1)
        assert table.read() == {}
        assert sum(len(keys) for keys, _ in table.raw.read()) == 0
        assert (table.flows, table.rx_bytes, table.tx_bytes) == (2, 3018, 3018)
        # A reply read after the reader's socket has closed (it shut down its side, the peer
        # answered and closed: its TIME_WAIT is a CLOSE) is counted all the same, as a flow
        # of local port 0: the kernel has taken the port back by then (the man page says so).
        listener, client, server = connected()
        client.sendall(b"q" * 11)
        client.shutdown(socket.SHUT_WR)
        assert server.recv(11, socket.MSG_WAITALL) == b"q" * 11
        server.sendall(b"r" * 29)
        server.close()
        time.sleep(0.1)
        assert client.recv(29, socket.MSG_WAITALL) == b"r" * 29
        for s in (client, listener):
            s.close()
        by_bytes = {tuple(c[:2]): table.flow(k, c[2]) for k, c in table.read().items()}
        assert sorted(by_bytes) == [(0, 11), (11, 29), (29, 0)]
        assert by_bytes[29, 0].lport == 0 and by_bytes[0, 11].lport != 0
