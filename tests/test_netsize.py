"""netkit netsize against UDP datagrams of known sizes across a quiet veth pair (tests/packetbed).

Each round sends 3 datagrams of 150 bytes, 5 of 400 and one UDP_SEGMENT send of 4 x 1000 bytes
(a GSO skb of 4000), from the host namespace to a socket in the target's. The sizes fall in
distinct log2 buckets with distinct counts, and what each point sees follows from the link's
offloads, so every histogram is known exactly, sums included:

  tso      l0t segments in "hardware" (TSO/USO on), l0h GRO on: the GSO skb crosses whole; veth
           skips GRO for a sender with TSO, so nic_recv sees nothing
  no_tso   TSO, USO and GRO off: the stack segments after the qdisc, nic_send and recv see the
           four 1000-byte segments
  gro      USO off, GRO on and a UDP_GRO socket: GRO merges the four segments back into one
           packet between nic_recv and recv

Sizes on the send side carry the 14-byte Ethernet header, those on the receive side do not.
netsize runs inside the host namespace: by default it sees only l0t; with --all-netns also l0h,
in the target's namespace.
"""
from __future__ import annotations

import pytest

from conftest import assert_one_line_error, run_netkit
from packetbed import (ETH, HOST_DEV, IP, TARGET_ADDR, TARGET_DEV, UDP_HDR, UDP_PORT, UDP_SEGMENT,
                       buckets, drain, packet_bed)

pytestmark = [pytest.mark.netns, pytest.mark.kernel]

SMALL, MEDIUM, SEGMENT, SEGMENTS = 150, 400, 1000, 4


@pytest.fixture(scope="module")
def bed():
    yield from packet_bed("netsize")


def send_round(bed, receiver) -> None:
    sender = bed.sender()
    with sender:
        for payload, count in ((SMALL, 3), (MEDIUM, 5)):
            for _ in range(count):
                sender.sendto(b"s" * payload, (TARGET_ADDR, UDP_PORT))
        sender.setsockopt(17, UDP_SEGMENT, SEGMENT)
        sender.sendto(b"g" * (SEGMENT * SEGMENTS), (TARGET_ADDR, UDP_PORT))


def sizes(payloads: dict[int, int], link_header: bool) -> dict[int, int]:
    """{packet size: count} for UDP payloads, as a point on the send or receive side sees it."""
    extra = IP + UDP_HDR + (ETH if link_header else 0)
    return {payload + extra: count for payload, count in payloads.items()}


WHOLE = {SMALL: 3, MEDIUM: 5, SEGMENT * SEGMENTS: 1}          # the GSO skb in one piece
SPLIT = {SMALL: 3, MEDIUM: 5, SEGMENT: SEGMENTS}               # ... segmented
# config: (l0t features, l0h features, UDP_GRO socket, {(dev, point): payloads})
CONFIGS = {
    "tso": ({"tso": True, "tx_udp_segmentation": True}, {"gro": True}, False,
            {(HOST_DEV, "send"): WHOLE, (HOST_DEV, "nic_send"): WHOLE,
             (TARGET_DEV, "recv"): WHOLE}),
    "no_tso": ({"tso": False, "tx_udp_segmentation": False}, {"gro": False}, False,
               {(HOST_DEV, "send"): WHOLE, (HOST_DEV, "nic_send"): SPLIT,
                (TARGET_DEV, "recv"): SPLIT}),
    "gro": ({"tso": False, "tx_udp_segmentation": False}, {"gro": True}, True,
            {(HOST_DEV, "send"): WHOLE, (HOST_DEV, "nic_send"): SPLIT,
             (TARGET_DEV, "nic_recv"): SPLIT, (TARGET_DEV, "recv"): WHOLE}),
}


def expected_hist(payloads: dict[int, int], point: str) -> tuple[dict[int, int], int]:
    """({bucket low: count}, exact byte sum)."""
    packets = sizes(payloads, point in ("send", "nic_send"))
    lows: dict[int, int] = {}
    for size, count in packets.items():
        low = 1 << (size.bit_length() - 1)
        lows[low] = lows.get(low, 0) + count
    return lows, sum(size * count for size, count in packets.items())


@pytest.mark.parametrize("config", list(CONFIGS))
def test_each_point_holds_exactly_the_packets_sent(bed, config):
    host_features, target_features, udp_gro, expected = CONFIGS[config]
    with bed.features(bed.host, HOST_DEV, **host_features), \
            bed.features(bed.target, TARGET_DEV, **target_features):
        receiver = bed.receiver(gro=udp_gro)
        with receiver:
            own = bed.trace("netsize", "--dev")
            every = bed.trace("netsize", "--dev", "--all-netns")
            send_round(bed, receiver)
            own_out, every_out = own.stop(), every.stop()
            got = drain(receiver)
    assert sorted(got) == sorted([SMALL] * 3 + [MEDIUM] * 5 + [SEGMENT] * SEGMENTS
                                 if not udp_gro else [SMALL] * 3 + [MEDIUM] * 5 + [SEGMENT * 4])
    host, target = bed.inode(bed.host), bed.inode(bed.target)
    for records, namespaces in ((own_out, {HOST_DEV: host}),
                                (every_out, {HOST_DEV: host, TARGET_DEV: target})):
        seen = {(r["dev"], r["point"]): r for r in records.run()
                if r["netns"] in (host, target)}
        want = {key: payloads for key, payloads in expected.items() if key[0] in namespaces}
        assert set(seen) == set(want), (config, sorted(seen))
        for (dev, point), payloads in want.items():
            record = seen[dev, point]
            lows, total = expected_hist(payloads, point)
            assert record["netns"] == namespaces[dev] and record["ifindex"], record
            assert buckets(record, "size_bytes") == lows, (config, dev, point, record)
            assert record["count"] == sum(payloads.values())
            assert record["size_bytes_sum"] == total, (config, dev, point, record)
    assert own_out.summary["netns"] == host and every_out.summary["netns"] is None


def test_without_dev_a_namespace_has_one_histogram_per_point(bed):
    """No --dev: the host namespace's devices together (only l0t carries anything)."""
    receiver = bed.receiver()
    with receiver:
        tracer = bed.trace("netsize")
        send_round(bed, receiver)
        records = tracer.stop()
    send = records.one(point="send")
    assert send["dev"] is None and send["ifindex"] is None and send["netns"] == bed.inode(bed.host)
    lows, total = expected_hist(WHOLE, "send")
    assert buckets(send, "size_bytes") == lows and send["size_bytes_sum"] == total
    assert records.summary["packets"]["send"] == 9 and records.summary["packets"]["recv"] == 0


def test_text_output_names_the_points(bed):
    receiver = bed.receiver()
    with receiver:
        tracer = bed.trace("netsize", "--dev", json=False)
        send_round(bed, receiver)
        out = tracer.stop_text()
    _, total = expected_hist(WHOLE, "send")
    assert f"l0t: send (net_dev_queue), count 9, average {total / 9:.1f} bytes:" in out, out
    assert "[2K, 4K)                1 |" in out and "Packet sizes over" in out


@pytest.mark.parametrize("args, code, text", [
    (["--netns", "nk-no-such-ns"], 1, "no network namespace nk-no-such-ns"),
    (["--netns", "/proc/self/ns/net", "--all-netns"], 2, "exclude each other"),
])
def test_bad_namespace_is_one_line(args, code, text):
    assert text in assert_one_line_error(run_netkit("netsize", *args), "netsize", code)
