"""netkit socksize against datagrams of known sizes: a workload writes 3 x 100, 5 x 1000 and
7 x 5000 bytes and reads 2 x 40, 4 x 300 and 6 x 3000 bytes that this test sends it (plus a
MSG_PEEK read and an empty datagram, which are no sizes); the tool's per-process histograms must
hold exactly those counts in exactly those log2 buckets, with the exact sums, in JSON, in text
and in the Prometheus textfile (in bytes)."""
from __future__ import annotations

import re
import socket
import time

import pytest

from conftest import Traced, require_root_bpf, slots_of
from sockworkload import SocketWorkload, json_records

pytestmark = pytest.mark.kernel

WRITES = {100: 3, 1000: 5, 5000: 7}
READS = {40: 2, 300: 4, 3000: 6}

OPEN = """
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.connect(("127.0.0.1", peer_port))
result = udp.getsockname()[1]
"""
TALK = """
for size, n in writes:
    for _ in range(n):
        udp.send(b"w" * size)
udp.recv(65536, socket.MSG_PEEK)
for _ in range(reads):
    udp.recv(65536)
assert udp.recv(65536) == b""          # the empty datagram: a read of 0 bytes
"""


def slots(sizes: dict[int, int]) -> list[int]:
    counts = [0] * 32
    for size, n in sizes.items():
        counts[size.bit_length() - 1] += n
    return counts


@pytest.fixture
def exchange():
    require_root_bpf("socksize")
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    with SocketWorkload("nksize") as w:
        def talk():
            port = w.run(OPEN, peer_port=peer.getsockname()[1])
            for size, n in READS.items():
                for _ in range(n):
                    peer.sendto(b"r" * size, ("127.0.0.1", port))
            peer.sendto(b"", ("127.0.0.1", port))
            w.run(TALK, writes=list(WRITES.items()), reads=sum(READS.values()))
        yield w, talk
    peer.close()


def test_histograms_hold_the_exact_sizes(exchange, tmp_path):
    workload, talk = exchange
    tool = Traced(["socksize", "-p", str(workload.pid), "--json", "--textfile", str(tmp_path),
                   "0.1"])
    talk()
    time.sleep(0.3)             # intervals with nothing new pass: the exporter keeps the totals
    out, err = tool.finish()
    assert tool.proc.returncode == 0, err
    got = json_records(out)
    hists = {h["dir"]: h for h in got["hist"] if h["scope"] == "run"}
    summary = got["summary"][0]
    assert (summary["read"], summary["write"]) == (sum(READS.values()), sum(WRITES.values()))
    for direction, sizes in (("write", WRITES), ("read", READS)):
        h = hists[direction]
        assert (h["pid"], h["comm"]) == (workload.pid, "nksize")
        assert slots_of(h["size_bytes"]) == slots(sizes)
        assert h["count"] == sum(sizes.values())
        assert h["size_bytes_sum"] == sum(size * n for size, n in sizes.items())
    prom = (tmp_path / "netkit_socksize.prom").read_text()
    assert 'netkit_socksize_write_bytes_bucket{comm="nksize",le="127.0"} 3.0' in prom
    assert 'netkit_socksize_write_bytes_bucket{comm="nksize",le="1023.0"} 8.0' in prom
    assert 'netkit_socksize_read_bytes_sum{comm="nksize"} 19280.0' in prom


def test_text_histograms(exchange):
    workload, talk = exchange
    tool = Traced(["socksize", "-n", "nksize", "--no-color"])
    talk()
    time.sleep(0.2)
    out, _ = tool.finish()
    titles = re.findall(r"^PID (\d+) nksize, (read|write): count (\d+), average ([\d.]+) bytes:$",
                        out, re.M)
    assert [(int(p), d, int(c)) for p, d, c, _ in titles] == [
        (workload.pid, "read", sum(READS.values())), (workload.pid, "write", sum(WRITES.values()))]
    assert float(titles[1][3]) == pytest.approx(40300 / 15, abs=0.05)
    assert re.search(r"^\[4K, 8K\)\s+7 \|@+\s*\|$", out, re.M)
