"""A process of known PID and command name that makes socket traffic on request, for the tests
of the socket tools (sofamily, soprotocol, soconnect, soaccept, udpconnect, socketio, socksize,
sormem, so1stbyte).

    with SocketWorkload("nkfamily") as w:          # comm nkfamily, waiting for requests
        tool = Traced(["sofamily", "-p", str(w.pid), "--json"])
        made = w.run(STEPS, n=3)                  # runs STEPS in the child, returns its `result`

Each request is a piece of Python that the child executes in one namespace kept across
requests (sockets made by one request are there for the next), with `socket`, `struct`,
`time`, `errno`, `select` and the keyword arguments as names; what it leaves in `result` (JSON)
comes back. The child does nothing else, so what a tool sees of it is what the steps did.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import require_root_bpf

CHILD = """
import ctypes, errno, json, select, socket, struct, sys, time
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
state = {"socket": socket, "struct": struct, "time": time, "errno": errno, "select": select}
for line in sys.stdin:
    request = json.loads(line)
    state.update(request["params"], result=None)
    try:
        exec(request["code"], state)
        reply = {"result": state["result"]}
    except Exception as exc:
        reply = {"error": repr(exc)}
    print(json.dumps(reply), flush=True)
"""


class SocketWorkload:
    def __init__(self, comm: str):
        self.comm = comm
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, comm], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid

    def run(self, code: str, **params):
        self.proc.stdin.write(json.dumps({"code": code, "params": params}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the workload died"
        reply = json.loads(line)
        assert "error" not in reply, reply["error"]
        return reply["result"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def workload_fixture(tool: str, comm: str):
    """A test module's `workload` fixture: a SocketWorkload named `comm`, once `tool`'s BPF
    object is there to trace it (the test fails in CI, is skipped elsewhere, when it is not)."""
    @pytest.fixture
    def workload():
        require_root_bpf(tool)
        with SocketWorkload(comm) as w:
            yield w
    return workload


def json_records(stdout: str) -> dict[str, list[dict]]:
    """NDJSON output by record type."""
    by_type: dict[str, list[dict]] = {}
    for line in stdout.splitlines():
        record = json.loads(line)
        by_type.setdefault(record["type"], []).append(record)
    return by_type


# -- new connections of every family and protocol (sofamily, soprotocol) ------------------------
# Distinct numbers per kind, so that two counters swapped cannot pass.
CONNECTION_PLAN = {"tcp4": 3, "tcp6": 5, "udp4": 6, "udp6": 7, "unix_stream": 8, "unix_dgram": 3}

CONNECTION_STEPS = """
keep = []
def tcp(family, addr, n):
    listener = socket.socket(family); listener.bind((addr, 0)); listener.listen(64)
    for _ in range(n):
        c = socket.socket(family); c.connect(listener.getsockname())
        keep.extend([c, listener.accept()[0]])
    keep.append(listener)
    return listener
l4 = tcp(socket.AF_INET, "127.0.0.1", plan["tcp4"])
tcp(socket.AF_INET6, "::1", plan["tcp6"])
# Not a new connection: connect() again on a connected socket asks for its state.
assert keep[0].connect_ex(l4.getsockname()) == errno.EISCONN
# A refused connect is a connect() all the same.
probe = socket.socket(); probe.bind(("127.0.0.1", 0)); closed_port = probe.getsockname()[1]
probe.close()
refused = socket.socket()
assert refused.connect_ex(("127.0.0.1", closed_port)) == errno.ECONNREFUSED
keep.append(refused)
for family, addr, n in ((socket.AF_INET, "127.0.0.1", plan["udp4"]),
                        (socket.AF_INET6, "::1", plan["udp6"])):
    for _ in range(n):
        u = socket.socket(family, socket.SOCK_DGRAM); u.connect((addr, 9)); keep.append(u)
stream_name, dgram_name = b"\\0nk-stream-%d" % time.time_ns(), b"\\0nk-dgram-%d" % time.time_ns()
server = socket.socket(socket.AF_UNIX); server.bind(stream_name); server.listen(64)
for _ in range(plan["unix_stream"]):
    c = socket.socket(socket.AF_UNIX); c.connect(stream_name); keep.extend([c, server.accept()[0]])
sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); sink.bind(dgram_name)
for _ in range(plan["unix_dgram"]):
    d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); d.connect(dgram_name); keep.append(d)
for s in keep + [server, sink]:
    s.close()
"""

# What the steps do, by (call, the kernel's protocol name): counted by hand from the code above.
PROTOCOL_COUNTS = {
    ("connect", "TCP"): CONNECTION_PLAN["tcp4"] + 1,        # + the refused one
    ("connect", "TCPv6"): CONNECTION_PLAN["tcp6"],
    ("connect", "UDP"): CONNECTION_PLAN["udp4"],
    ("connect", "UDPv6"): CONNECTION_PLAN["udp6"],
    ("connect", "UNIX-STREAM"): CONNECTION_PLAN["unix_stream"],
    ("connect", "UNIX"): CONNECTION_PLAN["unix_dgram"],
    ("accept", "TCP"): CONNECTION_PLAN["tcp4"],
    ("accept", "TCPv6"): CONNECTION_PLAN["tcp6"],
    ("accept", "UNIX-STREAM"): CONNECTION_PLAN["unix_stream"],
}
FAMILY_OF_PROTOCOL = {"TCP": "AF_INET", "UDP": "AF_INET", "TCPv6": "AF_INET6",
                      "UDPv6": "AF_INET6", "UNIX-STREAM": "AF_UNIX", "UNIX": "AF_UNIX"}
