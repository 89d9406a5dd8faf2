"""netkit sofamily against real connections: a workload process makes a known number of
connections of each family and protocol (TCP and UDP over IPv4 and IPv6, UNIX stream and
datagram), plus a refused connect and a status check; the tool, filtered to it, must count each
(call, family) exactly. Cross-checked against bpftrace reading the callers' sockaddr families."""
from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from conftest import BpftracePeer, Traced
from sockworkload import (CONNECTION_PLAN, CONNECTION_STEPS, FAMILY_OF_PROTOCOL, PROTOCOL_COUNTS,
                          json_records, workload_fixture)

pytestmark = pytest.mark.kernel

FAMILY_COUNTS = Counter()
for (call, proto), n in PROTOCOL_COUNTS.items():
    FAMILY_COUNTS[call, FAMILY_OF_PROTOCOL[proto]] += n
AF = {"AF_INET": 2, "AF_INET6": 10, "AF_UNIX": 1}


workload = workload_fixture("sofamily", "nkfamily")


def test_counts_per_call_and_family_are_exact(workload):
    assert len(set(FAMILY_COUNTS.values())) == len(FAMILY_COUNTS)      # a swap would show
    tool = Traced(["sofamily", "-p", str(workload.pid), "--json", "0.2"])
    workload.run(CONNECTION_STEPS, plan=CONNECTION_PLAN)
    time.sleep(0.3)
    out, err = tool.finish()
    assert tool.proc.returncode == 0, err
    got = json_records(out)
    run = {(r["call"], r["family"]): r["count"] for r in got["count"] if r["scope"] == "run"}
    assert run == dict(FAMILY_COUNTS)
    for r in got["count"]:
        assert (r["pid"], r["comm"], r["af"]) == (workload.pid, "nkfamily", AF[r["family"]])
    intervals = Counter()
    for r in got["count"]:
        if r["scope"] == "interval":
            intervals[r["call"], r["family"]] += r["count"]
    assert intervals == FAMILY_COUNTS                   # the intervals add up to the run
    summary = got["summary"][0]
    assert (summary["connect"], summary["accept"]) == (
        sum(n for (call, _), n in FAMILY_COUNTS.items() if call == "connect"),
        sum(n for (call, _), n in FAMILY_COUNTS.items() if call == "accept"))


def test_name_filter_plain_columns_and_textfile_export(workload, tmp_path):
    tool = Traced(["sofamily", "-n", "nkfamily", "--textfile", str(tmp_path)])
    workload.run(CONNECTION_STEPS, plan=CONNECTION_PLAN)
    time.sleep(0.2)
    out, err = tool.finish()
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["PID"])
    assert lines[header].split() == ["PID", "COMM", "CALL", "FAMILY", "AF", "COUNT"]
    rows = [line.split() for line in lines[header + 1:] if line.strip()]
    assert {(r[2], r[3]): int(r[5]) for r in rows} == dict(FAMILY_COUNTS)
    assert {int(r[0]) for r in rows} == {workload.pid}
    prom = (tmp_path / "netkit_sofamily.prom").read_text()
    for (call, family), n in FAMILY_COUNTS.items():
        assert (f'netkit_sofamily_connections_total{{call="{call}",comm="nkfamily",'
                f'family="{family}"}} {n}.0') in prom


def test_connects_and_accepts_match_bpftrace(workload):
    """Independent check: bpftrace reads the family from the sockaddr each connect() passes
    (the tool reads the socket) and counts accept4() calls that returned a descriptor."""
    peer = BpftracePeer(
        "tracepoint:syscalls:sys_enter_connect /pid == %d/ "
        "{ @connect[((struct sockaddr *)args->uservaddr)->sa_family] = count(); } "
        "tracepoint:syscalls:sys_exit_accept4 /pid == %d && args->ret >= 0/ "
        "{ @accept = count(); }" % (workload.pid, workload.pid))
    tool = Traced(["sofamily", "-p", str(workload.pid), "--json"])
    workload.run(CONNECTION_STEPS, plan=CONNECTION_PLAN)
    time.sleep(0.2)
    out, _ = tool.finish()
    seen = peer.stop()
    counted = {}
    for line in seen.splitlines():
        if line.startswith("@connect["):
            counted[int(line[9:line.index("]")])] = int(line.split()[-1])
        elif line.startswith("@accept:"):
            counted["accept"] = int(line.split()[-1])
    run = json_records(out)["count"]
    ours = Counter()
    for r in run:
        ours[r["af"] if r["call"] == "connect" else "accept"] += r["count"]
    # bpftrace also sees the status check (a connect() on an AF_INET socket): the tool does not.
    counted[AF["AF_INET"]] -= 1
    assert ours == counted
    expected = Counter()
    for (call, family), n in FAMILY_COUNTS.items():
        expected[AF[family] if call == "connect" else "accept"] += n
    assert ours == expected

