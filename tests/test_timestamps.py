"""netkit.net.timestamps against real sockets on loopback.

Every kernel stamp is checked against an independent clock: CLOCK_REALTIME read in Python
just before the send and just after the receive must bracket the TX and RX stamps.
"""
import os
import socket
import struct
import time

import pytest

from conftest import require_or_skip
from netkit.net import timestamps as ts
from netkit.net.icmp import echo_request


def _root_or_skip():
    if os.geteuid() != 0:
        require_or_skip("raw ICMP sockets need root (CAP_NET_RAW)")


@pytest.fixture
def udp_pair():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    yield tx, rx
    tx.close()
    rx.close()


def test_udp_tx_stamps_are_keyed_in_send_order_and_bracketed(udp_pair):
    tx, rx = udp_pair
    assert ts.enable(tx) in (ts.SO_TIMESTAMPING_NEW, ts.SO_TIMESTAMPING_OLD)
    ts.enable(rx)
    n = 20
    for i in range(n):
        before = time.time_ns()
        tx.sendto(struct.pack("!I", i), rx.getsockname())
        got = ts.wait_error_queue(tx, 1.0)
        after_tx = time.time_ns()
        reply = ts.recv(rx, 64)
        after_rx = time.time_ns()
        assert len(got) == 1, got
        stamp = got[0]
        assert stamp.is_tx_stamp and stamp.kind == "snd" and stamp.errno == 42  # ENOMSG
        assert stamp.key == i                       # OPT_ID counts sends from 0
        assert stamp.payload == b""                 # OPT_TSONLY: no looped-back packet
        assert before <= stamp.ns <= after_tx
        assert struct.unpack("!I", reply.data)[0] == i
        assert reply.rx_ns is not None and stamp.ns <= reply.rx_ns <= after_rx
    assert ts.read_error_queue(tx) == []            # nothing extra queued


def test_without_tsonly_the_packet_comes_back_with_its_stamp(udp_pair):
    tx, rx = udp_pair
    ts.enable(tx, ts.TX_SOFTWARE | ts.SOFTWARE | ts.OPT_ID)
    tx.sendto(b"loop-me-back", rx.getsockname())
    got = ts.wait_error_queue(tx, 1.0)
    assert len(got) == 1 and got[0].key == 0
    assert got[0].payload.endswith(b"loop-me-back")


def test_tx_sched_adds_a_qdisc_stamp_before_the_send_stamp(udp_pair):
    tx, rx = udp_pair
    ts.enable(tx, ts.DEFAULT_FLAGS | ts.TX_SCHED)
    tx.sendto(b"x", rx.getsockname())
    got = []
    deadline = time.monotonic() + 1.0
    while len(got) < 2 and time.monotonic() < deadline:
        got += ts.wait_error_queue(tx, 0.1)
    kinds = {r.kind: r for r in got}
    assert set(kinds) == {"sched", "snd"}
    assert kinds["sched"].key == kinds["snd"].key == 0
    assert kinds["sched"].ns <= kinds["snd"].ns


def test_enable_waits_until_rx_stamping_is_on():
    """Linux turns RX stamping on lazily (a work item) when the first socket asks for it, so a
    packet right after setsockopt could come back unstamped; enable() waits that out. The pause
    after each close lets the kernel turn stamping off again when no other socket wants it."""
    for _ in range(30):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            ts.enable(sock)
            sock.sendto(b"first", sock.getsockname())
            assert ts.recv(sock, 16).rx_ns is not None
        time.sleep(0.02)
    assert ts.wait_rx_stamping()


def test_rx_stamp_absent_when_not_enabled(udp_pair):
    tx, rx = udp_pair
    tx.sendto(b"plain", rx.getsockname())
    reply = ts.recv(rx, 64)
    assert reply.data == b"plain" and reply.rx_ns is None


def test_icmp_error_arrives_with_offender_and_rx_stamp():
    """A UDP probe to a closed port: the port-unreachable error, as pchar's probes get it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()                                  # now nothing listens there
    sock.setsockopt(socket.SOL_IP, ts.IP_RECVERR, 1)
    ts.enable(sock, ts.RX_SOFTWARE | ts.SOFTWARE)
    before = time.time_ns()
    sock.sendto(b"probe", ("127.0.0.1", port))
    got = ts.wait_error_queue(sock, 1.0)
    sock.close()
    assert len(got) == 1
    err = got[0]
    assert not err.is_tx_stamp
    assert (err.origin, err.type, err.code) == (ts.ORIGIN_ICMP, 3, 3)
    assert err.errno == 111                         # ECONNREFUSED
    assert err.offender == "127.0.0.1"
    assert err.payload == b"probe"
    assert err.rx_ns is not None and before <= err.rx_ns <= time.time_ns()


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
@pytest.mark.kernel
def test_raw_icmp_echo_stamps(family):
    _root_or_skip()
    v6 = family == socket.AF_INET6
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    dest = ("::1", 0) if v6 else ("127.0.0.1", 0)
    sock = socket.socket(family, socket.SOCK_RAW, proto)
    ts.enable(sock)
    ident = os.getpid() & 0xFFFF
    for seq in range(5):
        before = time.time_ns()
        sock.sendto(echo_request(ident, seq, 16, v6), dest)
        sent = ts.wait_error_queue(sock, 1.0)
        assert [r.key for r in sent] == [seq]
        # A raw socket on loopback sees its own request, then the reply.
        reply = None
        while reply is None:
            got = ts.recv(sock, 2048)
            icmp = got.data if v6 else got.data[(got.data[0] & 0x0F) * 4:]
            rtype, _code, _sum, rid, rseq = struct.unpack_from("!BBHHH", icmp)
            if rtype == (129 if v6 else 0) and (rid, rseq) == (ident, seq):
                reply = got
        after = time.time_ns()
        assert before <= sent[0].ns <= reply.rx_ns <= after
    sock.close()


def test_parsers_ignore_foreign_or_short_control_messages():
    assert ts.software_stamp_ns([]) is None
    assert ts.software_stamp_ns([(socket.SOL_SOCKET, ts.SO_TIMESTAMPING_NEW, b"\0" * 8)]) is None
    zero = struct.pack("=qq", 0, 0) * 3
    assert ts.software_stamp_ns([(socket.SOL_SOCKET, ts.SO_TIMESTAMPING_NEW, zero)]) is None
    stamp = struct.pack("=qq", 12, 345) + struct.pack("=qq", 0, 0) * 2
    assert ts.software_stamp_ns([(socket.SOL_IP, 1, b"ignored"),
                                 (socket.SOL_SOCKET, ts.SO_TIMESTAMPING_NEW, stamp)]) == 12_000_000_345
    assert ts.parse_error_message(b"", [(socket.SOL_IP, ts.IP_RECVERR, b"\0" * 4)]) is None
