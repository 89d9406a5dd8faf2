"""superping where the echo crosses other network namespaces of the same host.

The test bed's routers are namespaces on this host: the request they forward and the reply they
receive first fire the same tracepoints as the pinging namespace's own. One bed, the one of
issue 22 (host -> r1 -> r2 -> target over 40 Mbit/s 300 us, 8 Mbit/s 2 ms, 20 Mbit/s 500 us),
serves every test. The truth is what linkemu imposes (serialisation plus delay, each link both
ways); its own lateness only adds to it, so no honest RTT comes in under it.

Checks: the in-stack RTT to each hop, IPv4 and IPv6, is at least the truth, at most the user
RTT, and agrees with the kernel-stamped RTT (both directions: host into the target's namespace,
target to the host's); --passive keeps netkit's own namespace by default, --all-netns shows every
namespace with exact counts (the routers' forwarded copies included, each shorter than the
sender's by at least the links in between), --netns picks one.
"""
import json
import os
import signal
import statistics
import subprocess
from collections import Counter

import pytest

from conftest import NETKIT, read_until, require_or_skip, require_root_bpf
from tools.testbed import Link, fixture_bed

pytestmark = [pytest.mark.netns, pytest.mark.kernel]

LINKS = [Link(40e6, 300e-6), Link(8e6, 2e-3), Link(20e6, 500e-6)]
PAYLOAD = 56
IP_BYTES = {4: 20 + 8 + PAYLOAD, 6: 40 + 8 + PAYLOAD}    # what linkemu serialises (TUN, no PI)
AGREE_US = 50            # |median(in-stack - kernel-stamped)|
N = 30


def truth_us(links: list[Link], family: int) -> float:
    return sum(2 * (l.delay_s + IP_BYTES[family] * 8 / l.rate_bps) for l in links) * 1e6


@pytest.fixture(scope="module")
def bed():
    require_root_bpf("superping")
    yield from fixture_bed(LINKS, require_or_skip)


def inode(ns: str) -> int:
    return os.stat(f"/run/netns/{ns}").st_ino


def ping_from(bed, ns: str, address: str) -> tuple[list[dict], dict]:
    res = bed.run(ns, [str(NETKIT), "superping", "--json", "-c", str(N), "-i", "0.01", "-W", "2",
                       address], check=False)
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in res.stdout.splitlines()]
    replies = [r for r in records if r["type"] == "reply"]
    assert sorted(r["seq"] for r in replies) == list(range(1, N + 1)), res.stdout
    assert records[-1]["type"] == "summary"
    return replies, records[-1]


def assert_between_truth_and_kernel_stamp(replies: list[dict], truth: float) -> None:
    for r in replies:
        assert r["stack_rtt_us"] is not None and r["kernel_rtt_us"] is not None, r
        assert truth <= r["stack_rtt_us"] <= r["user_rtt_us"], (truth, r)
        assert truth <= r["kernel_rtt_us"], (truth, r)
    diff = statistics.median(r["stack_rtt_us"] - r["kernel_rtt_us"] for r in replies)
    assert abs(diff) <= AGREE_US, (diff, [(r["stack_rtt_us"], r["kernel_rtt_us"]) for r in replies])


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("hops", [1, 2, 3])
def test_stack_rtt_to_each_hop_lies_between_truth_and_kernel_stamp(bed, hops, family):
    """From the host namespace; hops=3 is the host pinging into the target's namespace."""
    replies, summary = ping_from(bed, bed.host, bed.hop_addrs(family)[hops - 1])
    assert_between_truth_and_kernel_stamp(replies, truth_us(bed.links[:hops], family))
    # The routers' copies of the replies are not ours: no reply went unmatched in our namespace.
    assert summary["unmatched_replies"] == 0 and summary["netns"] == inode(bed.host)


@pytest.mark.parametrize("family", [4, 6])
def test_from_a_namespace_to_the_host(bed, family):
    replies, summary = ping_from(bed, bed.target, bed.host_addr(family))
    assert_between_truth_and_kernel_stamp(replies, truth_us(bed.links, family))
    assert summary["unmatched_replies"] == 0 and summary["netns"] == inode(bed.target)


class Passive:
    """netkit superping --passive --json in namespace `ns` (None: this process's), until stop()."""

    def __init__(self, bed, ns: str | None, *args: str):
        argv = [str(NETKIT), "superping", "--passive", "--json", "-w", "60", *args]
        self.proc = (bed.popen(ns, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) if ns else
                     subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
        started, self.banner = read_until(self.proc, self.proc.stderr, "Tracing ICMP echo", 15)
        if not started:
            self.proc.kill()
            raise AssertionError(f"{argv} did not start: {self.banner}{self.proc.stderr.read()}")

    def stop(self) -> tuple[list[dict], dict]:
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=20)
        assert self.proc.returncode == 0, err
        records = [json.loads(line) for line in out.splitlines()]
        assert records[-1]["type"] == "summary"
        return [r for r in records if r["type"] == "echo"], records[-1]


def ping_both_ways(bed, family: int) -> dict[str, int]:
    """iputils ping, 5 echoes host -> target, then 4 target -> host; the PID of each."""
    pids = {}
    for ns, address, count in ((bed.host, bed.target_addr(family), 5),
                               (bed.target, bed.host_addr(family), 4)):
        # `ip netns exec` execs ping: the PID we started is ping's.
        p = bed.popen(ns, ["ping", "-n", "-q", f"-{family}", "-c", str(count), "-i", "0.02",
                           "-W", "2", address], stdout=subprocess.DEVNULL)
        assert p.wait(timeout=30) == 0
        pids[ns] = p.pid
    return pids


@pytest.mark.parametrize("family", [4, 6])
def test_passive_keeps_its_own_namespace(bed, family):
    tracer = Passive(bed, bed.host)
    pids = ping_both_ways(bed, family)
    echoes, summary = tracer.stop()
    assert sorted(e["seq"] for e in echoes) == [1, 2, 3, 4, 5], echoes
    assert all(e["netns"] == inode(bed.host) and e["pid"] == pids[bed.host] and
               e["comm"] == "ping" and e["address"] == bed.target_addr(family) and
               e["stack_rtt_us"] >= truth_us(bed.links, family) for e in echoes), echoes
    assert summary["netns"] == inode(bed.host) and summary["unmatched_replies"] == 0
    assert f"network namespace {inode(bed.host)}" in tracer.banner


@pytest.mark.parametrize("family", [4, 6])
def test_passive_all_netns_says_which_namespace(bed, family):
    """Outside the bed, every namespace: each sender's echoes in its own namespace, and each
    router's forwarded copies (no process sent them there) in the router's."""
    tracer = Passive(bed, None, "--all-netns")
    pids = ping_both_ways(bed, family)
    echoes, summary = tracer.stop()
    assert summary["netns"] is None and "every network namespace" in tracer.banner
    ours = {inode(ns): ns for ns in bed.nodes}
    echoes = [e for e in echoes if e["netns"] in ours]     # other beds may ping meanwhile
    seen = Counter((ours[e["netns"]], e["address"]) for e in echoes)
    host_addr, target_addr = bed.host_addr(family), bed.target_addr(family)
    want = {(bed.host, target_addr): 5, (bed.target, host_addr): 4}
    for router in bed.routers:
        want.update({(router, target_addr): 5, (router, host_addr): 4})
    assert seen == want, echoes
    rtt = {}
    for e in echoes:
        ns = ours[e["netns"]]
        sender = ns in (bed.host, bed.target)
        assert (e["pid"], e["comm"]) == ((pids[ns], "ping") if sender else (0, "[forwarded]")), e
        rtt[ns, e["address"], e["seq"]] = e["stack_rtt_us"]
    # Node j sees the round trip beyond it: at least the truth of the links it still has to go.
    for j, ns in enumerate(bed.nodes[:-1]):
        for seq in range(1, 6):
            assert rtt[ns, target_addr, seq] >= truth_us(bed.links[j:], family)
    for j, ns in enumerate(bed.nodes[1:], start=1):
        for seq in range(1, 5):
            assert rtt[ns, host_addr, seq] >= truth_us(bed.links[:j], family)
    # ... and the node before it waits at least the link between them longer, both ways.
    for j in range(len(bed.links) - 1):
        near, far = bed.nodes[j], bed.nodes[j + 1]
        for seq in range(1, 6):
            assert (rtt[near, target_addr, seq] - rtt[far, target_addr, seq] >=
                    truth_us(bed.links[j:j + 1], family))
    for j in range(1, len(bed.links)):
        near, far = bed.nodes[j + 1], bed.nodes[j]
        for seq in range(1, 5):
            assert (rtt[near, host_addr, seq] - rtt[far, host_addr, seq] >=
                    truth_us(bed.links[j:j + 1], family))


def test_passive_netns_picks_one_by_proc_path(bed):
    """From outside the bed, the target's namespace named as a container runtime would: by a
    process in it. Only the target's own ping is seen, none of the host's nor the routers'."""
    sleeper = bed.popen(bed.target, ["sleep", "60"])
    try:
        tracer = Passive(bed, None, "--netns", f"/proc/{sleeper.pid}/ns/net")
        pids = ping_both_ways(bed, 4)
        echoes, summary = tracer.stop()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sorted(e["seq"] for e in echoes) == [1, 2, 3, 4], echoes
    assert all(e["netns"] == inode(bed.target) and e["pid"] == pids[bed.target] and
               e["address"] == bed.host_addr(4) for e in echoes), echoes
    assert summary["netns"] == inode(bed.target)


def test_passive_all_netns_text_has_a_netns_column(bed):
    proc = subprocess.Popen([str(NETKIT), "superping", "--passive", "--all-netns", "-w", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started, banner = read_until(proc, proc.stderr, "Tracing ICMP echo", 15)
    assert started, banner
    bed.run(bed.host, ["ping", "-n", "-q", "-c", "2", "-i", "0.02", bed.target_addr(4)])
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["PID", "COMM", "NETNS"], out
    host_rows = [l.split() for l in lines[1:] if f" {inode(bed.host)} " in l]
    assert len(host_rows) == 2 and all(r[1] == "ping" and r[2] == str(inode(bed.host)) and
                                       r[4] == bed.target_addr(4) for r in host_rows), out


def test_a_namespace_by_name_path_and_inode(bed):
    from netkit.engine import netns
    for ns in bed.nodes:
        assert netns.resolve(ns) == netns.resolve(f"/run/netns/{ns}") == inode(ns)
    assert len({inode(ns) for ns in bed.nodes} | {netns.current()}) == len(bed.nodes) + 1
