"""netkit soprotocol against real connections: the workload of tests/sockworkload.py makes a
known number of connections of each protocol (TCP, TCPv6, UDP, UDPv6, UNIX-STREAM, UNIX); the
tool, filtered to it, must count each (call, protocol) exactly, connect and accept apart."""
from __future__ import annotations

import time

import pytest

from conftest import Traced
from sockworkload import (CONNECTION_PLAN, CONNECTION_STEPS, PROTOCOL_COUNTS, json_records,
                          workload_fixture)

pytestmark = pytest.mark.kernel

NUMBERS = {"TCP": (6, "IPPROTO_TCP"), "TCPv6": (6, "IPPROTO_TCP"), "UDP": (17, "IPPROTO_UDP"),
           "UDPv6": (17, "IPPROTO_UDP"), "UNIX-STREAM": (0, None), "UNIX": (0, None)}


workload = workload_fixture("soprotocol", "nkproto")


def test_counts_per_call_and_protocol_are_exact(workload):
    tool = Traced(["soprotocol", "-p", str(workload.pid), "--json"])
    workload.run(CONNECTION_STEPS, plan=CONNECTION_PLAN)
    time.sleep(0.2)
    out, err = tool.finish()
    assert tool.proc.returncode == 0, err
    got = json_records(out)
    run = [r for r in got["count"] if r["scope"] == "run"]
    assert {(r["call"], r["name"]): r["count"] for r in run} == PROTOCOL_COUNTS
    for r in run:
        assert (r["protocol"], r["ipproto"]) == NUMBERS[r["name"]], r
        assert (r["pid"], r["comm"]) == (workload.pid, "nkproto")
    assert got["summary"][0]["accept"] == sum(n for (call, _), n in PROTOCOL_COUNTS.items()
                                              if call == "accept")


def test_plain_output_keeps_connect_and_accept_apart(workload):
    tool = Traced(["soprotocol", "-n", "nkproto", "--no-color"])
    workload.run(CONNECTION_STEPS, plan=CONNECTION_PLAN)
    time.sleep(0.2)
    out, _ = tool.finish()
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["PID"])
    assert lines[header].split() == ["PID", "COMM", "CALL", "PROTO", "IPPROTO", "NAME", "COUNT"]
    rows = [line.split() for line in lines[header + 1:] if line.strip()]
    assert {(r[2], r[5]): int(r[6]) for r in rows} == PROTOCOL_COUNTS
    assert {r[4] for r in rows if r[5].startswith("UNIX")} == {"-"}
    counts = [int(r[6]) for r in rows]
    assert counts == sorted(counts, reverse=True)               # busiest first
