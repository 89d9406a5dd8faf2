"""What a BPF program costs inside the kernel, netkit's against a bpftrace script on the same
tracepoint, on one workload, in one run. A helper for the benchmarks (bench/run.py skips files
whose name starts with "_"):

    with bpf_stats():
        result = compare(["tcplife", "--json"], BPFTRACE_SCRIPT, ConnectStorm(20000))
    print(result.report("inet_sock_set_state", "tcplife_state"))

kernel.bpf_stats_enabled=1 makes the kernel add up run_time_ns and run_cnt per program
(FIELD-NOTES: the stats add their own clock reads to every run, alike on both sides; compare
ratios from one run, never absolute ns across runs). Programs are told apart by the ids that
appeared when each side started (bpftool shows no owner), and both sides run on every event of
the workload, so their counts match and their ratio is per event.
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NETKIT = ROOT / ".venv" / "bin" / "netkit"
READY = "netkit-bench-peer-ready"


def loaded_programs() -> dict[int, dict]:
    """Every loaded BPF program by id: name, run_cnt, run_time_ns."""
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                         check=True).stdout
    return {p["id"]: p for p in json.loads(out or "[]")}


@contextlib.contextmanager
def bpf_stats():
    """kernel.bpf_stats_enabled=1 for the block, then back to what it was."""
    knob = Path("/proc/sys/kernel/bpf_stats_enabled")
    before = knob.read_text().strip()
    knob.write_text("1")
    try:
        yield
    finally:
        knob.write_text(before)


def _wait_for(proc: subprocess.Popen, stream, marker: str, timeout: float = 30.0) -> None:
    fd, seen = stream.fileno(), b""
    deadline = time.monotonic() + timeout
    while marker.encode() not in seen:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"{proc.args[0]} did not start: {seen.decode(errors='replace')}")
        if select.select([fd], [], [], 0.1)[0]:
            seen += os.read(fd, 65536)


class Side:
    """One tracer (netkit or bpftrace) running, with the programs it loaded."""

    def __init__(self, name: str, argv: list[str], marker: str, on_stderr: bool):
        before = set(loaded_programs())
        self.name = name
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE if not on_stderr else
                                     subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_for(self.proc, self.proc.stderr if on_stderr else self.proc.stdout, marker)
        if not on_stderr:       # keep bpftrace's output flowing, unread
            self._drain = subprocess.Popen(["cat"], stdin=self.proc.stdout,
                                           stdout=subprocess.DEVNULL)
        self.ids = set(loaded_programs()) - before

    def stop(self) -> None:
        # bpftrace 0.17 may miss a lone SIGINT (tests/conftest.py's BpftracePeer): repeat.
        for _ in range(20):
            if self.proc.poll() is not None:
                break
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class ProgramCost:
    name: str
    runs: int
    ns: int

    @property
    def per_run(self) -> float:
        return self.ns / self.runs if self.runs else float("nan")


@dataclass
class Comparison:
    netkit: list[ProgramCost] = field(default_factory=list)
    bpftrace: list[ProgramCost] = field(default_factory=list)
    workload: str = ""

    def busiest_bpftrace(self) -> ProgramCost:
        """bpftrace's program on the workload's tracepoint (its BEGIN runs once)."""
        return max(self.bpftrace, key=lambda p: p.runs)

    def netkit_program(self, name: str) -> ProgramCost:
        return next(p for p in self.netkit if p.name == name[:15])

    def report(self, tracepoint: str, program: str) -> tuple[str, float]:
        """A table of every program's cost and the per-event ratio on `tracepoint`
        (netkit's `program` against bpftrace's)."""
        ours, theirs = self.netkit_program(program), self.busiest_bpftrace()
        lines = [f"{self.workload}", f"{'side':9} {'program':18} {'runs':>9} {'ns/run':>8}"]
        for side, programs in (("netkit", self.netkit), ("bpftrace", self.bpftrace)):
            for p in sorted(programs, key=lambda p: -p.runs):
                lines.append(f"{side:9} {p.name:18} {p.runs:9d} {p.per_run:8.1f}")
        ratio = ours.per_run / theirs.per_run
        lines.append(f"{tracepoint}: netkit {ours.per_run:.1f} ns per event, bpftrace "
                     f"{theirs.per_run:.1f} ns ({ours.runs} and {theirs.runs} runs): "
                     f"ratio {ratio:.2f}x")
        return "\n".join(lines), ratio


def compare(netkit_args: list[str], bpftrace_script: str, workload) -> Comparison:
    """Start netkit, then bpftrace, run `workload()` (which returns a description), stop both;
    the run counts and run times of each side's programs over the workload alone."""
    ours = Side("netkit", [str(NETKIT), *netkit_args], "Tracing", on_stderr=True)
    theirs = None
    try:
        theirs = Side("bpftrace", ["bpftrace", "-e",
                                   f'BEGIN {{ printf("{READY}\\n"); }} {bpftrace_script}'],
                      READY, on_stderr=False)
        before = loaded_programs()
        described = workload()
        after = loaded_programs()
    finally:
        if theirs:
            theirs.stop()
        ours.stop()

    def costs(ids):
        return [ProgramCost(after[i].get("name", "?"),
                            after[i].get("run_cnt", 0) - before[i].get("run_cnt", 0),
                            after[i].get("run_time_ns", 0) - before[i].get("run_time_ns", 0))
                for i in sorted(ids) if i in after and i in before]
    return Comparison(costs(ours.ids), costs(theirs.ids), described)


# A loopback connect storm: CLIENTS processes connect, send 100 bytes and close, one server
# process accepts, reads to EOF and closes. Every connection makes ten TCP state changes
# (five per end) and two sessions.
_STORM = r"""
import os, socket, sys, time
n, clients = int(sys.argv[1]), int(sys.argv[2])
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(4096)
port = srv.getsockname()[1]
if os.fork() == 0:
    for _ in range(n):
        c, _ = srv.accept()
        while c.recv(4096):
            pass
        c.close()
    os._exit(0)
srv.close()
start = time.monotonic()
kids = []
for k in range(clients):
    pid = os.fork()
    if pid == 0:
        for _ in range(n // clients + (k < n % clients)):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"x" * 100)
            s.close()
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.waitpid(pid, 0)
os.wait()
print(time.monotonic() - start)
"""


class ConnectStorm:
    """`connections` loopback connects from `clients` processes; calling it runs the storm."""

    def __init__(self, connections: int = 20000, clients: int = 2):
        self.connections, self.clients = connections, clients

    def __call__(self) -> str:
        done = subprocess.run([sys.executable, "-c", _STORM, str(self.connections),
                               str(self.clients)], capture_output=True, text=True, check=True)
        seconds = float(done.stdout)
        return (f"connect storm: {self.connections} loopback connections from {self.clients} "
                f"clients in {seconds:.2f} s ({self.connections / seconds:.0f}/s)")
