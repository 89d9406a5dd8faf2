"""netkit tcprtt and tcpwin against one bulk TCP transfer across a link of known delay: the test
bed's emulated link holds each packet 5 ms each way (tools/testbed: linkemu), and a tbf on the
sender's side (20 Mbit/s, a 30 KB queue) makes TCP's congestion control work: its window grows,
the queue overflows, it backs off.

The path's round trip is 10 ms, so every smoothed RTT is at least that. tcprtt and tcpwin read
srtt at the same tracepoint: tcprtt's exact sum equals the sum of tcpwin's per-segment srtt_us,
and in milliseconds (-m) the sum of those values in whole milliseconds. The transfer's socket
is this process's: -p with its PID sees all of it, -p 1 none.
"""
from __future__ import annotations

import os
import socket
import threading

import pytest

from conftest import assert_one_line_error, require_or_skip, require_root_bpf, run_netkit
from packetbed import Records, Tracer
from tools.testbed import Link, fixture_bed

pytestmark = [pytest.mark.netns, pytest.mark.kernel]

ONE_WAY_S = 0.005
ROUND_TRIP_US = 2 * ONE_WAY_S * 1e6
PORT, SIZE = 7300, 1_500_000
SERVER_ADDR, CLIENT_ADDR = "198.18.0.2", "198.18.0.1"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    require_root_bpf("tcprtt")
    textfiles = tmp_path_factory.mktemp("tcprtt")
    for bed in fixture_bed([Link(delay_s=ONE_WAY_S)], require_or_skip, low_latency=False):
        bed.run(bed.host, ["tc", "qdisc", "replace", "dev", "l0t", "root", "tbf", "rate",
                           "20mbit", "burst", "10kb", "limit", "30kb"])
        me = str(os.getpid())
        tracers = {
            "rtt": Tracer(bed, bed.host, ["tcprtt", "-B", "-D", str(PORT), "--json",
                                           "--textfile", str(textfiles)]),
            "rtt_ms": Tracer(bed, bed.host, ["tcprtt", "-m", "-p", me, "-D", str(PORT), "--json"]),
            "rtt_other": Tracer(bed, bed.host, ["tcprtt", "-p", "1", "--json"]),
            "win": Tracer(bed, bed.host, ["tcpwin", "-D", str(PORT), "--json"]),
            "win_mine": Tracer(bed, bed.host, ["tcpwin", "-p", me, "-D", str(PORT), "--json"]),
            "win_csv": Tracer(bed, bed.host, ["tcpwin", "-D", str(PORT)]),
        }
        with bed.inside(bed.target):
            server = socket.create_server((SERVER_ADDR, PORT))
        with bed.inside(bed.host):
            client = socket.socket()
        received = []

        def drain():
            conn, _ = server.accept()
            total = 0
            while chunk := conn.recv(1 << 16):
                total += len(chunk)
            received.append(total)
            conn.close()
        reader = threading.Thread(target=drain)
        reader.start()
        client.connect((SERVER_ADDR, PORT))
        client.sendall(b"w" * SIZE)
        client.shutdown(socket.SHUT_WR)
        reader.join(30)
        client.close()
        server.close()
        records = {name: (Records([]) if name == "win_csv" else t.stop())
                   for name, t in tracers.items()}
        records["win_csv"] = tracers["win_csv"].stop_text()
        yield {"records": records, "received": received, "pid": int(me),
               "prom": (textfiles / "netkit_tcprtt.prom").read_text()}


def windows(records) -> list[dict]:
    return [r for r in records if r["type"] == "event"]


def test_the_transfer_went_through(run):
    assert run["received"] == [SIZE]


def test_srtt_is_at_least_the_paths_round_trip(run):
    hist = run["records"]["rtt"].one(raddr=SERVER_ADDR)
    assert hist["count"] > 50
    assert all(b["low"] >= 8192 for b in hist["srtt_us"] if b["count"]), hist["srtt_us"]
    srtts = [e["srtt_us"] for e in windows(run["records"]["win"])]
    assert min(srtts) >= ROUND_TRIP_US, min(srtts)
    assert max(srtts) < 1_000_000


def test_tcprtt_and_tcpwin_read_the_same_samples(run):
    """The same segments at the same tracepoint: tcprtt's exact sum is the sum of tcpwin's
    values, in microseconds and, truncated per sample, in milliseconds."""
    hist = run["records"]["rtt"].one(raddr=SERVER_ADDR)
    srtts = [e["srtt_us"] for e in windows(run["records"]["win"])]
    assert run["records"]["win"].summary["lost_events"] == 0
    assert (hist["count"], hist["srtt_us_sum"]) == (len(srtts), sum(srtts))
    ms = run["records"]["rtt_ms"].one()
    assert (ms["count"], ms["srtt_ms_sum"]) == (len(srtts), sum(s // 1000 for s in srtts))


def test_exported_histogram_is_in_seconds(run):
    import re
    srtts = [e["srtt_us"] for e in windows(run["records"]["win"])]
    labels = f'{{raddr="{SERVER_ADDR}"}}'
    count = re.search(rf"^netkit_tcprtt_srtt_seconds_count{re.escape(labels)} (\S+)$",
                      run["prom"], re.M)
    total = re.search(rf"^netkit_tcprtt_srtt_seconds_sum{re.escape(labels)} (\S+)$",
                      run["prom"], re.M)
    assert count and float(count.group(1)) == len(srtts), run["prom"]
    assert total and float(total.group(1)) == pytest.approx(sum(srtts) * 1e-6)


def test_owner_filters(run):
    """-p PID: the sockets this process connect()ed or accept()ed; -p 1 none of them."""
    assert run["records"]["rtt_other"].summary["samples"] == 0
    mine = windows(run["records"]["win_mine"])
    assert len(mine) == len(windows(run["records"]["win"]))
    assert {(e["pid"], e["rport"]) for e in mine} == {(run["pid"], PORT)}


def test_congestion_window_is_sane_and_moves(run):
    events = windows(run["records"]["win"])
    assert len({e["sock"] for e in events}) == 1
    cwnds = [e["snd_cwnd"] for e in events]
    assert all(1 <= c <= 2000 for c in cwnds) and len(set(cwnds)) >= 5, sorted(set(cwnds))
    # the tbf's queue overflowed: a loss set the slow-start threshold
    assert any(e["snd_ssthresh"] < 2**31 - 1 for e in events)
    assert all(e["sk_sndbuf"] > 0 and e["sk_wmem_queued"] >= 0 and e["snd_wnd"] > 0
               for e in events)
    times = [e["time_us"] for e in events]
    assert times == sorted(times)


def test_csv_is_the_books(run):
    lines = run["records"]["win_csv"].splitlines()
    assert lines[0] == ("event,sock,time_us,snd_cwnd,snd_ssthresh,sk_sndbuf,sk_wmem_queued,"
                        "srtt_us,snd_wnd")
    rows = [line.split(",") for line in lines[1:]]
    assert len(rows) == len(windows(run["records"]["win"]))
    assert all(r[0] == "rcv" and r[1].startswith("0x") and len(r) == 9 for r in rows)


@pytest.mark.parametrize("args, code, text", [
    (["-b", "-B"], 2, "exclude each other"),
    (["-A", "not-an-address"], 2, "not an IPv4 or IPv6 address"),
    (["-i", "1", "2"], 2, "say different things"),
])
def test_bad_usage_is_one_line(args, code, text):
    assert text in assert_one_line_error(run_netkit("tcprtt", *args), "tcprtt", code)
