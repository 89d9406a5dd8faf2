"""netkit tcpaccept against connections the test makes: the listening socket is created by the
test process and handed to another process that accepts (so the creator, the accepter and the
connecting client are three different PIDs, and only the accepter is right: bcc issue 2304's
wrong PID came from the handshake's softirq). Across a veth from another namespace and on
loopback, IPv4, IPv6 and IPv4 on a dual-stack socket; the accept queue (-B) counted down.
"""
from __future__ import annotations

import os
import socket
import time

import pytest

from conftest import records, require_root_bpf
from tcptraffic import Peer, tcp_bed, trace

N = 5
BACKLOG = 7


@pytest.fixture(scope="module")
def bed():
    yield from tcp_bed("tcpaccept")


@pytest.mark.kernel
@pytest.mark.netns
def test_the_accepting_process_across_a_veth_with_its_queue(bed, request):
    addr = bed.hop_addrs(4)[0]
    with bed.inside(bed.routers[0]):
        listener = socket.socket()
        listener.bind((addr, 0))
        listener.listen(BACKLOG)
    port = listener.getsockname()[1]
    acceptor = Peer("nkaccepter", pass_fds=[listener.fileno()])
    lid = acceptor("adopt", fd=listener.fileno())["id"]
    listener.close()                        # the accepter holds the only reference now
    client = Peer("nkacceptclient", ns=bed.host)
    tool = trace(request, ["tcpaccept", "--json", "-P", str(port)])
    text = trace(request, ["tcpaccept", "-t", "-B", "-P", str(port)])
    made = client("connect", family=4, addr=addr, port=port, n=N)
    time.sleep(0.05)                        # the last ACKs reach the listener's queue
    accepted = acceptor("accept", id=lid, n=N)
    out, err = tool.finish()
    events = records(out)["event"]
    assert [e["rport"] for e in events] == [m["lport"] for m in made] == \
        [a["rport"] for a in accepted]
    for e in events:
        assert (e["pid"], e["comm"], e["cgroup"]) == (acceptor.pid, "nkaccepter", acceptor.cgroup)
        assert (e["family"], e["raddr"], e["laddr"], e["lport"]) == \
            ("IPv4", bed.host_addr(4), addr, port)
        assert e["backlog_max"] == BACKLOG
    assert [e["backlog"] for e in events] == list(range(N - 1, -1, -1))
    assert os.getpid() not in {e["pid"] for e in events}
    assert records(out)["summary"][-1]["events"] == N
    out, _ = text.finish()
    lines = out.splitlines()
    assert lines[0].split() == ["TIME(s)", "PID", "COMM", "IP", "RADDR", "RPORT", "LADDR",
                                "LPORT", "BL"]
    assert [line.split()[1:] for line in lines[1:]] == [
        [str(acceptor.pid), "nkaccepter", "4", bed.host_addr(4), str(m["lport"]), addr,
         str(port), f"{N - 1 - i}/{BACKLOG}"] for i, m in enumerate(made)]
    acceptor.close()
    client.close()


@pytest.mark.kernel
def test_families_dual_stack_and_port_filter(request):
    """A dual-stack IPv6 listener takes an IPv4 client (shown as IPv4) and an IPv6 one; -P
    keeps only its port, -6 only the IPv6 accept."""
    require_root_bpf("tcpaccept")
    server = Peer("nkaccepter")
    client = Peer("nkacceptclient")
    dual = server("listen", family=6, addr="::")
    other = server("listen", family=4, addr="127.0.0.1")
    by_port = trace(request, ["tcpaccept", "--json", "-P", str(dual["port"])])
    v6_only = trace(request, ["tcpaccept", "--json", "-6"])
    c4 = client("connect", family=4, addr="127.0.0.1", port=dual["port"])[0]
    c6 = client("connect", family=6, addr="::1", port=dual["port"])[0]
    co = client("connect", family=4, addr="127.0.0.1", port=other["port"])[0]
    server("accept", id=dual["id"], n=2)
    server("accept", id=other["id"])
    ours = {c4["lport"], c6["lport"], co["lport"]}
    out, _ = by_port.finish()
    seen = [(e["family"], e["raddr"], e["rport"], e["laddr"], e["lport"])
            for e in records(out)["event"]]
    assert seen == [("IPv4", "127.0.0.1", c4["lport"], "127.0.0.1", dual["port"]),
                    ("IPv6", "::1", c6["lport"], "::1", dual["port"])]
    out, _ = v6_only.finish()
    seen = [e["rport"] for e in records(out)["event"] if e["rport"] in ours]
    assert seen == [c6["lport"]]
    server.close()
    client.close()
