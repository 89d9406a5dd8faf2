"""netkit so1stbyte against servers that answer late: this test's TCP server answers each request
TCP_DELAY after it arrives and its UDP server UDP_DELAY after the query; a workload connects,
asks and reads, timing each exchange itself. It also makes a refused connect and a connect it
closes unread, which bring no byte. The tool must count exactly the exchanges, each no shorter
than the server's delay and no longer than the workload's own timing."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from conftest import Traced, slots_of
from sockworkload import json_records, workload_fixture

pytestmark = pytest.mark.kernel

TCP_DELAY, UDP_DELAY = 0.040, 0.020
TCP_EXCHANGES = 3

STEPS = """
took = []
for _ in range(tcp_exchanges):
    t = time.monotonic()
    c = socket.create_connection(("127.0.0.1", tcp_port))
    c.send(b"?"); assert c.recv(100) == b"!"
    took.append(time.monotonic() - t); c.close()
t = time.monotonic()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect(("127.0.0.1", udp_port))
u.send(b"?"); assert u.recv(100) == b"!"
took.append(time.monotonic() - t); u.close()
refused = socket.socket()
assert refused.connect_ex(("127.0.0.1", closed_port)) == errno.ECONNREFUSED
unread = socket.socket(); unread.setblocking(False)
unread.connect_ex(("127.0.0.1", tcp_port)); select.select([], [unread], [], 5); unread.close()
refused.close()
result = took
"""


@pytest.fixture
def servers():
    """(tcp_port, udp_port, closed_port) of servers that answer "!" late."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    closed_port = probe.getsockname()[1]
    probe.close()

    def serve_tcp():
        for _ in range(TCP_EXCHANGES):
            conn, _ = listener.accept()
            conn.recv(100)
            time.sleep(TCP_DELAY)
            conn.send(b"!")
            conn.close()

    def serve_udp():
        _, client = udp.recvfrom(100)
        time.sleep(UDP_DELAY)
        udp.sendto(b"!", client)

    threads = [threading.Thread(target=serve_tcp), threading.Thread(target=serve_udp)]
    for t in threads:
        t.start()
    yield listener.getsockname()[1], udp.getsockname()[1], closed_port
    for t in threads:
        t.join(timeout=10)
    listener.close()
    udp.close()


workload = workload_fixture("so1stbyte", "nk1stbyte")


def test_first_byte_after_the_servers_delay_and_within_the_clients_time(workload, servers):
    tcp_port, udp_port, closed_port = servers
    tool = Traced(["so1stbyte", "-p", str(workload.pid), "--json"])
    in_ms = Traced(["so1stbyte", "-n", "nk1stbyte", "-m", "-4", "--no-color"])
    took = workload.run(STEPS, tcp_port=tcp_port, udp_port=udp_port, closed_port=closed_port,
                        tcp_exchanges=TCP_EXCHANGES)
    time.sleep(0.2)
    out, err = tool.finish()
    text, _ = in_ms.finish()
    assert tool.proc.returncode == 0, err
    got = json_records(out)
    [hist] = [h for h in got["hist"] if h["scope"] == "run"]
    assert got["summary"][0]["connects"] == TCP_EXCHANGES + 1
    assert (hist["pid"], hist["comm"], hist["count"]) == (workload.pid, "nk1stbyte",
                                                          TCP_EXCHANGES + 1)
    delays_us = [TCP_DELAY * 1e6] * TCP_EXCHANGES + [UDP_DELAY * 1e6]
    assert sum(delays_us) <= hist["latency_us_sum"] <= sum(took) * 1e6
    # Every sample lies in a bucket that reaches above the shortest delay; the three TCP ones
    # in buckets that reach above the TCP delay.
    buckets = slots_of(hist["latency_us"])
    assert all((2 << i) > UDP_DELAY * 1e6 for i, n in enumerate(buckets) if n)
    assert sum(n for i, n in enumerate(buckets) if (2 << i) > TCP_DELAY * 1e6) >= TCP_EXCHANGES
    assert f"PID {workload.pid} nk1stbyte: count {TCP_EXCHANGES + 1}, average " in text
    average_ms = float(text.split("average ")[1].split()[0])
    assert sum(delays_us) / 1e3 / 4 - 1 <= average_ms <= sum(took) * 1e3 / 4
