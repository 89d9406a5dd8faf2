"""netkit sormem against receive buffers that fill up. A workload's UDP socket (SO_RCVBUF 4096,
which the kernel doubles) reads one datagram, then pauses while this test sends it 40 datagrams
of 500 bytes: the ones that do not fit are dropped, and the kernel's own count of them
(SO_MEMINFO's drops) must be the number of SOCKET_RCVBUFF events, each charged to the
workload as the socket's reader. The workload then reads the queue empty, taking SO_MEMINFO's
rmem_alloc before each read: the tool's histogram of rmem_alloc at read time must hold exactly
those values. A UDP socket of this test's own, never read, overflows too: without a filter its
drops show with no owner, with -p not at all. A TCP reader that pauses drops nothing (its window
closes): no event, and the fullest queue it reads from is in the histogram."""
from __future__ import annotations

import socket
import struct
import time

import pytest

from conftest import Traced, slots_of
from sockworkload import json_records, workload_fixture

pytestmark = pytest.mark.kernel

SO_MEMINFO = 55                 # socket.h; MEMINFO_VARS: rmem_alloc, rcvbuf, ..., drops (index 8)
DATAGRAMS, SIZE = 40, 500

OPEN = """
SO_MEMINFO = 55
def meminfo(s):
    return struct.unpack("9I", s.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36))
reader = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
reader.bind(("127.0.0.1", 0))
result = reader.getsockname()[1]
"""
FIRST_READ = """
samples = [list(meminfo(reader)[:2])]
reader.recv(100)
"""
DRAIN = """
drops = meminfo(reader)[8]
reader.setblocking(False)
while True:
    samples.append(list(meminfo(reader)[:2]))
    try:
        reader.recv(1000)
    except BlockingIOError:
        break
reader.close()
result = [samples, drops]
"""


def drops_of(s: socket.socket) -> int:
    return struct.unpack("9I", s.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36))[8]


workload = workload_fixture("sormem", "nkmem")


def log2_slots(values: list[int]) -> list[int]:
    slots = [0] * 32
    for v in values:
        slots[max(0, v.bit_length() - 1)] += 1
    return slots


def test_udp_overflow_events_and_rmem_at_read_time(workload):
    everyone = Traced(["sormem", "--json"])
    selected = Traced(["sormem", "-p", str(workload.pid), "--json"])
    port = workload.run(OPEN)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.sendto(b"hello", ("127.0.0.1", port))
    workload.run(FIRST_READ)
    unread = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)     # nobody ever reads it
    unread.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    unread.bind(("127.0.0.1", 0))
    for target in (port, unread.getsockname()[1]):
        for _ in range(DATAGRAMS):
            sender.sendto(b"x" * SIZE, ("127.0.0.1", target))
    samples, drops = workload.run(DRAIN)
    unread_drops = drops_of(unread)
    time.sleep(0.2)
    out_all, err = everyone.finish()
    out_selected, _ = selected.finish()
    unread_port = unread.getsockname()[1]
    unread.close()
    sender.close()
    assert everyone.proc.returncode == 0, err
    assert 0 < drops < DATAGRAMS and 0 < unread_drops < DATAGRAMS

    got = json_records(out_selected)
    events = got["event"]
    assert len(events) == drops
    rcvbuf = samples[0][1]
    for e in events:
        assert (e["event"], e["protocol"], e["laddr"], e["lport"]) == \
            ("SOCKET_RCVBUFF", "UDP", "127.0.0.1", port)
        assert (e["pid"], e["comm"], e["rcvbuf"]) == (workload.pid, "nkmem", rcvbuf)
        assert e["truesize"] > SIZE and e["rmem_alloc"] + e["truesize"] > rcvbuf
    summary = got["summary"][0]
    assert summary["by_event"]["SOCKET_RCVBUFF"] == drops and summary["lost_events"] == 0
    assert summary["by_event"]["RCVQUEUE_FULL"] == 0      # not on UDP: see the man page

    hists = {h["buffer"]: h for h in got["hist"] if h["scope"] == "run"}
    rmem = [s[0] for s in samples]
    assert slots_of(hists["rmem_alloc"]["size_bytes"]) == log2_slots(rmem)
    assert hists["rmem_alloc"]["size_bytes_sum"] == sum(rmem)
    assert (hists["rcvbuf"]["count"], hists["rcvbuf"]["size_bytes_sum"]) == \
        (len(samples), sum(s[1] for s in samples))

    by_port = {}
    for e in json_records(out_all)["event"]:
        by_port.setdefault(e["lport"], []).append(e)
    assert len(by_port[port]) == drops
    assert len(by_port[unread_port]) == unread_drops
    assert {(e["pid"], e["comm"], e["cgroup"]) for e in by_port[unread_port]} == {(0, "", None)}


TCP_FILL = """
listener = socket.socket(); listener.bind(("127.0.0.1", 0)); listener.listen(1)
tcp_reader = socket.socket()
tcp_reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
tcp_reader.connect(listener.getsockname())
writer = listener.accept()[0]
writer.setblocking(False)
sent = 0
try:                                   # until the reader's window and our send buffer are full
    while True:
        sent += writer.send(b"z" * 65536)
except BlockingIOError:
    pass
writer.close()                         # what is still queued goes out as the reader reads
result = [tcp_reader.getsockname()[1], sent]
"""
TCP_DRAIN = """
first = list(meminfo(tcp_reader)[:2])
reads = 0
while tcp_reader.recv(65536):
    reads += 1
tcp_reader.close()
listener.close()
result = [first, reads]
"""


def test_a_paused_tcp_reader_drops_nothing(workload):
    tool = Traced(["sormem", "-p", str(workload.pid), "--json"])
    workload.run(OPEN)
    reader_port, sent = workload.run(TCP_FILL)
    (rmem, rcvbuf), reads = workload.run(TCP_DRAIN)
    time.sleep(0.2)
    out, _ = tool.finish()
    got = json_records(out)
    assert [e for e in got.get("event", []) if e["lport"] == reader_port] == []
    assert sent > rcvbuf and 0 < rmem <= rcvbuf
    hists = {h["buffer"]: h for h in got["hist"] if h["scope"] == "run"}
    # The first read found the queue as the paused reader left it.
    assert slots_of(hists["rmem_alloc"]["size_bytes"])[rmem.bit_length() - 1] >= 1
    assert hists["rmem_alloc"]["count"] == reads + 1            # the last read: end of file
