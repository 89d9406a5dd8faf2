"""netkit skblife over a veth pair (tests/packetbed): sk_buffs whose lives the test bounds.

The host sends 7 ICMP echo requests on a datagram ICMP socket and reads the replies after HOLD.
A request is allocated by the send, meets l0t first (the host's namespace) and is freed by the
target's ICMP handler at once; a reply is allocated by the target's ICMP handler, meets l0h
first (the target's namespace) and lives until the host's socket reads it: between HOLD and the
test's span. So the host's namespace holds at least 7 short lives and no long one, the
target's exactly 7 long ones. netkit runs in the host namespace: by default it sees only the
host's sk_buffs.
"""
from __future__ import annotations

import pytest

from conftest import assert_one_line_error, run_netkit
from packetbed import packet_bed

pytestmark = [pytest.mark.netns, pytest.mark.kernel]

ECHOES = 7
HOLD = 0.06
SHORT_US = 10_000


@pytest.fixture(scope="module")
def bed():
    yield from packet_bed("skblife")


def long_lives(record: dict, from_us: float) -> int:
    return sum(b["count"] for b in record["lifetime_us"] if b["high"] > from_us)


@pytest.fixture(scope="module")
def echo_round(bed):
    own = bed.trace("skblife")
    every = bed.trace("skblife", "--all-netns")
    started, ended = bed.echo(ECHOES, HOLD)
    return own.stop(), every.stop(), (ended - started) * 1e6


def test_the_hosts_sk_buffs_by_default(bed, echo_round):
    own, _, _ = echo_round
    record = own.one()
    assert record["netns"] == bed.inode(bed.host)
    # The requests, and nothing else of the host's lives long.
    assert ECHOES <= record["count"] <= ECHOES + 3, record
    assert long_lives(record, SHORT_US) == 0, record
    summary = own.summary
    assert summary["counted"] == record["count"] and summary["netns"] == bed.inode(bed.host)
    assert summary["allocations"] >= summary["lifetimes"] >= record["count"]


def test_the_replies_live_in_the_targets_namespace(bed, echo_round):
    _, every, span_us = echo_round
    target = every.one(netns=bed.inode(bed.target))
    assert long_lives(target, HOLD * 1e6 / 2) == ECHOES, target
    assert all(b["low"] < span_us for b in target["lifetime_us"]), target
    assert ECHOES * HOLD * 1e6 <= target["lifetime_us_sum"] <= target["count"] * span_us
    host = every.one(netns=bed.inode(bed.host))
    assert host["count"] >= ECHOES and long_lives(host, SHORT_US) == 0
    assert every.summary["netns"] is None


def test_a_merged_head_cache_counts_by_call_site(bed):
    """Where skbuff_head_cache is merged with other caches, only allocations made by the skb
    allocator functions count: forced here, the requests are still all seen."""
    from netkit.render.fields import Units
    from netkit.tools.skblife import _open, histograms
    with _open(bed.inode(bed.host), Units(False), {"head_cache_shared": True}) as obj:
        bed.echo(ECHOES, 0)
        totals = histograms(obj)
        totals.read()
        counted = sum(hist.count for hist in totals.totals().values())
    assert ECHOES <= counted <= ECHOES + 3


def test_text_output(bed):
    tracer = bed.trace("skblife", json=False)
    bed.echo(2, 0)
    out = tracer.stop_text()
    assert "sk_buffs, count " in out and "sk_buff allocations seen" in out, out


def test_bad_namespace_is_one_line():
    assert "exclude each other" in assert_one_line_error(
        run_netkit("skblife", "--netns", "1", "--all-netns"), "skblife", 2)
