"""netkit nettxlat over a veth pair (tests/packetbed), where a "transmit" ends when the receiving
side frees the skb, at a time the test chooses.

The host sends 7 ICMP echo requests from a datagram ICMP socket and reads the replies only after
HOLD. A request (l0t, host) is freed by the target's ICMP handler at once; a reply (l0h, in the
target's namespace) is freed when the host's socket is read, so its time lies between HOLD and
the test's own span from the first send to the last read. Both counts are exact. netkit runs
in the host: by default it sees l0t only, with --all-netns l0h too.
"""
from __future__ import annotations

import pytest

from conftest import assert_one_line_error, run_netkit
from packetbed import HOST_DEV, TARGET_DEV, packet_bed

pytestmark = [pytest.mark.netns, pytest.mark.kernel]

ECHOES = 7
HOLD = 0.06                 # s before the replies are read
PROMPT_US = 10_000          # a request freed "at once": well under this


@pytest.fixture(scope="module")
def bed():
    yield from packet_bed("nettxlat")


@pytest.fixture(scope="module")
def echo_round(bed):
    own = bed.trace("nettxlat", "--dev")
    every = bed.trace("nettxlat", "--dev", "--all-netns")
    whole = bed.trace("nettxlat")
    started, ended = bed.echo(ECHOES, HOLD)
    return own.stop(), every.stop(), whole.stop(), (ended - started) * 1e6


def test_requests_are_freed_at_once_in_the_host(bed, echo_round):
    own, _, _, _ = echo_round
    record = own.one(dev=HOST_DEV)
    assert record["netns"] == bed.inode(bed.host) and record["count"] == ECHOES
    assert 0 < record["latency_us_avg"] and all(b["high"] <= PROMPT_US
                                                for b in record["latency_us"]), record
    assert not own.run(dev=TARGET_DEV)           # the target's namespace is not traced
    assert own.summary["transmits"] == ECHOES and own.summary["netns"] == bed.inode(bed.host)


def test_replies_wait_for_the_reader_in_the_target(bed, echo_round):
    _, every, _, span_us = echo_round
    host, target = bed.inode(bed.host), bed.inode(bed.target)
    assert every.one(netns=host, dev=HOST_DEV)["count"] == ECHOES
    replies = every.one(netns=target, dev=TARGET_DEV)
    assert replies["count"] == ECHOES, replies
    # Each reply waited from its transmit (after its request was sent) to the read (after HOLD).
    assert all(b["high"] > HOLD * 1e6 and b["low"] < span_us for b in replies["latency_us"]), \
        replies
    assert ECHOES * HOLD * 1e6 <= replies["latency_us_sum"] <= ECHOES * span_us, replies
    assert every.summary["netns"] is None


def test_without_dev_one_histogram(bed, echo_round):
    _, _, whole, _ = echo_round
    record = whole.one(netns=bed.inode(bed.host))
    assert record["dev"] is None and record["count"] == ECHOES


def test_milliseconds(bed):
    tracer = bed.trace("nettxlat", "-m")
    bed.echo(3, HOLD)
    record = tracer.stop().one(netns=bed.inode(bed.host))
    assert record["count"] == 3 and "latency_ms" in record and "latency_us" not in record
    assert record["latency_ms_avg"] < PROMPT_US / 1000


def test_text_output(bed):
    tracer = bed.trace("nettxlat", "--dev", json=False)
    bed.echo(2, 0)
    out = tracer.stop_text()
    assert f"{HOST_DEV}, count 2, average" in out and "us:" in out, out
    assert "2 transmits timed (2 ended by consume_skb, 0 by kfree_skb)" in out, out


def test_bad_namespace_is_one_line():
    assert "no network namespace nk-no-such-ns" in assert_one_line_error(
        run_netkit("nettxlat", "--netns", "nk-no-such-ns"), "nettxlat", 1)
