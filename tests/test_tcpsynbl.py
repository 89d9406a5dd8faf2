"""netkit tcpsynbl against listeners this test fills, on loopback inside a test namespace (whose
ListenOverflows nobody else moves): a listener with backlog 3 gets 10 connects and accepts
none, one with backlog 8 gets 2.

On loopback each handshake completes inside connect(), one after the other, so the queue of
the first fills in order: 4 handshakes complete (the queue is full only once it holds more than
its limit) finding 0, 1, 2 and 3 connections waiting, and the other 6 SYNs are dropped, each
counted in ListenOverflows and ListenDrops. The clients close before their SYN is sent again.
"""
from __future__ import annotations

import os
import socket

import pytest

from packetbed import packet_bed

pytestmark = [pytest.mark.netns, pytest.mark.kernel]

FULL_PORT, ROOMY_PORT = 7201, 7202
FULL_BACKLOG, FULL_CONNECTS, ROOMY_BACKLOG, ROOMY_CONNECTS = 3, 10, 8, 2
COMPLETED = FULL_BACKLOG + 1
OVERFLOWS = FULL_CONNECTS - COMPLETED


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    textfiles = tmp_path_factory.mktemp("tcpsynbl")
    for bed in packet_bed("tcpsynbl"):
        tracer = bed.trace("tcpsynbl", "-L", f"{FULL_PORT},{ROOMY_PORT}", "--textfile",
                           str(textfiles))
        mine = bed.trace("tcpsynbl", "-p", str(os.getpid()))
        other = bed.trace("tcpsynbl", "-p", "1")
        before = bed.counters(bed.host)
        clients = []
        with bed.bed.inside(bed.host):
            full = socket.create_server(("127.0.0.1", FULL_PORT), backlog=FULL_BACKLOG)
            roomy = socket.create_server(("127.0.0.1", ROOMY_PORT), backlog=ROOMY_BACKLOG)
            for port, n in ((FULL_PORT, FULL_CONNECTS), (ROOMY_PORT, ROOMY_CONNECTS)):
                for _ in range(n):
                    client = socket.socket()
                    client.setblocking(False)
                    client.connect_ex(("127.0.0.1", port))
                    clients.append(client)
        for s in clients + [full, roomy]:
            s.close()
        after = bed.counters(bed.host)
        yield {"records": tracer.stop(), "mine": mine.stop(), "other": other.stop(),
               "prom": (textfiles / "netkit_tcpsynbl.prom").read_text(),
               "moved": {k: after[k] - before.get(k, 0) for k in after}}


def test_backlog_histograms_per_listener(run):
    records = run["records"]
    full = records.one(lport=FULL_PORT)
    assert (full["max_backlog"], full["count"], full["backlog_sum"]) == \
        (FULL_BACKLOG, COMPLETED, sum(range(COMPLETED)))
    # log2 buckets: 0 and 1 in [0, 2), 2 and 3 in [2, 4)
    assert [(b["low"], b["count"]) for b in full["backlog"] if b["count"]] == [(0, 2), (2, 2)]
    roomy = records.one(lport=ROOMY_PORT)
    assert (roomy["max_backlog"], roomy["count"], roomy["backlog_sum"]) == \
        (ROOMY_BACKLOG, ROOMY_CONNECTS, sum(range(ROOMY_CONNECTS)))


def test_overflow_counters_are_the_kernels(run):
    summary = run["records"].summary
    assert run["moved"]["TcpExtListenOverflows"] == OVERFLOWS
    assert summary["listen_overflows"] == OVERFLOWS
    assert summary["listen_drops"] == run["moved"]["TcpExtListenDrops"] == OVERFLOWS
    assert summary["handshakes"] == COMPLETED + ROOMY_CONNECTS
    counters = [r for r in run["records"] if r["type"] == "counters" and r["scope"] == "run"]
    assert [(c["listen_overflows"], c["listen_drops"]) for c in counters] == \
        [(OVERFLOWS, OVERFLOWS)]


def test_exported_histogram_and_counters(run):
    prom = run["prom"]
    assert f"netkit_tcpsynbl_listen_overflows_total {OVERFLOWS}" in prom, prom
    assert f"netkit_tcpsynbl_listen_drops_total {OVERFLOWS}" in prom
    assert (f'netkit_tcpsynbl_backlog_connections_count{{lport="{FULL_PORT}",'
            f'max_backlog="{FULL_BACKLOG}"}} {COMPLETED}') in prom


def test_listeners_by_owner(run):
    """-p: the listeners this process opened (after the tracer started); -p 1: none."""
    assert sorted((h["lport"], h["count"]) for h in run["mine"].run()) == \
        [(FULL_PORT, COMPLETED), (ROOMY_PORT, ROOMY_CONNECTS)]
    assert run["other"].run() == [] and run["other"].summary["handshakes"] == 0
    # the counters are the namespace's whatever the filter
    assert run["other"].summary["listen_overflows"] == OVERFLOWS
