"""netkit superping against a real peer: two network namespaces joined by veth (the test bed),
echo replies from the peer's kernel, the installed CLI run inside the sending namespace.

Cross-checks: every sequence number comes back exactly once; the kernel-stamped and in-stack
RTTs never exceed the userspace RTT; in-stack and SO_TIMESTAMPING RTTs agree within tens of
microseconds; a 2 ms emulated delay each way shows as >= 4 ms; requests the peer drops (nft
rule on exact sequence numbers) are the lost ones; the in-kernel histogram counts the same
replies the ring buffer delivered; --passive sees a real `ping -c N` exactly N times.
"""
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

import pytest

from conftest import (NETKIT as NETKIT_BIN, Traced, assert_one_line_error, require_root_bpf,
                      run_netkit)
from netkit.net.icmp import checksum, echo_request
from netkit.net.superping import stats


N = 40
AGREE_US = 50          # |in-stack - kernel-stamped| for the median reply
NETKIT = [str(NETKIT_BIN), "superping"]


def _needs_root():
    require_root_bpf("superping")


@pytest.fixture(scope="module")
def bed():
    _needs_root()
    from tools.testbed import Link, TestBed
    with TestBed([Link()]) as b:
        yield b


def superping(bed, *args, ns=None, check=True, timeout=60):
    res = bed.run(ns or bed.host, NETKIT + ["--json", *args], check=False, timeout=timeout)
    if check:
        assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()], res


def split(records):
    replies = [r for r in records if r["type"] == "reply"]
    lost = [r for r in records if r["type"] == "lost"]
    summary = records[-1]
    assert summary["type"] == "summary"
    return replies, lost, summary


def hist_total(summary):
    return sum(b["count"] for b in summary["hist_us"])


@pytest.fixture
def peer_ttl(bed):
    """An unusual TTL / hop limit on the peer's replies, so the TTL column is checked for real."""
    keys = ["net.ipv4.ip_default_ttl", "net.ipv6.conf.l0h.hop_limit"]   # l0h: the peer's end
    old = [bed.run(bed.target, ["sysctl", "-n", k]).stdout.strip() for k in keys]
    bed.run(bed.target, ["sysctl", "-q", "-w"] + [f"{k}=77" for k in keys])
    yield 77
    bed.run(bed.target, ["sysctl", "-q", "-w"] + [f"{k}={v}" for k, v in zip(keys, old)])


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.kernel
@pytest.mark.netns
def test_every_request_answered_once_and_rtts_ordered(bed, family, peer_ttl):
    records, _ = superping(bed, "-c", str(N), "-i", "0.01", "-W", "2", bed.target_addr(family))
    replies, lost, summary = split(records)
    assert lost == []
    assert sorted(r["seq"] for r in replies) == list(range(1, N + 1))   # each exactly once
    assert all(not r["dup"] and r["from"] == bed.target_addr(family) for r in replies)
    assert {r["ttl"] for r in replies} == {peer_ttl}      # one hop: as the peer sent them
    for r in replies:
        assert r["kernel_rtt_us"] is not None and r["stack_rtt_us"] is not None
        assert 0 < r["kernel_rtt_us"] <= r["user_rtt_us"]
        assert 0 < r["stack_rtt_us"] <= r["user_rtt_us"]
    diffs = [abs(r["stack_rtt_us"] - r["kernel_rtt_us"]) for r in replies]
    assert statistics.median(diffs) <= AGREE_US, diffs
    assert (summary["transmitted"], summary["received"], summary["loss_pct"]) == (N, N, 0.0)
    assert summary["bpf"] is True and summary["hist_source"] == "stack"
    # The histogram aggregated in the kernel counts the replies the ring buffer delivered.
    assert hist_total(summary) == N
    assert summary["unmatched_replies"] == 0 and summary["lost_events"] == 0
    assert summary["stack_rtt_us"]["n"] == N
    for b in summary["hist_us"]:
        assert b["count"] == sum(b["low"] <= int(r["stack_rtt_us"]) < b["high"] for r in replies)


@pytest.mark.kernel
@pytest.mark.netns
def test_cpu_busy_inflates_only_the_user_rtt(bed):
    """Every core spinning: the user RTT takes the scheduler's delays, the kernel ones do not."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(os.cpu_count() or 1)]
    try:
        records, _ = superping(bed, "-c", "100", "-i", "0.005", "-W", "2", bed.target_addr(4))
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    replies, lost, _ = split(records)
    assert sorted(r["seq"] for r in replies) == list(range(1, 101)) and lost == []
    for r in replies:
        assert 0 < r["kernel_rtt_us"] <= r["user_rtt_us"]
        assert 0 < r["stack_rtt_us"] <= r["user_rtt_us"]
    stack = [r["stack_rtt_us"] for r in replies]
    kernel = [r["kernel_rtt_us"] for r in replies]
    user = [r["user_rtt_us"] for r in replies]
    assert statistics.median(abs(a - b) for a, b in zip(stack, kernel)) <= AGREE_US
    assert statistics.pstdev(stack) < statistics.pstdev(user)


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.kernel
@pytest.mark.netns
def test_fragmented_echoes_are_timed_by_their_first_fragment(bed, family):
    records, _ = superping(bed, "-s", "3000", "-c", "5", "-i", "0.01", bed.target_addr(family))
    replies, lost, summary = split(records)
    assert sorted(r["seq"] for r in replies) == [1, 2, 3, 4, 5] and lost == []
    assert all(r["bytes"] == 3008 and 0 < r["stack_rtt_us"] <= r["user_rtt_us"] for r in replies)
    assert hist_total(summary) == 5


@pytest.mark.kernel
@pytest.mark.netns
def test_known_delay_shows_in_kernel_and_stack_rtts():
    """linkemu holds each packet 2 ms per direction: no RTT may come in under 4 ms."""
    _needs_root()
    from tools.testbed import Link, TestBed
    with TestBed([Link(delay_s=0.002)]) as slow:
        records, _ = superping(slow, "-c", "20", "-i", "0.01", "-W", "2", slow.target_addr(4))
    replies, lost, summary = split(records)
    assert lost == [] and len(replies) == 20
    for r in replies:
        assert 4000 <= r["kernel_rtt_us"] <= r["user_rtt_us"]
        assert 4000 <= r["stack_rtt_us"] <= r["user_rtt_us"]
        assert abs(r["stack_rtt_us"] - r["kernel_rtt_us"]) <= 200
    assert hist_total(summary) == 20


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.kernel
@pytest.mark.netns
def test_requests_dropped_by_the_peer_are_the_lost_ones(bed, family):
    dropped = {3, 7, 8}
    match = "icmp type echo-request icmp" if family == 4 else \
        "icmpv6 type echo-request icmpv6"
    table = f"superping_drop{family}"
    nft = ["nft", "-f", "-"]
    rules = (f"table inet {table} {{\n chain input {{\n type filter hook input priority 0;\n"
             f" {match} sequence {{ {', '.join(map(str, sorted(dropped)))} }} drop\n }}\n}}\n")
    bed.run(bed.target, nft, input=rules)
    try:
        records, res = superping(bed, "-c", "12", "-i", "0.01", "-W", "0.5",
                                 bed.target_addr(family), check=False)
    finally:
        bed.run(bed.target, ["nft", "delete", "table", "inet", table])
    assert res.returncode == 0, res.stderr
    replies, lost, summary = split(records)
    assert {r["seq"] for r in lost} == dropped and len(lost) == len(dropped)
    assert sorted(r["seq"] for r in replies) == sorted(set(range(1, 13)) - dropped)
    assert (summary["transmitted"], summary["received"]) == (12, 12 - len(dropped))
    assert summary["loss_pct"] == pytest.approx(100 * len(dropped) / 12, abs=1e-3)
    assert hist_total(summary) == 12 - len(dropped)


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("kind", ["raw", "dgram"])
@pytest.mark.kernel
@pytest.mark.netns
def test_ttl_one_through_a_router_gives_time_exceeded(family, kind):
    """Raw sockets read the router's error themselves, ping sockets from the error queue."""
    _needs_root()
    from tools.testbed import Link, TestBed
    with TestBed([Link(), Link()]) as two_hops:
        records, res = superping(two_hops, "--socket", kind, "-t", "1", "-c", "4", "-i", "0.01",
                                 "-W", "1", two_hops.target_addr(family), check=False)
        router = two_hops.hop_addrs(family)[0]
    assert res.returncode == 1, res.stderr       # no reply at all, as ping
    errors = [r for r in records if r["type"] == "error"]
    assert sorted(e["seq"] for e in errors) == [1, 2, 3, 4]
    assert all(e["from"] == router and e["icmp_type"] == (11 if family == 4 else 3)
               for e in errors)
    summary = records[-1]
    assert (summary["transmitted"], summary["received"], summary["errors"]) == (4, 0, 4)
    assert not [r for r in records if r["type"] in ("reply", "lost")]


@pytest.mark.kernel
@pytest.mark.netns
def test_tx_point_queue_includes_the_shaper_wait(bed):
    """Behind a 1 Mbit/s tbf, 1408-byte echoes 2 ms apart queue ~11 ms each behind the one before:
    the default (transmit) stamp leaves that wait out, like the driver's SO_TIMESTAMPING stamp;
    --tx-point queue (net:net_dev_queue) counts it."""
    dev = "l0t"                                    # the host's end of the veth pair
    bed.run(bed.host, ["tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", "1mbit",
                       "burst", "1600", "limit", "100000"])
    try:
        runs = {point: split(superping(bed, "--tx-point", point, "-s", "1400", "-c", "6",
                                       "-i", "0.002", "-W", "3", bed.target_addr(4))[0])
                for point in ("xmit", "queue")}
    finally:
        bed.run(bed.host, ["tc", "qdisc", "del", "dev", dev, "root"])
    for point, (replies, _, summary) in runs.items():
        assert sorted(r["seq"] for r in replies) == [1, 2, 3, 4, 5, 6], point
        missing = [r["seq"] for r in replies if r["stack_rtt_us"] is None]
        assert not missing, (f"{point}: no in-stack RTT for seqs {missing}; BPF counted "
                             f"unmatched={summary['unmatched_replies']} "
                             f"lost={summary['lost_events']}; kernel RTTs "
                             f"{[r['kernel_rtt_us'] for r in replies]}")
    runs = {point: replies for point, (replies, _, _) in runs.items()}
    # tbf lets a 1442-byte frame (echo 1408, IPv4 20, Ethernet 14) out every 11.536 ms at
    # 1 bit/us; the first found the bucket full. Echo k's wait in the qdisc (queue-point stack
    # RTT less the driver-stamped one) is then (k-1) frame times less the time since echo 1
    # was sent: ~9.5 ms more per echo 2 ms apart. The lower bound allows the sender a ~9 ms
    # gap (a loaded CPU wakes it late; the wait shrinks by as much); the upper one cannot be
    # exceeded by a later sender, only by one late dequeue (10 ms allowed): a wait in the
    # wrong unit, or counted twice, is outside.
    frame_us = (1408 + 20 + 14) * 8
    for r in runs["xmit"]:
        assert abs(r["stack_rtt_us"] - r["kernel_rtt_us"]) <= 200
    for r in runs["queue"]:
        assert r["stack_rtt_us"] <= r["user_rtt_us"]
        ahead = r["seq"] - 1
        wait_us = r["stack_rtt_us"] - r["kernel_rtt_us"]
        assert 0.25 * (frame_us - 2000) * ahead <= wait_us <= frame_us * ahead + 10_000, r


@pytest.mark.kernel
@pytest.mark.netns
def test_datagram_socket(bed):
    """An ICMP "ping" socket (the bed allows every group): the kernel picks the echo id."""
    records, _ = superping(bed, "--socket", "dgram", "-c", "10", "-i", "0.01",
                           bed.target_addr(4))
    replies, lost, summary = split(records)
    assert sorted(r["seq"] for r in replies) == list(range(1, 11)) and lost == []
    assert len({r["id"] for r in replies}) == 1
    assert all(r["stack_rtt_us"] is not None for r in replies)
    assert hist_total(summary) == 10


@pytest.mark.parametrize("source", ["device", "address"])
@pytest.mark.kernel
@pytest.mark.netns
def test_interface_option_takes_a_device_or_a_source_address(bed, source):
    iface = "l0t" if source == "device" else bed.host_addr(4)
    records, _ = superping(bed, "-I", iface, "-c", "3", "-i", "0.01", bed.target_addr(4))
    replies, _, _ = split(records)
    assert sorted(r["seq"] for r in replies) == [1, 2, 3]


@pytest.mark.kernel
@pytest.mark.netns
def test_unprivileged_without_ping_group_range_is_one_line(bed):
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    key = "net.ipv4.ping_group_range"
    old = bed.run(bed.host, ["sysctl", "-n", key]).stdout.split()
    bed.run(bed.host, ["sysctl", "-q", "-w", f"{key}=1 0"])            # nobody may ping
    try:
        res = bed.run(bed.host, nobody + NETKIT + ["-c", "1", bed.target_addr(4)], check=False)
    finally:
        bed.run(bed.host, ["sysctl", "-q", "-w", f"{key}={' '.join(old)}"])
    assert "ping_group_range" in assert_one_line_error(res, "superping")


@pytest.mark.kernel
@pytest.mark.netns
def test_without_bpf_it_says_so_and_still_times(bed):
    """As an unprivileged user: a datagram socket, one line about BPF, user + kernel RTTs."""
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    res = bed.run(bed.host, nobody + NETKIT + ["--json", "-c", "5", "-i", "0.01",
                                                bed.target_addr(4)], check=False)
    assert res.returncode == 0, res.stderr
    notes = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(notes) == 1 and notes[0].startswith("netkit superping: no in-stack RTT"), notes
    replies, _, summary = split([json.loads(line) for line in res.stdout.splitlines()])
    assert sorted(r["seq"] for r in replies) == [1, 2, 3, 4, 5]
    assert all(r["stack_rtt_us"] is None and 0 < r["kernel_rtt_us"] <= r["user_rtt_us"]
               for r in replies)
    assert summary["bpf"] is False and summary["hist_source"] == "kernel"
    assert hist_total(summary) == 5


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.kernel
@pytest.mark.netns
def test_passive_sees_a_real_ping_exactly_n_times(bed, family, tmp_path):
    count = 7
    # A copy of ping under a name no other process has: -n selects only this run's echoes.
    # (Not ending in a digit: iputils ping takes a trailing 4 or 6 in its name as -4/-6.)
    comm = f"spt{os.getpid() % 100000}x"
    pinger = tmp_path / comm
    shutil.copy("/usr/bin/ping", pinger)
    # The ping runs in the bed's host namespace, the tracer in ours: name the bed's (by its name).
    tracer = Traced(["superping", "--passive", "--json", "--netns", bed.host, "-n", comm,
                     "-w", "20", "-c", str(count + 1)], banner="Tracing ICMP echo")
    ping = bed.run(bed.host, [str(pinger), f"-{family}", "-c", str(count), "-i", "0.02",
                              bed.target_addr(family)])
    time.sleep(0.3)
    out, err = tracer.finish()
    assert tracer.proc.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    echoes = [r for r in records if r["type"] == "echo"]
    assert sorted(e["seq"] for e in echoes) == list(range(1, count + 1))
    assert all(e["comm"] == comm and e["family"] == family and
               e["address"] == bed.target_addr(family) for e in echoes)
    assert len({e["id"] for e in echoes}) == 1
    summary = records[-1]
    assert summary["type"] == "summary" and summary["echoes"] == count
    assert hist_total(summary) == count
    # ping's own RTTs (its RX stamp is SO_TIMESTAMP, its TX time is read before sendmsg).
    ping_ms = [float(line.split("time=")[1].split()[0])
               for line in ping.stdout.splitlines() if "time=" in line]
    assert len(ping_ms) == count
    assert statistics.median(e["stack_rtt_us"] for e in echoes) <= statistics.median(ping_ms) * 1e3


# -- bad input: one line, the right exit status, no traffic ---------------------------------------

@pytest.mark.parametrize("args, code, text", [
    ([], 2, "a DESTINATION is needed"),
    (["--passive", "127.0.0.1"], 2, "--passive sends nothing"),
    (["-4", "::1"], 1, "::1 is not an IPv4 address"),
    (["-c", "1", "-I", "nosuchdev0", "127.0.0.1"], 1, "interface nosuchdev0"),
    (["--socket", "udp", "127.0.0.1"], 2, "'udp' is not one of 'raw', 'dgram', 'auto'"),
    (["--tx-point", "wire", "127.0.0.1"], 2, "'wire' is not one of 'xmit', 'queue'"),
])
@pytest.mark.kernel
def test_bad_input_is_one_line(args, code, text):
    assert text in assert_one_line_error(run_netkit("superping", *args), "superping", code)


@pytest.mark.kernel
def test_plain_output_is_ping_like():
    _needs_root()
    res = run_netkit("superping", "-c", "3", "-i", "0.01", "127.0.0.1")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    replies = [l for l in lines if " bytes from 127.0.0.1: icmp_seq=" in l]
    assert len(replies) == 3 and all(" user=" in l and " kernel=" in l and " stack=" in l
                                     for l in replies)
    assert "3 packets transmitted, 3 received, 0% packet loss" in res.stdout
    assert "\u2500" not in res.stdout and "\x1b[" not in res.stdout   # no box drawing, no colour


# -- pure logic -----------------------------------------------------------------------------------

def test_stats_match_ping_mdev_definition():
    values = [10.0, 12.0, 15.0, 11.0, 40.0]
    s = stats(values)
    assert (s.n, s.min, s.max) == (5, 10.0, 40.0)
    assert s.avg == pytest.approx(statistics.fmean(values))
    assert s.mdev == pytest.approx(statistics.pstdev(values))
    assert stats([]) is None


def test_echo_request_checksum_verifies():
    packet = echo_request(0x1234, 7, 56, v6=False)
    assert len(packet) == 64 and checksum(packet) == 0
    assert packet[4:8] == bytes.fromhex("12340007")
    assert echo_request(1, 2, 0, v6=True)[:1] == b"\x80"
    assert math.isclose(len(echo_request(1, 2, 1400, v6=True)), 1408)
