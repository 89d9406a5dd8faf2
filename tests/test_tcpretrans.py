"""netkit tcpretrans against retransmissions this test forces with nft across a quiet veth pair
(tests/packetbed): the client sockets live in the host namespace, the servers in the target's,
all opened by this process, which is thus every socket's owner.

  SYN      connects to SYN_PORT, whose SYNs the target drops: the client sends its SYN again
           (state SYN_SENT) after the initial RTO of one second;
  data     an established connection on DATA_PORT loses every data segment for a while: the
           client retransmits (tail loss probe, then RTO) until the rule goes;
  SYN-ACK  the host drops the client's final ACK to SYNACK_PORT: the listener sends its
           SYN-ACK again (tcp_retransmit_synack) after one second;
  refused  a connection to REFUSED_PORT loses its data at the target, then the host's own
           OUTPUT rule refuses the retransmissions: TCP counted each (TcpRetransSegs and
           TCPRetransFail) though none reached the wire.

The kernel's TcpRetransSegs of each namespace is the truth: the host's counts the SYN and
data retransmissions, the target's the SYN-ACKs. Retransmissions come from timers and softirq,
so a PID equal to this process's shows the owner map at work.
"""
from __future__ import annotations

import os
import socket
import struct
import time

import pytest

from conftest import TRACEFS, assert_one_line_error, run_netkit
from packetbed import TARGET_ADDR, packet_bed

pytestmark = [pytest.mark.netns, pytest.mark.kernel]

SYN_PORT, DATA_PORT, SYNACK_PORT, REFUSED_PORT = 7101, 7100, 7102, 7103
MESSAGES, MESSAGE = 4, b"r" * 300

RULES = f"""table inet nkretrans {{
 chain input {{
  type filter hook input priority 0;
  tcp dport {SYN_PORT} tcp flags syn counter drop
  jump lossy
 }}
 chain lossy {{
 }}
 chain output {{
  type filter hook output priority 0;
  jump lossy_out
 }}
 chain lossy_out {{
 }}
}}
"""


def nft(bed, ns: str, *args: str) -> None:
    bed.bed.run(ns, ["nft", *args])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    textfiles = tmp_path_factory.mktemp("tcpretrans")
    for bed in packet_bed("tcpretrans"):
        bed.bed.run(bed.target, ["nft", "-f", "-"], input=RULES)
        bed.bed.run(bed.host, ["nft", "-f", "-"], input=RULES)
        with bed.bed.inside(bed.host):
            data = socket.socket()
            syn = socket.socket()
            half = socket.socket()
            refused = socket.socket()
            # closed with a RST, at once: no retransmission after the counters are read
            refused.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        me = os.getpid()
        tracers = {"events": bed.trace("tcpretrans", "-s", "-p", str(me)),
                   "counts": bed.trace("tcpretrans", "-C", "-l", "-p", str(me), "--textfile",
                                     str(textfiles)),
                   "other": bed.trace("tcpretrans", "-p", "1")}
        # listen() once the tracers run: a listener's owner is learnt there
        with bed.bed.inside(bed.target):
            data_server = socket.create_server((TARGET_ADDR, DATA_PORT))
            synack_server = socket.create_server((TARGET_ADDR, SYNACK_PORT))
            refused_server = socket.create_server((TARGET_ADDR, REFUSED_PORT))
        host0, target0 = bed.counters(bed.host), bed.counters(bed.target)
        data.connect((TARGET_ADDR, DATA_PORT))
        data.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer, _ = data_server.accept()
        refused.connect((TARGET_ADDR, REFUSED_PORT))
        refused.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        refused_peer, _ = refused_server.accept()
        started = time.monotonic()
        syn.setblocking(False)
        assert syn.connect_ex((TARGET_ADDR, SYN_PORT)) == 115      # EINPROGRESS
        nft(bed, bed.host, "add", "rule", "inet", "nkretrans", "lossy_out", "tcp", "dport",
            str(SYNACK_PORT), "tcp", "flags", "&", "(syn|ack)", "==", "ack", "counter", "drop")
        half.connect((TARGET_ADDR, SYNACK_PORT))        # the client thinks it is connected
        # data segments are lost for 0.7 s: a loss probe, then RTO retransmissions
        nft(bed, bed.target, "add", "rule", "inet", "nkretrans", "lossy", "tcp", "dport",
            "{%d, %d}" % (DATA_PORT, REFUSED_PORT), "ip", "length", "gt", "100", "counter",
            "drop")
        for _ in range(MESSAGES):
            data.send(MESSAGE)
        refused.send(MESSAGE)
        # its first retransmission comes after an RTO of 200 ms at least
        nft(bed, bed.host, "add", "rule", "inet", "nkretrans", "lossy_out", "tcp", "dport",
            str(REFUSED_PORT), "ip", "length", "gt", "100", "counter", "drop")
        time.sleep(0.7)
        nft(bed, bed.target, "flush", "chain", "inet", "nkretrans", "lossy")
        peer.settimeout(10)
        got = b""
        while len(got) < MESSAGES * len(MESSAGE):
            got += peer.recv(65536)
        time.sleep(max(0.0, 1.4 - (time.monotonic() - started)))     # past the 1 s RTO
        nft(bed, bed.host, "flush", "chain", "inet", "nkretrans", "lossy_out")
        for s in (syn, half, refused, data, peer, refused_peer, data_server, synack_server,
                  refused_server):
            s.close()
        time.sleep(0.1)
        host1, target1 = bed.counters(bed.host), bed.counters(bed.target)
        records = {name: tracer.stop() for name, tracer in tracers.items()}
        yield {"records": records, "pid": me,
               "prom": (textfiles / "netkit_tcpretrans.prom").read_text(),
               "host": {k: host1[k] - host0.get(k, 0) for k in host1},
               "target": {k: target1[k] - target0.get(k, 0) for k in target1}}


def events(run) -> list[dict]:
    return [r for r in run["records"]["events"] if r["type"] == "retransmit"]


def traceable(counters: dict) -> int:
    """The retransmitted segments the tracepoint can show in one namespace. Kernels whose
    tcp_retransmit_skb has no err argument (6.1; the vm subset) fire it only for a
    retransmission that went out, while TcpRetransSegs also counts those IP or the device
    refused (TCPRetransFail)."""
    refused_untraced = "field:int err;" not in (                      # tracefs, not netkit
        TRACEFS / "events/tcp/tcp_retransmit_skb/format").read_text()
    return counters["TcpRetransSegs"] - (counters["TcpExtTCPRetransFail"] if refused_untraced
                                         else 0)


@pytest.mark.vm
def test_each_retransmission_is_shown_and_their_segments_are_the_kernels_count(run):
    shown = events(run)
    host = [e for e in shown if e["laddr"] == "198.18.0.1"]
    target = [e for e in shown if e["laddr"] == TARGET_ADDR]
    assert len(host) + len(target) == len(shown)
    assert sum(e["segs"] for e in host) == traceable(run["host"]) > 0
    assert sum(e["segs"] for e in target) == traceable(run["target"]) > 0
    summary = run["records"]["events"].summary
    assert summary["retransmits"] == len(shown) and summary["lost_events"] == 0
    assert summary["segs"] == traceable(run["host"]) + traceable(run["target"])


def test_retransmissions_refused_below_tcp_are_shown_and_counted_as_failed(run):
    """The kernel counted them in TcpRetransSegs (checked with the rest above) and in
    TCPRetransFail: the summary's failed, in both modes. Only the refused flow's, every one."""
    fails = run["host"]["TcpExtTCPRetransFail"] + run["target"]["TcpExtTCPRetransFail"]
    refused = [e for e in events(run) if e["rport"] == REFUSED_PORT]
    assert sum(e["segs"] for e in refused) >= fails >= 2, (refused, fails)
    assert run["records"]["events"].summary["failed"] == fails
    assert run["records"]["counts"].summary["failed"] == fails


def test_kinds_states_and_flows(run):
    by_port = {}
    for e in events(run):
        port = e["rport"] if e["laddr"] == "198.18.0.1" else e["lport"]
        by_port.setdefault(port, []).append(e)
    assert set(by_port) == {SYN_PORT, DATA_PORT, SYNACK_PORT, REFUSED_PORT}, by_port
    syns = by_port[SYN_PORT]
    assert [(e["state"], e["kind"]) for e in syns] == [("SYN_SENT", "retrans")], syns
    for port in (DATA_PORT, REFUSED_PORT):
        assert {(e["state"], e["kind"]) for e in by_port[port]} == {("ESTABLISHED", "retrans")}
    synacks = by_port[SYNACK_PORT]
    assert {(e["state"], e["kind"], e["raddr"], e["family"]) for e in synacks} == \
        {("SYN_RECV", "synack", "198.18.0.1", "IPv4")}, synacks
    assert len(synacks) == run["target"]["TcpExtTCPSynRetrans"]
    # a data retransmission starts at a byte the client sent: within its stream
    seqs = {e["seq"] for e in by_port[DATA_PORT]}
    assert len(seqs) >= 1 and all(isinstance(s, int) for s in seqs)


def test_the_pid_is_the_sockets_owner_not_the_interrupted_task(run):
    """Timers and softirq ran these; the owner map names this process for every one."""
    owners = {(e["pid"], e["comm"]) for e in events(run)}
    assert {pid for pid, _ in owners} == {run["pid"]}, owners
    assert not [r for r in run["records"]["other"] if r["type"] == "retransmit"]
    assert run["records"]["other"].summary["retransmits"] == 0


def test_counts_per_flow_agree_with_the_events(run):
    flows = [r for r in run["records"]["counts"] if r["type"] == "flow" and r["scope"] == "run"]
    by_kind: dict[str, int] = {}
    for f in flows:
        by_kind[f["kind"]] = by_kind.get(f["kind"], 0) + f["segs"]
        assert f["pid"] == run["pid"]
    assert by_kind == {"retrans": run["host"]["TcpRetransSegs"],
                       "synack": run["target"]["TcpRetransSegs"]}
    summary = run["records"]["counts"].summary
    assert summary["segs"] == sum(by_kind.values())
    # -l: the host namespace's (netkit's own) tail loss probe counters
    assert summary["loss_probes"] == run["host"]["TcpExtTCPLossProbes"]
    assert summary["loss_probe_recoveries"] == run["host"]["TcpExtTCPLossProbeRecovery"]


def test_exported_counters(run):
    for kind, ns in (("retrans", "host"), ("synack", "target")):
        line = f'netkit_tcpretrans_segments_total{{kind="{kind}"}} {run[ns]["TcpRetransSegs"]}'
        assert line in run["prom"], run["prom"]


def test_text_line(run):
    out = run_netkit("tcpretrans", "-d", "0.3", "-s")
    assert out.returncode == 0, out.stderr
    assert "retransmissions" in out.stdout


@pytest.mark.parametrize("args, text", [
    (["1"], "INTERVAL is for -C"),
    (["-s", "-C"], "exclude each other"),
    (["-4", "-6"], "-4"),
])
def test_bad_usage_is_one_line(args, text):
    assert text in assert_one_line_error(run_netkit("tcpretrans", *args), "tcpretrans", 2)
