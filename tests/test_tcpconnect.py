"""netkit tcpconnect against connects the test makes from known processes: on loopback (IPv4,
IPv6, IPv4-mapped on an IPv6 socket) and across a veth into another namespace; each connect
exactly once, with the local port the process itself saw. Failures from a test bed router: a
port nobody listens on (RST: ECONNREFUSED) and a port whose SYNs are dropped (ETIMEDOUT),
whose blocking connect must be shown at its SYN retransmission while it still hangs. 1,000
connects at once: every one, or the loss counted.
"""
from __future__ import annotations

import time
from collections import Counter

import pytest

from conftest import assert_one_line_error, records, require_root_bpf, run_netkit
from tcptraffic import PORT_DROP, Peer, tcp_bed, trace

@pytest.fixture(scope="module")
def bed():
    yield from tcp_bed("tcpconnect")


def by_lport(events: list[dict]) -> dict[int, dict]:
    seen = Counter(e["lport"] for e in events)
    assert max(seen.values(), default=1) == 1, seen          # each connect once
    return {e["lport"]: e for e in events}


@pytest.mark.kernel
@pytest.mark.netns
def test_each_connect_once_with_its_real_local_port(bed, request):
    """Loopback and veth, blocking and non-blocking, IPv4, IPv6 and IPv4-mapped."""
    local = Peer("nkconnlocal")
    remote = Peer("nkconnremote", ns=bed.host)
    server_lo = Peer("nkconnserver")
    server_r1 = Peer("nkconnserver", ns=bed.routers[0])
    dual = server_lo("listen", family=6, addr="::")
    r1 = {f: server_r1("listen", family=f, addr=bed.hop_addrs(f)[0]) for f in (4, 6)}
    tool = trace(request, ["tcpconnect", "--json", "-L", "-U"])
    plan = []       # (peer, family given to socket(), address, port, family shown)
    for nonblocking in (False, True):
        plan += [(local, 4, "127.0.0.1", dual["port"], "IPv4"),
                 (local, 6, "::1", dual["port"], "IPv6"),
                 (local, 6, "::ffff:127.0.0.1", dual["port"], "IPv4")]
        plan += [(remote, f, bed.hop_addrs(f)[0], r1[f]["port"], f"IPv{f}") for f in (4, 6)]
    made = []
    for peer, family, addr, port, _ in plan:
        nb = len(made) >= len(plan) // 2
        made.append(peer("connect", family=family, addr=addr, port=port, n=2,
                         nonblocking=nb))
    out, err = tool.finish()
    got = records(out)
    events = [e for e in got["event"] if e["pid"] in (local.pid, remote.pid)]
    assert len(events) == 2 * len(plan), err
    seen = by_lport(events)
    for (peer, _, addr, port, shown), pair in zip(plan, made):
        for m in pair:
            assert m["error"] == "OK"
            e = seen[m["lport"]]
            shown_daddr = "127.0.0.1" if addr.startswith("::ffff:") else addr
            assert (e["pid"], e["comm"], e["uid"], e["cgroup"]) == \
                (peer.pid, peer.comm, 0, peer.cgroup)
            assert (e["family"], e["daddr"], e["dport"]) == (shown, shown_daddr, port)
            if peer is remote:
                assert e["saddr"] == bed.host_addr(4 if shown == "IPv4" else 6)
            else:
                assert e["saddr"] == shown_daddr
    assert got["summary"][-1]["lost_events"] == 0
    for p in (local, remote, server_lo, server_r1):
        p.close()


@pytest.mark.kernel
def test_uid_filter_and_column(request):
    """-u UID: only that user's connects (a peer running as nobody), with the UID column."""
    require_root_bpf("tcpconnect")
    server = Peer("nkconnserver")
    listener = server("listen", family=4, addr="127.0.0.1")
    nobody = Peer("nkconnnobody", user=65534)
    root = Peer("nkconnroot")
    tool = trace(request, ["tcpconnect", "-U", "-u", "65534"])
    mine = nobody("connect", family=4, addr="127.0.0.1", port=listener["port"], n=3)
    root("connect", family=4, addr="127.0.0.1", port=listener["port"], n=2)
    out, _ = tool.finish()
    lines = out.splitlines()
    assert lines[0].split() == ["UID", "PID", "COMM", "IP", "SADDR", "DADDR", "DPORT"]
    assert [line.split() for line in lines[1:]] == \
        [["65534", str(nobody.pid), "nkconnnobody", "4", "127.0.0.1", "127.0.0.1",
          str(listener["port"])]] * len(mine)
    for p in (server, nobody, root):
        p.close()


@pytest.mark.kernel
@pytest.mark.netns
def test_refused_and_timed_out_connects(bed, request):
    """From the host namespace to r1: one connect succeeds, one is refused (RST), one gets no
    answer (SYNs dropped; the client gives up through TCP_USER_TIMEOUT after the SYN's first
    retransmission). Plain: all three, the hanging one shown while it hangs. --failed: their
    results. -C --failed: counted per destination port and result.
    (A user timeout of 1.5 s stops retransmissions at 1.5 s: the RTO is clamped to it.)"""
    addr = bed.hop_addrs(4)[0]
    server = Peer("nkconnserver", ns=bed.routers[0])
    listener = server("listen", family=4, addr=addr)
    refused_port = server("listen", family=4, addr=addr)["port"]
    server("close", id=2)                                   # nobody listens there now
    client = Peer("nkconnclient", ns=bed.host)
    hanging = Peer("nkconnhang", ns=bed.host)
    plain = trace(request, ["tcpconnect", "--json", "-L", "-4"])
    failed = trace(request, ["tcpconnect", "--json", "--failed"])
    # Other tests on this machine may use the same addresses in their own namespaces: ours are
    # told apart by process, and counted on our ports only.
    counted = trace(request, ["tcpconnect", "--json", "-C", "--failed", "-P",
                              f"{listener['port']},{refused_port},{PORT_DROP}"])
    ours = (client.pid, hanging.pid)
    started = time.time()
    hanging.start("connect", family=4, addr=addr, port=PORT_DROP, user_timeout_ms=1500)
    ok = client("connect", family=4, addr=addr, port=listener["port"])[0]
    refused = client("connect", family=4, addr=addr, port=refused_port)[0]
    hung = hanging.result()[0]      # SYN at 0, retransmitted at 1 s, given up at 1.5 s
    shown, _ = plain.finish()
    assert (ok["error"], refused["error"], hung["error"]) == ("OK", "ECONNREFUSED", "ETIMEDOUT")
    events = {e["lport"]: e for e in records(shown)["event"]
              if e["daddr"] == addr and e["pid"] in ours}
    assert set(events) == {ok["lport"], refused["lport"], hung["lport"]}
    assert "result" not in events[ok["lport"]]
    from datetime import datetime
    when = datetime.fromisoformat(events[hung["lport"]]["ts"]).timestamp() - started
    assert 0.9 < when < hung["seconds"] - 0.3, when        # at the retransmission, not the end
    out, _ = failed.finish()
    results = {e["lport"]: e["result"] for e in records(out)["event"]
               if e["daddr"] == addr and e["pid"] in ours}
    assert results == {ok["lport"]: "OK", refused["lport"]: "ECONNREFUSED",
                       hung["lport"]: "ETIMEDOUT"}
    out, _ = counted.finish()
    counts = {(c["dport"], c["result"]): c["connects"] for c in records(out)["count"]
              if c["daddr"] == addr}
    assert counts == {(listener["port"], "OK"): 1, (refused_port, "ECONNREFUSED"): 1,
                      (PORT_DROP, "ETIMEDOUT"): 1}
    for p in (server, client, hanging):
        p.close()


@pytest.mark.kernel
def test_a_thousand_concurrent_connects(request):
    """1,000 non-blocking connects at once: 1,000 events with the ports the client got, or
    the shortfall counted as lost; count mode counts all of them in the kernel."""
    require_root_bpf("tcpconnect")
    server = Peer("nkconnserver")
    listener = server("listen", family=4, addr="127.0.0.1", backlog=2048)
    client = Peer("nkconnmany")
    tool = trace(request, ["tcpconnect", "--json", "-L", "-p", str(client.pid)])
    counted = trace(request, ["tcpconnect", "--json", "-C", "-p", str(client.pid)])
    made = client("connect", family=4, addr="127.0.0.1", port=listener["port"], n=1000,
                  nonblocking=True)
    assert {m["error"] for m in made} == {"OK"}
    out, err = tool.finish()
    got = records(out)
    lost = got["summary"][-1]["lost_events"]
    ports = [e["lport"] for e in got.get("event", [])]
    assert len(ports) + lost == 1000 and len(set(ports)) == len(ports)
    assert set(ports) <= {m["lport"] for m in made}
    if lost:
        assert f"netkit tcpconnect: {lost} connects lost" not in err   # JSON says it instead
    print(f"1000 concurrent connects: {len(ports)} events, {lost} lost")
    out, _ = counted.finish()
    assert sum(c["connects"] for c in records(out)["count"]) == 1000
    client.close()
    server.close()


@pytest.mark.kernel
def test_exported_connects_by_port_and_result():
    require_root_bpf("tcpconnect")
    from netkit.tools.tcpconnect import export_source
    server = Peer("nkconnserver")
    listener = server("listen", family=4, addr="127.0.0.1")
    closed = server("listen", family=4, addr="127.0.0.1")
    server("close", id=closed["id"])
    client = Peer("nkconnexport")
    with export_source(name="nkconnexport") as sample:
        client("connect", family=4, addr="127.0.0.1", port=listener["port"], n=3)
        client("connect", family=4, addr="127.0.0.1", port=closed["port"], n=2)
        snap = sample(time.time())
    assert {(c.labels["dport"], c.labels["result"]): c.value for c in snap.counters} == \
        {(str(listener["port"]), "OK"): 3, (str(closed["port"]), "ECONNREFUSED"): 2}
    client.close()
    server.close()


@pytest.mark.parametrize("args, message", [
    (["-P", "0"], "-P 0: '0' is not a port (1-65535)"),
    (["-P", "80,http"], "-P 80,http: 'http' is not a port (1-65535)"),
    (["5"], "INTERVAL and COUNT are for count mode (-C)"),
    (["-4", "-6"], "-4 and -6 exclude each other (give neither for both)"),
])
def test_bad_options_are_one_line(args, message):
    line = assert_one_line_error(run_netkit("tcpconnect", *args), "tcpconnect", code=2)
    assert line == f"netkit tcpconnect: {message}"
