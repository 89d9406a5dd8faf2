"""netkit qdisclat against shapers whose queueing the test can compute (tests/packetbed).

A burst of 1000-byte packets (at the qdisc: Ethernet + IP + UDP + 958 bytes) meets a token
bucket of known rate and depth on l0t: tbf, and htb with one class. The bucket starts full, so
the first packets leave at once and the rest one per size/rate after the previous; a small
model replays the sender's own send times through the bucket (tbf sends when it holds a whole
packet's tokens, htb when its balance is not negative) and gives each packet its wait. The
tool's histogram must hold exactly the packets sent, each within one log2 bucket of the
model's (a packet the model sends at once: within 128 us), and its exact sum must agree.

Bulk dequeues: on a two-queue veth the qdisc hands out up to 9 packets per dequeue when several
are ready. 17 packets wait behind a slow tbf, which the test then speeds up: they leave in
bulks, and each must be timed. The namespace rule: a qdisc in the target's namespace is seen
with --all-netns only. -q keeps one kind.
"""
from __future__ import annotations

import socket
import time

import pytest

from conftest import assert_one_line_error, run_netkit, skip_for_hardware
from tools.testbed import TestBedError
from packetbed import (ETH, HOST_ADDR, HOST_DEV, IP, TARGET_ADDR, TARGET_DEV, UDP_HDR, UDP_PORT,
                       packet_bed)

pytestmark = [pytest.mark.netns, pytest.mark.kernel]

PACKET = 1000                       # bytes at the qdisc (skb->len)
PAYLOAD = PACKET - ETH - IP - UDP_HDR
RATE = 1_000_000                    # bytes/s: 8mbit, one packet a millisecond
BURST = 5000                        # bytes: five packets
N = 24
AT_ONCE_US = 128                    # "at once": the enqueue and dequeue of one call


@pytest.fixture(scope="module")
def bed():
    yield from packet_bed("qdisclat")


def token_bucket(arrivals: list[float], size: int, rate: float, burst: float,
                 whole_packet: bool) -> list[float]:
    """Each packet's wait (s) in a FIFO token bucket that starts full. tbf lets a packet go when
    it holds `size` tokens; htb when its balance is >= 0, and may then go negative."""
    tokens, clock, waits = burst, arrivals[0], []
    need = size if whole_packet else 0
    for arrival in arrivals:
        leave = max(arrival, clock)
        tokens = min(burst, tokens + (leave - clock) * rate)
        if tokens < need:
            leave += (need - tokens) / rate
            tokens = need
        tokens -= size
        clock = leave
        waits.append(leave - arrival)
    return waits


def slot(us: float) -> int:
    return max(0, int(us).bit_length() - 1)


def assert_within_one_bucket(record: dict, waits_s: list[float]) -> None:
    """Sorted, the i-th timed packet lies within one log2 bucket of the model's i-th wait."""
    observed = sorted(slot(b["low"]) for b in record["latency_us"] for _ in range(b["count"]))
    expected = sorted(slot(w * 1e6) for w in waits_s)
    assert len(observed) == len(expected), (observed, expected)
    floor = slot(AT_ONCE_US - 1)
    for got, want in zip(observed, expected):
        assert want - 1 <= got <= max(want + 1, floor), (observed, expected)
    model_us = sum(waits_s) * 1e6
    assert abs(record["latency_us_sum"] - model_us) <= 0.1 * model_us + N * 200, \
        (record["latency_us_sum"], model_us)


def burst(bed, count: int, address: str = TARGET_ADDR) -> list[float]:
    """`count` packets from the host, back to back; the time of each send."""
    sender = bed.sender()
    stamps = []
    with sender:
        for _ in range(count):
            stamps.append(time.monotonic())
            sender.sendto(b"q" * PAYLOAD, (address, UDP_PORT))
    return stamps


def test_tbf_waits_are_where_the_token_bucket_puts_them(bed):
    with bed.qdisc(bed.host, HOST_DEV, "tbf", "rate", f"{RATE * 8}bit", "burst", str(BURST),
                   "limit", "100000"), bed.receiver():
        tbf = bed.trace("qdisclat", "-q", "tbf")
        htb = bed.trace("qdisclat", "--all-netns", "-q", "htb")
        sent = burst(bed, N)
        time.sleep((N * PACKET - BURST) / RATE + 0.05)
        tbf_out, htb_out = tbf.stop(), htb.stop()
    record = tbf_out.one(dev=HOST_DEV)
    assert record["qdisc"] == "tbf" and record["netns"] == bed.inode(bed.host)
    assert record["count"] == N
    assert_within_one_bucket(record, token_bucket(sent, PACKET, RATE, BURST, True))
    summary = tbf_out.summary
    assert (summary["enqueued"], summary["dequeued"], summary["unmatched"]) == (N, N, 0)
    assert summary["qdisc"] == "tbf" and summary["dequeues"] == N     # one at a time here
    ours = {bed.inode(bed.host), bed.inode(bed.target)}
    assert not [r for r in htb_out.run() if r["netns"] in ours]      # -q htb: not tbf


def test_htb_and_the_namespace_rule(bed):
    """htb on l0t; a tbf on l0h, in the target's namespace, carries 3 datagrams back."""
    with bed.qdisc(bed.host, HOST_DEV, "handle", "1:", "htb", "default", "10"), \
            bed.qdisc(bed.target, TARGET_DEV, "tbf", "rate", "100mbit", "burst", "100000",
                      "limit", "100000"), bed.receiver():
        bed.tc(bed.host, "class", "add", "dev", HOST_DEV, "parent", "1:", "classid", "1:10",
               "htb", "rate", f"{RATE * 8}bit", "ceil", f"{RATE * 8}bit", "burst", str(BURST),
               "cburst", str(BURST))
        own = bed.trace("qdisclat")
        every = bed.trace("qdisclat", "--all-netns")
        sent = burst(bed, N)
        with bed.bed.inside(bed.target):
            back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with bed.bed.inside(bed.host):
            # a socket in the host takes them: no ICMP error goes back through the htb
            sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind((HOST_ADDR, UDP_PORT))
        with back, sink:
            for _ in range(3):
                back.sendto(b"r" * 100, (HOST_ADDR, UDP_PORT))
        time.sleep((N * PACKET - BURST) / RATE + 0.05)
        own_out, every_out = own.stop(), every.stop()
    host, target = bed.inode(bed.host), bed.inode(bed.target)
    record = own_out.one(dev=HOST_DEV)
    assert record["qdisc"] == "htb" and record["count"] == N
    assert_within_one_bucket(record, token_bucket(sent, PACKET, RATE, BURST, False))
    assert not own_out.run(netns=target)
    assert every_out.one(netns=host, dev=HOST_DEV)["count"] == N
    back_record = every_out.one(netns=target, dev=TARGET_DEV)
    assert back_record["qdisc"] == "tbf" and back_record["count"] == 3


def test_fq_where_the_kernel_has_it(bed):
    """The kind the book's tool was written for: nothing in qdisclat is particular to tbf or
    htb. fq paces one flow at maxrate once its initial quantum is spent, so of 40 packets of
    1000 bytes at 1 MB/s the last waits some 10-40 ms (a bound, not a model of fq)."""
    try:
        qdisc = bed.qdisc(bed.host, HOST_DEV, "fq", "maxrate", f"{RATE * 8}bit")
        qdisc.__enter__()
    except TestBedError as e:
        if "unknown" in str(e).lower() or "not found" in str(e).lower():
            skip_for_hardware("sch_fq", str(e))
        raise
    try:
        with bed.receiver():
            tracer = bed.trace("qdisclat", "-q", "fq")
            burst(bed, 40)
            time.sleep(40 * PACKET / RATE + 0.05)
            records = tracer.stop()
    finally:
        qdisc.__exit__(None, None, None)
    record = records.one(dev=HOST_DEV)
    assert record["qdisc"] == "fq" and record["count"] == 40, record
    longest = max(b["high"] for b in record["latency_us"])
    assert 5_000 < longest <= 1_000_000, record
    assert records.summary["unmatched"] == 0


MQ_HOST, MQ_TARGET = "mq0", "mq1"
MQ_HOST_ADDR, MQ_TARGET_ADDR = "198.18.200.1", "198.18.200.2"


@pytest.fixture
def two_queues(bed):
    """A second veth pair with two TX queues: a root qdisc on it is not a single queue's, and
    the kernel then dequeues up to 9 ready packets at once (try_bulk_dequeue_skb_slow)."""
    run = bed.bed.run
    run(bed.host, ["ip", "link", "add", MQ_HOST, "numtxqueues", "2", "numrxqueues", "2",
                   "type", "veth", "peer", "name", MQ_TARGET, "numtxqueues", "2",
                   "numrxqueues", "2", "netns", bed.target])
    try:
        for ns, dev, address in ((bed.host, MQ_HOST, MQ_HOST_ADDR),
                                 (bed.target, MQ_TARGET, MQ_TARGET_ADDR)):
            run(ns, ["ip", "addr", "add", f"{address}/24", "dev", dev])
            run(ns, ["ip", "link", "set", dev, "up"])
        for ns, dev, peer_ns, peer_dev, peer in ((bed.host, MQ_HOST, bed.target, MQ_TARGET,
                                                  MQ_TARGET_ADDR),
                                                 (bed.target, MQ_TARGET, bed.host, MQ_HOST,
                                                  MQ_HOST_ADDR)):
            mac = run(peer_ns, ["cat", f"/sys/class/net/{peer_dev}/address"]).stdout.strip()
            run(ns, ["ip", "neigh", "replace", peer, "lladdr", mac, "dev", dev, "nud",
                     "permanent"])
        with bed.bed.inside(bed.target):
            sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sink:
            sink.bind((MQ_TARGET_ADDR, UDP_PORT))       # no ICMP error comes back
            yield
    finally:
        run(bed.host, ["ip", "link", "del", MQ_HOST], check=False)


def test_a_bulk_dequeue_is_walked(bed, two_queues):
    """3 packets pass a slow tbf, 17 wait; then the tbf is made fast and one more packet sent:
    the 18 leave in bulks of 9, and all 21 are timed, the 17 for at least the hold."""
    hold = 0.03
    with bed.qdisc(bed.host, MQ_HOST, "tbf", "rate", "50kbit", "burst", "3000",
                   "limit", "100000"):
        tracer = bed.trace("qdisclat")
        sender = bed.sender()
        with sender:
            for _ in range(20):
                sender.sendto(b"b" * PAYLOAD, (MQ_TARGET_ADDR, UDP_PORT))
            time.sleep(hold)
            bed.tc(bed.host, "qdisc", "change", "dev", MQ_HOST, "root", "tbf", "rate", "1gbit",
                   "burst", "100000", "limit", "100000")
            sender.sendto(b"k" * PAYLOAD, (MQ_TARGET_ADDR, UDP_PORT))
        time.sleep(0.05)
        records = tracer.stop()
    record = records.one(dev=MQ_HOST)
    assert record["count"] == 21, record
    held = sum(b["count"] for b in record["latency_us"] if b["high"] > hold * 1e6)
    assert held == 17, record
    summary = records.summary
    assert summary["bulk_dequeues"] >= 1 and summary["dequeues"] < 21, summary
    assert (summary["dequeued"], summary["unmatched"], summary["unwalked"]) == (21, 0, 0)


def test_text_output(bed):
    with bed.qdisc(bed.host, HOST_DEV, "tbf", "rate", "100mbit", "burst", "100000",
                   "limit", "100000"), bed.receiver():
        tracer = bed.trace("qdisclat", json=False)
        burst(bed, 5)
        out = tracer.stop_text()
    assert f"{HOST_DEV} tbf, count 5, average" in out, out
    assert "5 packets timed (5 enqueued) in 5 dequeues, 0 of them bulk" in out, out


@pytest.mark.parametrize("args, code, text", [
    (["-q", "Fq"], 2, "-q 'Fq': a qdisc kind is a name such as fq"),
    (["-q", "x" * 16], 2, "at most 15 characters"),
    (["--netns", "4242"], 1, "4242 is not a network namespace inode"),
])
def test_bad_input_is_one_line(args, code, text):
    assert text in assert_one_line_error(run_netkit("qdisclat", *args), "qdisclat", code)
