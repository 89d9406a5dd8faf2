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

from conftest import (BpftracePeer, NETKIT, Traced, assert_one_line_error, kernel_has_tracepoint,
                      require_or_skip, require_root_bpf, run_netkit, unused_pid)

# Where the kernel has no sock_send_length/sock_recv_length (6.1, the vm subset) the byte
# columns are n/a.
BYTES_TRACED = kernel_has_tracepoint("sock", "sock_send_length")

CONNECTIONS = 5         # TCP connections: the first accept()ed, the others accept4()ed
REQUESTS, REQUEST = 4, 1000     # per connection, client -> server, each a send()
REPLIES, REPLY = 2, 300         # per connection, server -> client, each a send()
DGRAM_TO, DGRAM_MSG, MMSG = 500, 200, (70, 30)   # UDP by sendto, sendmsg, one sendmmsg
UNREAD = 1234           # a UDP datagram nobody reads: sent bytes, never received ones
UNIX = 64               # over a socketpair

# The child: waits for "go", makes the traffic, says "done", then waits to be released, so it is
# alive while the tool reads its counters. Every socket syscall sockstat counts is made at least
# once (accept and accept4, sendto/sendmsg/sendmmsg, recvfrom/recvmsg/recvmmsg, socketpair), a
# MSG_PEEK read is made (a recv call, no bytes) and no two counters come out equal, so a
# swapped or missing counter fails. Its name is set so -n can find it; SCALE (argv) shrinks
# the TCP part for a second, quieter workload.
WORKLOAD = f"""
import ctypes, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(15, b"nkworkload", 0, 0, 0)
connections = int(sys.argv[1])
sys.stdin.readline()

class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]
class mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]

def mmsg(fd, receive, sizes):
    # one sendmmsg() or recvmmsg() system call for len(sizes) datagrams
    bufs = [ctypes.create_string_buffer(b"m" * n, n) for n in sizes]
    vecs = [iovec(ctypes.cast(b, ctypes.c_void_p), n) for b, n in zip(bufs, sizes)]
    msgs = (mmsghdr * len(sizes))()
    for m, v in zip(msgs, vecs):
        m.hdr.iov, m.hdr.iovlen = ctypes.pointer(v), 1
    done = (libc.recvmmsg(fd, msgs, len(sizes), 0, None) if receive
            else libc.sendmmsg(fd, msgs, len(sizes), 0))
    assert done == len(sizes), ctypes.get_errno()

srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(16)
connect_s = []          # each TCP connect() as this process timed it: an outside clock
for i in range(connections):
    c = socket.socket()
    t0 = time.perf_counter(); c.connect(srv.getsockname())
    connect_s.append(time.perf_counter() - t0)
    if i == 0:
        a = socket.socket(fileno=libc.accept(srv.fileno(), None, None))
    else:
        a, _ = srv.accept()
    for _ in range({REQUESTS}):
        c.send(b"q" * {REQUEST})
    a.recv({REQUESTS * REQUEST}, socket.MSG_WAITALL)
    for _ in range({REPLIES}):
        a.send(b"r" * {REPLY})
    c.recv({REPLIES * REPLY}, socket.MSG_WAITALL)
    c.close(); a.close()
srv.close()
u1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u1.bind(("127.0.0.1", 0))
u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u2.sendto(b"d" * {DGRAM_TO}, u1.getsockname())
u2.sendmsg([b"m" * {DGRAM_MSG}], [], 0, u1.getsockname())
u2.connect(u1.getsockname())
mmsg(u2.fileno(), False, {MMSG})
u2.send(b"u" * {UNREAD})
u1.recv({DGRAM_TO}, socket.MSG_PEEK)
u1.recvfrom({DGRAM_TO})
u1.recvmsg({DGRAM_MSG})
mmsg(u1.fileno(), True, {MMSG})
s1, s2 = socket.socketpair()
s1.send(b"x" * {UNIX}); s2.recv({UNIX})
print("done", *connect_s, flush=True)
sys.stdin.readline()
"""


def expected(connections: int = CONNECTIONS) -> dict[str, int]:
    """What the workload does, counted by hand from the code above."""
    tcp = connections * (REQUESTS * REQUEST + REPLIES * REPLY)
    udp = DGRAM_TO + DGRAM_MSG + sum(MMSG)
    return {
        "socket": connections + 1 + 2 + 1,      # clients, listener, two UDP, one socketpair()
        "bind": 2,                              # listener, u1
        "listen": 1,
        "connect": connections + 1,             # TCP clients, u2
        "accept": connections,                  # one accept(), the others accept4()
        "send": connections * (REQUESTS + REPLIES) + 4 + 1,   # sendto, sendmsg, sendmmsg,
                                                # the unread datagram; the socketpair
        "recv": connections * 2 + 4 + 1,        # MSG_WAITALL reads; peek, recvfrom, recvmsg,
                                                # recvmmsg; the socketpair
        # null where the kernel has no sock_send_length/sock_recv_length (6.1): n/a, not 0
        "tx_bytes": tcp + udp + UNREAD + UNIX if BYTES_TRACED else None,
        "rx_bytes": tcp + udp + UNIX if BYTES_TRACED else None,     # not the peek, not the
    }                                                               # unread datagram


EXPECTED = expected()


def test_the_workload_leaves_no_two_counters_equal():
    counted = [value for value in EXPECTED.values() if value is not None]
    assert len(set(counted)) == len(counted), EXPECTED


class Workload:
    def __init__(self, cgroup: Path | None = None, connections: int = CONNECTIONS):
        self.proc = subprocess.Popen([sys.executable, "-c", WORKLOAD, str(connections)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        if cgroup:
            (cgroup / "cgroup.procs").write_text(str(self.pid))

    def run(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        word, *times = self.proc.stdout.readline().split()
        assert word == "done"
        self.connect_seconds = [float(t) for t in times]     # as the workload timed them

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


def assert_counts(record: dict, connections: int = CONNECTIONS) -> None:
    want = expected(connections)
    assert {key: record[key] for key in want} == want


@pytest.fixture
def workload():
    require_root_bpf()
    w = Workload()
    yield w
    w.release()


@pytest.mark.kernel
@pytest.mark.vm
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
        if EXPECTED[key] is not None:
            assert sum(r[key] for r in intervals) == summary[key]
    assert [p["pid"] for p in summary["top"]] == [workload.pid]
    assert summary["top"][0]["comm"] == "nkworkload"


@pytest.mark.kernel
def test_name_filter_and_top_view_ranks_the_busiest_first(workload):
    """Two processes of the same name, one five times as busy on TCP: -n sees both, --top puts
    the busier one first in every interval and over the run, each with its own exact counts."""
    quiet = Workload(connections=1)
    try:
        tool = Traced(["sockstat", "-n", "nkworkload", "--top", "3", "--json", "0.2"])
        workload.run()
        quiet.run()
        time.sleep(0.3)
        out, _ = tool.finish()
    finally:
        quiet.release()
    summary = summary_of(out)
    assert [p["pid"] for p in summary["top"]] == [workload.pid, quiet.pid]
    assert_counts(summary["top"][0])
    assert_counts(summary["top"][1], connections=1)
    both = {key: a + b if a is not None else None
            for (key, a), b in zip(EXPECTED.items(), expected(1).values())}
    assert {key: summary[key] for key in both} == both
    intervals = [r for r in map(json.loads, out.splitlines()) if r["type"] == "interval"]
    for record in intervals:
        ranked = [sum(p[k] for k in ("socket", "bind", "listen", "connect", "accept", "send",
                                     "recv")) for p in record["top"]]
        assert ranked == sorted(ranked, reverse=True), record["top"]
    assert {p["pid"] for r in intervals for p in r["top"]} == {workload.pid, quiet.pid}


@pytest.mark.kernel
@pytest.mark.vm
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
