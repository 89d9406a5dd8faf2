"""netkit tcpstates against connections the test makes across a veth, from the test bed's host
namespace to a server in r1: each socket's state changes must be exactly RFC 793's sequence as
Linux runs it (the side that closes first: ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE, the
full socket leaves TIME_WAIT to a timewait socket; the other: ESTABLISHED -> CLOSE_WAIT ->
LAST_ACK -> CLOSE), each change named for the process that owns the socket, also the changes
that a packet from the other namespace causes in softirq. bpftrace on the same tracepoint sees
the same changes and, for those, another task: the proof they ran in softirq.
"""
from __future__ import annotations

import time
from collections import defaultdict

import pytest

from conftest import BpftracePeer, records
from tcptraffic import Peer, tcp_bed, trace

pytestmark = [pytest.mark.kernel, pytest.mark.netns]

HOLD_S = 0.1                    # the first connection stays ESTABLISHED this long

CONNECT = [("CLOSE", "SYN_SENT"), ("SYN_SENT", "ESTABLISHED")]
ACCEPTED = [("LISTEN", "SYN_RECV"), ("SYN_RECV", "ESTABLISHED")]
ACTIVE_CLOSE = [("ESTABLISHED", "FIN_WAIT1"), ("FIN_WAIT1", "FIN_WAIT2"), ("FIN_WAIT2", "CLOSE")]
PASSIVE_CLOSE = [("ESTABLISHED", "CLOSE_WAIT"), ("CLOSE_WAIT", "LAST_ACK"), ("LAST_ACK", "CLOSE")]


@pytest.fixture(scope="module")
def bed():
    yield from tcp_bed("tcpstates")


@pytest.fixture(scope="module")
def peers(bed):
    client = Peer("nkstclient", ns=bed.host)
    server = Peer("nkstserver", ns=bed.routers[0])
    yield client, server
    client.close()
    server.close()


def converse(bed, client, server, family: int) -> dict:
    """Two connections from client to server: in the first the client closes first (after
    HOLD_S), in the second the server does. Returns the ports and the outside clock."""
    addr = bed.hop_addrs(family)[0]
    listener = server("listen", family=family, addr=addr)
    port = listener["port"]
    made = {"port": port, "listener": listener["id"], "conns": []}
    for closer in ("client", "server"):
        opened = time.monotonic()       # before: the kernel's ESTABLISHED comes before the reply
        c = client("connect", family=family, addr=addr, port=port)[0]
        s = server("accept", id=listener["id"])[0]
        assert s["rport"] == c["lport"]
        client("send", id=c["id"], n=100)
        server("recv", id=s["id"], n=100)
        if closer == "client":
            time.sleep(HOLD_S)
            client("close", id=c["id"])
            closed = time.monotonic()
            assert server("recv_eof", id=s["id"])["got"] == 0
            server("close", id=s["id"])
        else:
            server("close", id=s["id"])
            closed = time.monotonic()
            assert client("recv_eof", id=c["id"])["got"] == 0
            client("close", id=c["id"])
        made["conns"].append({"closer": closer, "cport": c["lport"],
                              "held_s": closed - opened})
    time.sleep(0.2)                         # the last ACKs cross the veth
    server("close", id=listener["id"])
    return made


def by_socket(events: list[dict], port: int) -> dict[tuple, list[dict]]:
    """The events of the sockets that use `port` (either end), grouped by socket. A socket's
    memory is reused once it is freed: after a CLOSE the same address is another socket."""
    sockets = defaultdict(list)
    lives: dict[str, int] = defaultdict(int)
    for e in events:
        if port not in (e["lport"], e["rport"]):
            continue
        sockets[(e["skaddr"], lives[e["skaddr"]])].append(e)
        if e["new_state"] == "CLOSE":
            lives[e["skaddr"]] += 1
    return sockets


def pairs(events: list[dict]) -> list[tuple[str, str]]:
    return [(e["old_state"], e["new_state"]) for e in events]


@pytest.mark.parametrize("family", [4, 6])
def test_open_and_close_sequences_with_their_owners(bed, peers, family, request):
    client, server = peers
    tool = trace(request, ["tcpstates", "--json", f"-{family}"])
    made = converse(bed, client, server, family)
    out, err = tool.finish()
    got = records(out)
    assert got["summary"][-1]["lost_events"] == 0, err
    sockets = by_socket(got["event"], made["port"])
    listener = [s for s in sockets.values() if s[0]["new_state"] == "LISTEN"]
    assert len(listener) == 1 and pairs(listener[0]) == [("CLOSE", "LISTEN"), ("LISTEN", "CLOSE")]
    for conn in made["conns"]:
        cport = conn["cport"]
        mine = [s for s in sockets.values() if cport in {e["lport"] for e in s} |
                {e["rport"] for e in s}]
        client_side = next(s for s in mine if s[0]["new_state"] == "SYN_SENT")
        server_side = next(s for s in mine if s[0]["new_state"] == "SYN_RECV")
        assert len(mine) == 2
        if conn["closer"] == "client":
            assert pairs(client_side) == CONNECT + ACTIVE_CLOSE
            assert pairs(server_side) == ACCEPTED + PASSIVE_CLOSE
            held = client_side[2]["state_ms"] / 1e3         # ESTABLISHED -> FIN_WAIT1
            assert HOLD_S <= held <= conn["held_s"], (held, conn)
        else:
            assert pairs(client_side) == CONNECT + PASSIVE_CLOSE
            assert pairs(server_side) == ACCEPTED + ACTIVE_CLOSE
        for side, peer in ((client_side, client), (server_side, server)):
            for e in side:
                assert (e["pid"], e["comm"]) == (peer.pid, peer.comm), (e, peer.comm)
                assert e["cgroup"] == peer.cgroup
                assert e["laddr"] == (bed.host_addr(family) if peer is client
                                      else bed.hop_addrs(family)[0])
        # Ports: the client's is 0 only before connect() picks it.
        assert [e["lport"] for e in client_side] == [0] + [cport] * 4
        assert {e["lport"] for e in server_side} == {made["port"]}
        assert client_side[0]["state_ms"] == 0          # its earlier life was not a change


def test_bpftrace_sees_the_same_changes_from_other_tasks(bed, peers, request):
    """bpftrace's pid is the task the tracepoint fired in; for the changes a packet from the
    other namespace caused (in softirq) that is not the owner, which netkit names."""
    client, server = peers
    addr = bed.hop_addrs(4)[0]
    listener = server("listen", family=4, addr=addr)
    port = listener["port"]
    peer = BpftracePeer(
        "tracepoint:sock:inet_sock_set_state /args->protocol == 6 && "
        f"(args->sport == {port} || args->dport == {port})/ "
        '{ printf("change %lx %d %d %d\\n", args->skaddr, args->oldstate, args->newstate, pid); }')
    request.addfinalizer(lambda: peer.proc.poll() is None and peer.stop())
    tool = trace(request, ["tcpstates", "--json", "-4"])
    c = client("connect", family=4, addr=addr, port=port)[0]
    s = server("accept", id=listener["id"])[0]
    server("close", id=s["id"])                     # its FIN ends the client's ESTABLISHED
    assert client("recv_eof", id=c["id"])["got"] == 0
    client("close", id=c["id"])
    time.sleep(0.2)
    server("close", id=listener["id"])
    time.sleep(0.1)
    out, _ = tool.finish()
    traced = peer.stop()
    from netkit.render.tcp import state_name
    theirs = []
    for line in traced.splitlines():
        if line.startswith("change "):
            _, skaddr, old, new, pid = line.split()
            theirs.append((skaddr, state_name(int(old)), state_name(int(new)), int(pid)))
    ours = [(e["skaddr"], e["old_state"], e["new_state"], e["pid"])
            for e in records(out)["event"] if port in (e["lport"], e["rport"])]
    assert sorted(t[:3] for t in theirs) == sorted(o[:3] for o in ours)
    assert len(ours) == 11      # the listener's close (it listened before), 5 per connection end
    # The server listened before tracing began: until its accept() its new connection's owner
    # is not known (the listener's is learnt from listen() or accept()).
    unknown = sorted(o[1:3] for o in ours if o[3] is None)
    assert unknown == [("LISTEN", "SYN_RECV"), ("SYN_RECV", "ESTABLISHED")]
    assert {o[3] for o in ours} == {client.pid, server.pid, None}
    elsewhere = [(t, o) for t, o in zip(sorted(theirs), sorted(ours)) if t[3] != o[3]]
    # The client's ESTABLISHED -> CLOSE_WAIT came with the server's FIN, in softirq.
    assert any(o[1:3] == ("ESTABLISHED", "CLOSE_WAIT") and o[3] == client.pid and
               t[3] != client.pid for t, o in elsewhere), elsewhere


def test_port_and_family_filters(bed, peers, request):
    """-D PORT -4: only the client's IPv4 socket (remote port PORT); the server's sockets
    (local port PORT) and the IPv6 connection are not shown."""
    client, server = peers
    addr4, addr6 = bed.hop_addrs(4)[0], bed.hop_addrs(6)[0]
    l4 = server("listen", family=4, addr=addr4)
    l6 = server("listen", family=6, addr=addr6, port=l4["port"])
    tool = trace(request, ["tcpstates", "--json", "-4", "-D", str(l4["port"])])
    for family, addr, listener in ((4, addr4, l4), (6, addr6, l6)):
        c = client("connect", family=family, addr=addr, port=l4["port"])[0]
        s = server("accept", id=listener["id"])[0]
        client("close", id=c["id"])
        server("close", id=s["id"])
    time.sleep(0.2)
    out, _ = tool.finish()
    events = [e for e in records(out)["event"] if l4["port"] in (e["lport"], e["rport"])]
    assert pairs(events) == CONNECT + ACTIVE_CLOSE
    assert {e["pid"] for e in events} == {client.pid}
    for listener in (l4, l6):
        server("close", id=listener["id"])
