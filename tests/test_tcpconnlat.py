"""netkit tcpconnlat against handshakes of known length: from the test bed's host namespace to
its target, across a link that delays each packet DELAY_S each way, a handshake takes at least
2 x DELAY_S (the SYN out, the SYN-ACK back) and, on this machine, less than a millisecond more
(the emulator adds some tens of microseconds per packet). Loopback handshakes from the same
process take microseconds: the MIN_MS filter must keep the slow ones only. Refused connects
are not latencies.
"""
from __future__ import annotations

import time
from collections import Counter

import pytest

from conftest import assert_one_line_error, records, require_root_bpf, run_netkit
from tcptraffic import DELAY_S, Peer, tcp_bed, trace

N = 5
FLOOR_US = 2 * DELAY_S * 1e6


@pytest.fixture(scope="module")
def bed():
    yield from tcp_bed("tcpconnlat")


@pytest.mark.kernel
@pytest.mark.netns
def test_handshakes_across_a_delayed_link(bed, request):
    client = Peer("nklatclient", ns=bed.host)
    server = Peer("nklatserver", ns=bed.target)
    local = client("listen", family=4, addr="127.0.0.1")
    far = {f: server("listen", family=f, addr=bed.target_addr(f)) for f in (4, 6)}
    refuse = Peer("nklatrefuse", ns=bed.routers[0])
    closed = refuse("listen", family=4, addr=bed.hop_addrs(4)[0])
    refuse("close", id=closed["id"])
    pid = str(client.pid)
    events = trace(request, ["tcpconnlat", "--json", "-p", pid])
    slow = trace(request, ["tcpconnlat", str(FLOOR_US / 2e3), "--json", "-p", pid])
    hists = trace(request, ["tcpconnlat", "--hist", "--json", "-p", pid])
    text = trace(request, ["tcpconnlat", "-t", "-L", "-p", pid])
    made = {f: client("connect", family=f, addr=bed.target_addr(f), port=far[f]["port"], n=N)
            for f in (4, 6)}
    near = client("connect", family=4, addr="127.0.0.1", port=local["port"], n=3)
    refused = client("connect", family=4, addr=bed.hop_addrs(4)[0], port=closed["port"], n=2)
    assert {m["error"] for m in refused} == {"ECONNREFUSED"}
    out, _ = events.finish()
    got = records(out)
    by_port = {e["dport"]: [] for e in got["event"]}
    for e in got["event"]:
        by_port[e["dport"]].append(e)
        assert (e["pid"], e["comm"], e["cgroup"]) == (client.pid, client.comm, client.cgroup)
    assert closed["port"] not in by_port
    for family in (4, 6):
        mine = [e for e in by_port[far[family]["port"]] if e["daddr"] == bed.target_addr(family)]
        assert len(mine) == N
        print(f"IPv{family} across {DELAY_S * 1e3:g} ms each way: "
              f"{[e['latency_us'] for e in mine]} us")
        for e, m in zip(mine, made[family]):
            # From below the link's delay, from above the client's own clock around connect()
            # (not a fixed slack: the userspace link emulator can add a millisecond on a busy
            # machine, seen once in CI at 11.3 ms against 10 + 1)
            assert FLOOR_US <= e["latency_us"] <= m["seconds"] * 1e6, (e, m)
            assert (e["saddr"], e["lport"]) == (bed.host_addr(family), m["lport"])
    assert [e["latency_us"] < 1000 for e in by_port[local["port"]]] == [True] * 3
    assert [e["lport"] for e in by_port[local["port"]]] == [m["lport"] for m in near]
    out, _ = slow.finish()
    # The threshold keeps every handshake across the link and no loopback one, each bounded by
    # the client's clock as above. The two instances are not compared with each other: they
    # stamp the same change with programs run one after the other, and what runs in between
    # (a softirq; a vCPU the host took away) once put 1.46 ms between them in a CI-style run.
    kept = records(out)["event"]
    assert Counter(e["daddr"] for e in kept) == {bed.target_addr(4): N, bed.target_addr(6): N}
    for e in kept:
        slowest = max(m["seconds"] for m in made[6 if ":" in e["daddr"] else 4]) * 1e6
        assert FLOOR_US <= e["latency_us"] <= slowest, (e, slowest)
    out, _ = hists.finish()
    run = [h for h in records(out)["hist"] if h["scope"] == "run"]
    assert Counter({(h["daddr"], h["dport"]): h["count"] for h in run}) == Counter({
        (bed.target_addr(4), far[4]["port"]): N, (bed.target_addr(6), far[6]["port"]): N,
        ("127.0.0.1", local["port"]): 3})
    for h in run:
        if h["daddr"] != "127.0.0.1":
            family = 6 if ":" in h["daddr"] else 4
            slowest = max(m["seconds"] for m in made[family]) * 1e6
            assert N * FLOOR_US <= h["latency_us_sum"] <= N * slowest, h
            assert sum(b["count"] for b in h["latency_us"]) == N
            assert all(b["low"] <= FLOOR_US < 2 * b["high"] for b in h["latency_us"])
    out, _ = text.finish()
    lines = out.splitlines()
    assert lines[0].split() == ["TIME(s)", "PID", "COMM", "IP", "SADDR", "LPORT", "DADDR",
                                "DPORT", "LAT(ms)"]
    ports = [int(line.split()[5]) for line in lines[1:]]
    assert ports == [m["lport"] for m in made[4] + made[6] + near]
    for p in (client, server, refuse):
        p.close()


@pytest.mark.kernel
def test_exported_latency_per_destination_port():
    require_root_bpf("tcpconnlat")
    from netkit.tools.tcpconnlat import export_source
    server = Peer("nklatserver")
    client = Peer("nklatexport")
    a = server("listen", family=4, addr="127.0.0.1")
    b = server("listen", family=6, addr="::1")
    with export_source(name="nklatexport") as sample:
        made = {str(a["port"]): client("connect", family=4, addr="127.0.0.1", port=a["port"],
                                       n=3),
                str(b["port"]): client("connect", family=6, addr="::1", port=b["port"], n=2)}
        snap = sample(time.time())
    counts = {h.labels["dport"]: sum(h.slots) for h in snap.histograms}
    assert counts == {str(a["port"]): 3, str(b["port"]): 2}
    for h in snap.histograms:
        # The sum, in slot units (us), within the connect() calls the client timed itself.
        assert h.unit_seconds == 1e-6
        assert 0 < h.sum <= sum(m["seconds"] for m in made[h.labels["dport"]]) * 1e6, h.sum
    client.close()
    server.close()


@pytest.mark.parametrize("args, message", [
    (["1", "2"], "COUNT is for --hist (tcpconnlat --hist INTERVAL COUNT)"),
    (["--hist", "0.001"], "INTERVAL must be at least 0.01 s"),
])
def test_bad_arguments_are_one_line(args, message):
    line = assert_one_line_error(run_netkit("tcpconnlat", *args), "tcpconnlat", code=2)
    assert line == f"netkit tcpconnlat: {message}"
