"""What the tcp* tools' tests share: scripted peers (tests/tcppeer.py, one process each, with a
known PID and command name) in netkit's namespace or in a test bed's, and the bed itself.

The bed is host -> r1 -> target: link 0 a plain veth pair (packets from the other namespace
arrive in softirq, as from a real NIC), link 1 an emulated link that delays each packet DELAY_S
each way. On r1 an nft rule drops SYNs to PORT_DROP, so a connect there times out; a port
nobody listens on answers with a RST. Each test module builds its own bed (about 0.1 s).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import Traced, require_or_skip, require_root_bpf

PEER = Path(__file__).resolve().parent / "tcppeer.py"
DELAY_S = 0.005                  # each way on link 1
PORT_DROP = 8002                 # SYNs to it are dropped on r1


class Peer:
    """One tcppeer.py process; peer(op, **args) runs a command and returns its answer."""

    def __init__(self, comm: str, ns: str | None = None, pass_fds=(), user=None):
        argv = [sys.executable, str(PEER), comm]
        if ns is not None:
            argv = ["ip", "netns", "exec", ns] + argv
        self.comm = comm
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, pass_fds=pass_fds, user=user)
        self.pid = self.proc.pid            # ip netns exec execs the peer: same PID
        assert self("pid")["pid"] == self.pid
        self.cgroup = cgroup_of(self.pid)

    def __call__(self, op: str, **args):
        self.start(op, **args)
        return self.result()

    def start(self, op: str, **args) -> None:
        """Send a command without waiting (a connect that hangs); result() reads its answer."""
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()

    def result(self):
        line = self.proc.stdout.readline()
        assert line, f"peer {self.comm} died"
        answer = json.loads(line)
        if isinstance(answer, dict) and "oserror" in answer:
            raise OSError(answer["oserror"])
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)


def trace(request, args: list[str]) -> Traced:
    """A netkit tool running while the test makes traffic; stopped at the end of the test
    even when the test fails before it does (else it would trace on, orphaned)."""
    tool = Traced(args)

    def stop():
        if tool.proc.poll() is None:
            tool.finish()
    request.addfinalizer(stop)
    return tool


def cgroup_of(pid: int) -> str:
    """The cgroup v2 path of a process, as /proc says it (the independent truth for `cgroup`)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    raise AssertionError(f"no cgroup v2 entry for {pid}")


def tcp_bed(tool: str):
    """A module fixture's body: `yield from tcp_bed("tcplife")` (see the module doc)."""
    require_root_bpf(tool)
    if not shutil.which("nft"):
        require_or_skip("nft is not installed")
    from tools.testbed import Link, TestBed, TestBedError
    try:
        bed = TestBed([Link(), Link(delay_s=DELAY_S)], low_latency=False).__enter__()
    except TestBedError as exc:
        require_or_skip(f"test bed: {exc}")
    try:
        bed.run(bed.routers[0], ["nft", "-f", "-"], input=(
            "table inet tcptests {\n chain input {\n  type filter hook input priority 0;\n"
            f"  tcp dport {PORT_DROP} tcp flags syn drop\n }}\n}}\n"))
        yield bed
    finally:
        bed.__exit__(None, None, None)
