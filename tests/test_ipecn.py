"""netkit ipecn against datagrams this test marks itself on loopback: 5 IPv4 with TOS 3 (CE)
from 127.0.0.77, 2 IPv6 with traffic class 3 from ::1, and, not to be counted, 4 ECT(0)
(10) and 3 ECT(1) (01) IPv4 datagrams from the same source. Three tracers run at once: the
per-source counts, one line per packet (-e) and IPv4 only (-4)."""
from __future__ import annotations

import socket

import pytest

from conftest import NETKIT, assert_one_line_error, read_until, require_root_bpf, run_netkit

pytestmark = pytest.mark.kernel

SOURCE4 = "127.0.0.77"
CE_V4, ECT0_V4, ECT1_V4, CE_V6 = 5, 4, 3, 2
ECT1, ECT0, CE = 1, 2, 3


def send(family: int, source: str, dest: str, marks: list[tuple[int, int]]) -> None:
    with socket.socket(family, socket.SOCK_DGRAM) as receiver, \
            socket.socket(family, socket.SOCK_DGRAM) as sender:
        receiver.bind((dest, 0))
        sender.bind((source, 0))
        level, option = ((socket.IPPROTO_IP, socket.IP_TOS) if family == socket.AF_INET
                         else (socket.IPPROTO_IPV6, socket.IPV6_TCLASS))
        sent = 0
        for mark, n in marks:
            sender.setsockopt(level, option, mark)
            for _ in range(n):
                sender.sendto(b"ecn", receiver.getsockname()[:2])
                sent += 1
        receiver.settimeout(5)
        for _ in range(sent):
            receiver.recv(16)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import json
    import signal
    import subprocess
    require_root_bpf("ipecn")
    textfiles = tmp_path_factory.mktemp("ipecn")
    procs = {name: subprocess.Popen([str(NETKIT), "ipecn", "--json", *args],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, args in (("counts", []), ("events", ["-e"]), ("v4", ["-4"]),
                                                ("export", ["--textfile", str(textfiles)]))}
    for proc in procs.values():
        assert read_until(proc, proc.stderr, "Hit Ctrl-C", 15)[0]
    send(socket.AF_INET, SOURCE4, "127.0.0.1", [(CE, CE_V4), (ECT0, ECT0_V4), (ECT1, ECT1_V4)])
    send(socket.AF_INET6, "::1", "::1", [(CE, CE_V6), (ECT0, 1)])
    records = {}
    for name, proc in procs.items():
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        records[name] = [json.loads(line) for line in out.splitlines()]
    records["prom"] = (textfiles / "netkit_ipecn.prom").read_text()
    return records


def ours(sources: list[dict]) -> dict[str, tuple[str, int]]:
    return {s["saddr"]: (s["family"], s["count"]) for s in sources
            if s["saddr"] in (SOURCE4, "::1")}


def test_ce_packets_are_counted_exactly_by_source(run):
    summary = run["counts"][-1]
    assert summary["type"] == "summary" and summary["lost_events"] == 0
    assert ours(summary["sources"]) == {SOURCE4: ("IPv4", CE_V4), "::1": ("IPv6", CE_V6)}
    assert summary["netns"] is not None


def test_one_event_per_ce_packet(run):
    events = [r for r in run["events"] if r["type"] == "event"]
    mine = [(e["saddr"], e["daddr"], e["family"]) for e in events if e["saddr"] in
            (SOURCE4, "::1")]
    assert sorted(mine) == sorted([(SOURCE4, "127.0.0.1", "IPv4")] * CE_V4 +
                                  [("::1", "::1", "IPv6")] * CE_V6)
    assert all(e["ifindex"] == socket.if_nametoindex("lo") for e in events
               if e["saddr"] in (SOURCE4, "::1"))


def test_ipv4_only(run):
    assert ours(run["v4"][-1]["sources"]) == {SOURCE4: ("IPv4", CE_V4)}


def test_exported_counter(run):
    assert f'netkit_ipecn_ce_packets_total{{saddr="{SOURCE4}"}} {CE_V4}' in run["prom"]
    assert f'netkit_ipecn_ce_packets_total{{saddr="::1"}} {CE_V6}' in run["prom"]


def test_text_output():
    out = run_netkit("ipecn", "-d", "0.3")
    assert out.returncode == 0, out.stderr
    assert "CE packets" in out.stdout


def test_bad_usage_is_one_line():
    assert "-4" in assert_one_line_error(run_netkit("ipecn", "-4", "-6"), "ipecn", 2)
