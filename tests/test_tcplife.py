"""netkit tcplife against sessions the test makes, on loopback and across a veth into another
namespace, IPv4 and IPv6, each side closing first: every session's TX and RX must be exactly
the bytes the test sent and received (a different number for each session and direction), its
owner the process that held the socket (also when the CLOSE comes in softirq, after the owner
has exited), its lifetime within the test's own clock.
"""
from __future__ import annotations

import csv
import io
import time

import pytest

from conftest import records, require_root_bpf
from tcptraffic import Peer, tcp_bed, trace


@pytest.fixture(scope="module")
def bed():
    yield from tcp_bed("tcplife")


def session(client, server, listener, family, addr, port, up: int, down: int, closer: str,
            hold: float = 0.0) -> dict:
    """One session: the client sends `up` bytes, the server `down`, one of them closes first.
    Returns what the test knows of it, with the outside clock around its life."""
    start = time.monotonic()
    c = client("connect", family=family, addr=addr, port=port)[0]
    s = server("accept", id=listener)[0]
    client("send", id=c["id"], n=up)
    assert server("recv", id=s["id"], n=up)["got"] == up
    server("send", id=s["id"], n=down)
    assert client("recv", id=c["id"], n=down)["got"] == down
    time.sleep(hold)
    first, second = ((client, c), (server, s)) if closer == "client" else ((server, s), (client, c))
    first[0]("close", id=first[1]["id"])
    assert second[0]("recv_eof", id=second[1]["id"])["got"] == 0
    second[0]("close", id=second[1]["id"])
    return {"cport": c["lport"], "sport": port, "up": up, "down": down,
            "life_s": time.monotonic() - start, "hold": hold}


def check_session(sessions: list[dict], made: dict, client, server) -> None:
    """The client's and the server's record of one session."""
    mine = [e for e in sessions if {e["lport"], e["rport"]} == {made["cport"], made["sport"]}]
    assert len(mine) == 2, (made, mine)
    c = next(e for e in mine if e["lport"] == made["cport"])
    s = next(e for e in mine if e["lport"] == made["sport"])
    assert (c["tx_bytes"], c["rx_bytes"]) == (made["up"], made["down"]), c
    assert (s["tx_bytes"], s["rx_bytes"]) == (made["down"], made["up"]), s
    for e, peer in ((c, client), (s, server)):
        assert (e["pid"], e["comm"]) == (peer.pid, peer.comm), (e, peer.comm)
        assert e["cgroup"] == peer.cgroup
        assert made["hold"] * 1e3 <= e["duration_ms"] <= made["life_s"] * 1e3, (e, made)


@pytest.mark.kernel
@pytest.mark.netns
@pytest.mark.vm
def test_bytes_owners_and_lifetimes_are_exact(bed, request):
    """Loopback and veth, IPv4 and IPv6, client or server closing first; byte counts differ
    per session and per direction, so no swap or off-by-one (SYN, FIN) can pass."""
    where = {"loopback": (None, {4: "127.0.0.1", 6: "::1"}),
             "veth": (bed.host, {4: bed.hop_addrs(4)[0], 6: bed.hop_addrs(6)[0]})}
    tool = trace(request, ["tcplife", "--json"])
    plans = []
    n = 0
    for name, (client_ns, addrs) in where.items():
        client = Peer("nklifeclient", ns=client_ns)
        server = Peer("nklifeserver", ns=None if client_ns is None else bed.routers[0])
        for family in (4, 6):
            listener = server("listen", family=family, addr=addrs[family])
            for closer in ("client", "server"):
                n += 1
                hold = 0.05 if n == 1 else 0.0
                made = session(client, server, listener["id"], family, addrs[family],
                               listener["port"], 1000 + 37 * n, 70_000 + 1001 * n, closer, hold)
                plans.append((made, client, server))
            server("close", id=listener["id"])
        client.close()
        server.close()
    time.sleep(0.2)
    out, err = tool.finish()
    got = records(out)
    for made, client, server in plans:
        check_session(got["session"], made, client, server)
    assert got["summary"][-1]["lost_events"] == 0, err


@pytest.mark.kernel
@pytest.mark.netns
def test_owner_after_it_exited_and_in_softirq(bed, request):
    """The server closes first and exits; the client closes later from the other namespace.
    The server's socket reaches CLOSE when the client's FIN arrives over the veth: in softirq,
    with the client (or another task) on the CPU. It is still the server's session."""
    addr = bed.hop_addrs(4)[0]
    client = Peer("nklifeclient", ns=bed.host)
    server = Peer("nklifegone", ns=bed.routers[0])
    tool = trace(request, ["tcplife", "--json", "-4"])
    listener = server("listen", family=4, addr=addr)
    c = client("connect", family=4, addr=addr, port=listener["port"])[0]
    s = server("accept", id=listener["id"])[0]
    server("send", id=s["id"], n=4321)
    assert client("recv", id=c["id"], n=4321)["got"] == 4321
    server("close", id=s["id"])
    server.close()                          # the owner exits; its socket lives in FIN_WAIT2
    assert client("recv_eof", id=c["id"])["got"] == 0
    client("send", id=c["id"], n=0)
    client("close", id=c["id"])
    time.sleep(0.2)
    out, _ = tool.finish()
    mine = [e for e in records(out)["session"] if listener["port"] in (e["lport"], e["rport"])]
    by_side = {e["lport"] == listener["port"]: e for e in mine}
    assert len(mine) == 2
    assert (by_side[True]["pid"], by_side[True]["comm"]) == (server.pid, "nklifegone")
    assert (by_side[True]["tx_bytes"], by_side[True]["rx_bytes"]) == (4321, 0)
    assert (by_side[False]["pid"], by_side[False]["comm"]) == (client.pid, "nklifeclient")
    assert (by_side[False]["tx_bytes"], by_side[False]["rx_bytes"]) == (0, 4321)
    client.close()


@pytest.mark.kernel
def test_csv_time_columns_and_port_filter(request):
    """-s -T -t -D PORT: CSV with bcc's columns, only sessions whose remote port is PORT (the
    client's side), KiB rounded down."""
    require_root_bpf("tcplife")
    server = Peer("nklifeserver")
    client = Peer("nklifeclient")
    listener = server("listen", family=4, addr="127.0.0.1")
    tool = trace(request, ["tcplife", "-s", "-T", "-t", "-D", str(listener["port"])])
    made = session(client, server, listener["id"], 4, "127.0.0.1", listener["port"], 5000,
                   2047, "client")
    time.sleep(0.1)
    out, _ = tool.finish()
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["TIME", "TIME(s)", "PID", "COMM", "IP", "LADDR", "LPORT", "RADDR",
                             "RPORT", "TX_KB", "RX_KB", "MS", "CGROUP"]
    assert [(r["PID"], r["LPORT"], r["RPORT"], r["TX_KB"], r["RX_KB"]) for r in rows] == \
        [(str(client.pid), str(made["cport"]), str(listener["port"]), "4", "1")]
    assert float(rows[0]["MS"]) <= made["life_s"] * 1e3
    client.close()
    server.close()


@pytest.mark.kernel
def test_exported_histograms_hold_every_session():
    """export_source (what --prometheus and netkit export publish): the session count and the
    exact sums of the bytes each way."""
    require_root_bpf("tcplife")
    from netkit.tools.tcplife import export_source
    server = Peer("nklifeserver")
    client = Peer("nklifeclient")
    listener = server("listen", family=4, addr="127.0.0.1")
    with export_source(name="nklifeclient") as sample:
        for i in range(3):
            session(client, server, listener["id"], 4, "127.0.0.1", listener["port"],
                    100 * (i + 1), 7 * (i + 1), "client")
        time.sleep(0.1)
        snap = sample(time.time())
    assert [c.value for c in snap.counters] == [3]
    hists = {h.name: h for h in snap.histograms}
    assert hists["tcplife_session_tx"].sum == 600 and hists["tcplife_session_rx"].sum == 42
    assert hists["tcplife_session_tx"].unit == "bytes"
    assert sum(hists["tcplife_session_duration"].slots) == 3
    client.close()
    server.close()
