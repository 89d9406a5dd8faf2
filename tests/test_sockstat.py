"""netkit sockstat against real traffic: a child process makes a known number of socket calls and
bytes on loopback; the tool, filtered to that child (by PID, name or cgroup), must count exactly
that. TCP state changes are cross-checked against bpftrace counting the same tracepoint."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (BpftracePeer, NETKIT, Traced, assert_one_line_error, require_or_skip,
                      require_root_bpf, run_netkit, unused_pid)

CONNECTIONS = 5
MESSAGES = 4            # per connection, each way
SIZE = 1000             # bytes per message

# The child: waits for "go", makes the traffic, says "done", then waits to be released, so it is
# alive while the tool reads its counters. Its name is set so -n can find it.
WORKLOAD = f"""
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, b"nkworkload", 0, 0, 0)
sys.stdin.readline()
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(16)
payload = b"x" * {SIZE}
for _ in range({CONNECTIONS}):
    c = socket.socket(); c.connect(srv.getsockname()); a, _ = srv.accept()
    for _ in range({MESSAGES}):
        c.send(payload); a.recv({SIZE}, socket.MSG_WAITALL)
        a.send(payload); c.recv({SIZE}, socket.MSG_WAITALL)
    c.close(); a.close()
srv.close()
u1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u1.bind(("127.0.0.1", 0))
u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u2.sendto(payload, u1.getsockname()); u1.recvfrom({SIZE})
print("done", flush=True)
sys.stdin.readline()
"""

# What the workload does, counted by hand from the code above.
EXPECTED = {
    "socket": CONNECTIONS + 1 + 2,              # clients, listener, two UDP sockets
    "bind": 2,
    "listen": 1,
    "connect": CONNECTIONS,
    "accept": CONNECTIONS,                      # Python's accept() is accept4()
    "send": 2 * CONNECTIONS * MESSAGES + 1,     # send() is sendto(); one UDP sendto
    "recv": 2 * CONNECTIONS * MESSAGES + 1,     # recv() is recvfrom(); one UDP recvfrom
    "tx_bytes": (2 * CONNECTIONS * MESSAGES + 1) * SIZE,
    "rx_bytes": (2 * CONNECTIONS * MESSAGES + 1) * SIZE,
}


class Workload:
    def __init__(self, cgroup: Path | None = None):
        self.proc = subprocess.Popen([sys.executable, "-c", WORKLOAD], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        if cgroup:
            (cgroup / "cgroup.procs").write_text(str(self.pid))

    def run(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "done"

    def release(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("bye\n")
            self.proc.stdin.flush()
        self.proc.wait(timeout=10)


def summary_of(stdout: str) -> dict:
    records = [json.loads(line) for line in stdout.splitlines()]
    assert records and records[-1]["type"] == "summary", stdout
    assert all(r["type"] == "interval" for r in records[:-1])
    return records[-1]


def assert_counts(record: dict) -> None:
    got = {key: record[key] for key in EXPECTED}
    assert got == EXPECTED


@pytest.fixture
def workload():
    require_root_bpf()
    w = Workload()
    yield w
    w.release()


@pytest.mark.kernel
def test_counts_for_one_pid_are_exact_and_match_interval_sums(workload):
    tool = Traced(["sockstat", "-p", str(workload.pid), "--json", "0.2"])
    workload.run()
    time.sleep(0.3)
    out, err = tool.finish()
    assert tool.proc.returncode == 0, err
    summary = summary_of(out)
    assert_counts(summary)
    intervals = [json.loads(line) for line in out.splitlines()][:-1]
    for key in EXPECTED:        # what the intervals said adds up to the run's total
        assert sum(r[key] for r in intervals) == summary[key]
    assert [p["pid"] for p in summary["top"]] == [workload.pid]
    assert summary["top"][0]["comm"] == "nkworkload"


@pytest.mark.kernel
def test_name_filter_and_top_view(workload):
    tool = Traced(["sockstat", "-n", "nkworkload", "--top", "3", "--json", "0.2"])
    workload.run()
    time.sleep(0.3)
    out, _ = tool.finish()
    summary = summary_of(out)
    assert_counts(summary)
    tops = [p for r in map(json.loads, out.splitlines()) if r["type"] == "interval" for p in r["top"]]
    assert tops and {p["pid"] for p in tops} == {workload.pid}


@pytest.mark.kernel
def test_cgroup_filter():
    require_root_bpf()
    root = Path("/sys/fs/cgroup/unified")
    if not (root / "cgroup.procs").exists():
        root = Path("/sys/fs/cgroup")
    if not (root / "cgroup.procs").exists():
        require_or_skip("no cgroup v2 hierarchy mounted")
    group = root / f"nktest{os.getpid()}"
    group.mkdir()
    w = None
    try:
        w = Workload(cgroup=group)
        tool = Traced(["sockstat", "-c", str(group), "--json", "0.2"])
        w.run()
        time.sleep(0.3)
        out, _ = tool.finish()
        assert_counts(summary_of(out))
    finally:
        if w:
            w.release()
        time.sleep(0.1)
        group.rmdir()


@pytest.mark.kernel
def test_tcp_state_changes_match_bpftrace(workload):
    """Independent check: bpftrace counts the same tracepoint for the same process."""
    peer = BpftracePeer("tracepoint:sock:inet_sock_set_state /pid == %d && args->protocol == 6/ "
                        "{ @changes = count(); }" % workload.pid)
    tool = Traced(["sockstat", "-p", str(workload.pid), "--json", "0.2"])
    workload.run()
    time.sleep(0.3)
    out, _ = tool.finish()
    peer_out = peer.stop()
    counted = int(next(line for line in peer_out.splitlines() if "@changes" in line).split()[-1])
    summary = summary_of(out)
    # At least CLOSE->SYN_SENT per connect happens in the connecting task; bpftrace agrees exactly.
    assert summary["tcp_state_changes"] >= CONNECTIONS
    assert summary["tcp_state_changes"] == counted


@pytest.mark.kernel
def test_plain_output_is_aligned_columns_without_boxes(bpf_root):
    result = run_netkit("sockstat", "0.2", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = lines[0].split()
    assert header == ["TIME", "SOCKET", "BIND", "LISTEN", "CONNECT", "ACCEPT", "SEND", "RECV",
                      "TCPSTATE", "TX_BYTES", "RX_BYTES"]
    rows = lines[1:3]
    assert all(len(r.split()) == len(header) for r in rows)
    assert all(len(r) <= len(lines[0]) + 10 for r in rows)
    assert not any(ch in result.stdout for ch in "─│┃━╭")
    assert "Total over" in result.stdout


@pytest.mark.kernel
def test_json_into_head_exits_quietly(bpf_root):
    pipeline = subprocess.run(
        f"'{NETKIT}' sockstat --json 0.1 | head -1; "
        "echo \"status=${PIPESTATUS[0]}\" >&2",
        shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=30)
    record = json.loads(pipeline.stdout)
    assert record["type"] == "interval"
    assert "status=0" in pipeline.stderr
    assert "Traceback" not in pipeline.stderr and "BrokenPipe" not in pipeline.stderr


@pytest.mark.kernel
def test_sigterm_prints_summary_and_exits_zero(bpf_root):
    tool = Traced(["sockstat", "--json", "5"])
    out, err = tool.finish(sig=signal.SIGTERM)
    assert tool.proc.returncode == 0, err
    assert summary_of(out)["type"] == "summary"


@pytest.mark.kernel
def test_duration_zero_attaches_and_exits(bpf_root):
    result = run_netkit("sockstat", "-d", "0")
    assert result.returncode == 0 and result.stdout == ""


@pytest.mark.kernel
def test_unprivileged_user_gets_one_line(bpf_root):
    if not shutil.which("setpriv"):
        require_or_skip("setpriv (util-linux) is missing")
    result = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                             str(NETKIT), "sockstat"],
                            capture_output=True, text=True, timeout=30)
    line = assert_one_line_error(result, "sockstat")
    assert "root" in line


@pytest.mark.kernel
def test_missing_pid_is_a_clear_error(bpf_root):
    assert "no process with PID" in assert_one_line_error(
        run_netkit("sockstat", "-p", str(unused_pid())), "sockstat")


@pytest.mark.kernel
def test_missing_cgroup_is_a_clear_error(bpf_root):
    assert "cgroup" in assert_one_line_error(run_netkit("sockstat", "-c", "no/such/group"), "sockstat")


@pytest.mark.parametrize("args,text", [
    (["--bogus"], "no such option: --bogus"), (["-p", "abc"], "'abc' is not a valid int"),
    (["-p", "999999999"], "not in the range"), (["0"], "'0' is not in the range"),
    (["1", "0"], "0 is not in the range"), (["-d", "-1"], "'-1' is not in the range"),
    (["--top", "0"], "0 is not in the range"), (["nan"], "'nan' is not a finite number"),
    (["-d", "inf"], "'inf' is not a finite number")])
def test_bad_arguments_are_one_line_usage_errors(args, text):
    assert text in assert_one_line_error(run_netkit("sockstat", *args), "sockstat", 2)


@pytest.mark.kernel
def test_top_view_says_when_nothing_happened(bpf_root):
    idle = subprocess.Popen(["sleep", "10"])
    try:
        result = run_netkit("sockstat", "0.2", "1", "--top", "2", "-p", str(idle.pid))
    finally:
        idle.kill()
        idle.wait()
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].endswith("(no socket activity)")
