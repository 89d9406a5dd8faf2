"""netkit soconnlat against real connects: a client process (its comm set to CLIENT_COMM) makes
a known list of blocking and asyncio (non-blocking) connects, timing each itself; the tool,
filtered to that client, must report each connect exactly once, with the right family, mode,
destination and result, and a latency that lies within the client's own measurement.

Slow and failing connects go through a test bed (tools/testbed): host -> target namespaces joined
by an emulated link that delays every packet DELAY_S each way, so a handshake cannot take less
than 2 x DELAY_S; on the target an nft rule drops SYNs to one port (the client gives up through
TCP_USER_TIMEOUT: ETIMEDOUT) and rejects SYNs to another with ICMP host-unreachable.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter

import pytest

from conftest import (BpftracePeer, NETKIT, Traced, assert_one_line_error, records,
                      require_or_skip, require_root_bpf, run_netkit, unused_pid)

CLIENT_COMM = "nkconnlat"
N = 8                 # connects per (family, mode) that succeed
REFUSED = 3           # per (family, mode) to a closed port

# The client: set its comm, then for each JSON line on stdin (a list of connects to make) make
# them one after the other and answer with one JSON line: [[result, seconds], ...].
CLIENT = f"""
import asyncio, ctypes, errno, json, select, signal, socket, sys, time
ctypes.CDLL(None).prctl(15, b"{CLIENT_COMM}", 0, 0, 0)
TCP_USER_TIMEOUT = 18

def make(family, user_timeout_ms, kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET, kind)
    if user_timeout_ms:
        s.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, user_timeout_ms)
    return s

def name(exc):
    return errno.errorcode[exc.errno] if exc else "OK"

def blocking(c):
    s = make(c["family"], c.get("user_timeout_ms"),
             socket.SOCK_DGRAM if c.get("udp") else socket.SOCK_STREAM)
    if c.get("signal_after"):       # Python's handlers have no SA_RESTART: connect() sees EINTR
        signal.signal(signal.SIGALRM, lambda *a: None)
        signal.setitimer(signal.ITIMER_REAL, c["signal_after"])
    t = time.monotonic(); err = None
    try:
        s.connect((c["addr"], c["port"]))
    except OSError as exc:
        err = exc
    t = time.monotonic() - t
    s.close()
    return [name(err), t]

async def nonblocking(c):
    s = make(c["family"], c.get("user_timeout_ms"))
    s.setblocking(False)
    t = time.monotonic(); err = None
    try:
        await asyncio.get_running_loop().sock_connect(s, (c["addr"], c["port"]))
    except OSError as exc:
        err = exc
    t = time.monotonic() - t
    s.close()
    return [name(err), t]

def recheck(c):
    # The pre-asyncio idiom: connect(), wait for writability, connect() again to learn the
    # result (0), and once more (EISCONN). Three calls, one connect.
    s = make(c["family"], None)
    s.setblocking(False)
    t = time.monotonic()
    assert s.connect_ex((c["addr"], c["port"])) == errno.EINPROGRESS
    select.select([], [s], [], 5)
    first = s.connect_ex((c["addr"], c["port"]))
    again = s.connect_ex((c["addr"], c["port"]))
    t = time.monotonic() - t
    assert again == errno.EISCONN, again
    s.close()
    return ["OK" if first == 0 else errno.errorcode[first], t]

def abandon(c):
    # A client-side timeout: the socket is closed while its SYN is still unanswered.
    s = make(c["family"], None)
    s.setblocking(False)
    t = time.monotonic()
    assert s.connect_ex((c["addr"], c["port"])) == errno.EINPROGRESS
    time.sleep(c["close_after"])
    s.close()
    return ["CLOSED", time.monotonic() - t]

RUN = {{"blocking": blocking, "recheck": recheck, "abandon": abandon,
        "nonblocking": lambda c: asyncio.run(nonblocking(c))}}
for line in sys.stdin:
    done = []
    for c in json.loads(line):
        done.append(RUN[c.pop("how", c["mode"])](c))
    print(json.dumps(done), flush=True)
"""


class Client:
    def __init__(self, argv_prefix: list[str] = ()):
        self.proc = subprocess.Popen([*argv_prefix, sys.executable, "-c", CLIENT],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid

    def connect(self, plan: list[dict]) -> list[tuple[str, float]]:
        self.proc.stdin.write(json.dumps(plan) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the client died"
        return [tuple(x) for x in json.loads(line)]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def plan(addr: str, port: int, family: int, n: int, **extra) -> list[dict]:
    """n blocking then n non-blocking connects."""
    return [{"addr": addr, "port": port, "family": family, "mode": mode, **extra}
            for mode in ("blocking", "nonblocking") for _ in range(n)]


def kinds(events: list[dict]) -> Counter:
    return Counter((e["family"], e["mode"], e["result"]) for e in events)


def check_latencies(events: list[dict], made: list[tuple[str, float]], planned: list[dict]):
    """Events in the order of the plan: same result, and the kernel's latency lies inside the
    client's own timing of the same call (it starts later and ends earlier); and no TCP connect
    is over in under a microsecond (the SYN crosses the stack both ways even on loopback: 8 us
    at the least here), so a unit off by 1000 fails either way."""
    assert [e["result"] for e in events] == [r for r, _ in made]
    for e, (_, seconds), p in zip(events, made, planned):
        assert e["mode"] == p["mode"] and e["dport"] == p["port"]
        assert 1 <= e["latency_us"] <= seconds * 1e6 + 1, (e, seconds)


@pytest.fixture
def client():
    require_root_bpf("soconnlat")
    c = Client()
    yield c
    c.close()


@pytest.fixture
def listeners():
    """Listening sockets on 127.0.0.1 and ::1, and a port on each that nobody listens on."""
    socks, closed = {}, {}
    for family, addr, af in ((4, "127.0.0.1", socket.AF_INET), (6, "::1", socket.AF_INET6)):
        s = socket.socket(af)
        s.bind((addr, 0))
        s.listen(256)                   # never accepted: the kernel completes the handshakes
        socks[family] = (addr, s.getsockname()[1])
        probe = socket.socket(af)
        probe.bind((addr, 0))
        closed[family] = probe.getsockname()[1]
        probe.close()
        socks[f"sock{family}"] = s
    yield socks, closed
    for key, value in socks.items():
        if str(key).startswith("sock"):
            value.close()


def loopback_plan(socks, closed) -> list[dict]:
    p = []
    for family in (4, 6):
        addr, port = socks[family]
        p += plan(addr, port, family, N) + plan(addr, closed[family], family, REFUSED)
    return p


@pytest.mark.kernel
@pytest.mark.vm
def test_loopback_counts_per_kind_and_family_are_exact(client, listeners):
    socks, closed = listeners
    planned = loopback_plan(socks, closed)
    tool = Traced(["soconnlat", "-e", "--json", "-p", str(client.pid)])
    made = client.connect(planned)
    time.sleep(0.2)
    out, err = tool.finish()
    got = records(out)
    events = got["event"]
    fam = {4: "IPv4", 6: "IPv6"}
    expected = Counter()
    for family in (4, 6):
        for mode in ("blocking", "nonblocking"):
            expected[(fam[family], mode, "OK")] = N
            expected[(fam[family], mode, "ECONNREFUSED")] = REFUSED
    assert kinds(events) == expected
    check_latencies(events, made, planned)
    for e, p in zip(events, planned):
        assert (e["pid"], e["comm"], e["dest"]) == (client.pid, CLIENT_COMM, p["addr"])
        assert e["errno"] == (0 if e["result"] == "OK" else 111)
    # The in-kernel histograms hold the same connects, and their exact sums match the events.
    hists = [h for h in got["hist"] if h["scope"] == "run"]
    assert Counter({(h["family"], h["mode"], h["result"]): h["count"] for h in hists}) == expected
    for h in hists:
        assert sum(b["count"] for b in h["latency_us"]) == h["count"]
        same = [e["latency_us"] for e in events
                if (e["family"], e["mode"], e["result"]) == (h["family"], h["mode"], h["result"])]
        assert h["latency_us_sum"] == pytest.approx(sum(same), abs=0.01 * len(same))
        for e in same:      # each latency falls in a bucket [low, high) that holds some connect
            assert any(b["low"] <= int(e) < b["high"] and b["count"] for b in h["latency_us"])
    summary = got["summary"][-1]
    assert summary["connects"] == len(planned) and summary["lost_events"] == 0
    assert summary["results"] == {"OK": 4 * N, "ECONNREFUSED": 4 * REFUSED}


@pytest.mark.kernel
@pytest.mark.vm
def test_filters_family_port_and_name_in_the_kernel(client, listeners):
    """-6 -D PORT -n COMM: only the client's IPv6 connects to that port; the test process's own
    connects (another comm) and the IPv4 ones are not seen."""
    socks, closed = listeners
    addr6, port6 = socks[6]
    tool = Traced(["soconnlat", "-e", "--json", "-6", "-D", str(port6), "-n", CLIENT_COMM])
    for _ in range(3):                                  # same port, other process
        socket.create_connection((addr6, port6)).close()
    made = client.connect(loopback_plan(socks, closed))
    out, _ = tool.finish()
    events = records(out)["event"]
    assert kinds(events) == {("IPv6", "blocking", "OK"): N, ("IPv6", "nonblocking", "OK"): N}
    assert {e["dport"] for e in events} == {port6} and {e["comm"] for e in events} == {CLIENT_COMM}
    assert len(made) == 4 * (N + REFUSED)


@pytest.mark.kernel
def test_by_dest_interval_and_run_histograms(client, listeners):
    """--by dest with an interval and a count: the tool stops by itself; the interval
    histograms add up to the run's, keyed by destination, with no PID in them."""
    socks, closed = listeners
    tool = Traced(["soconnlat", "--by", "dest", "--json", "-p", str(client.pid), "0.4", "3"])
    client.connect(loopback_plan(socks, closed))
    out, err = tool.wait(timeout=20)
    assert tool.proc.returncode == 0, err
    got = records(out)
    run = Counter()
    interval = Counter()
    for h in got["hist"]:
        assert "pid" not in h and "comm" not in h
        (run if h["scope"] == "run" else interval)[(h["dest"], h["dport"], h["result"])] += h["count"]
    assert run == interval
    for family in (4, 6):
        addr, port = socks[family]
        assert run[(addr, port, "OK")] == 2 * N
        assert run[(addr, closed[family], "ECONNREFUSED")] == 2 * REFUSED


@pytest.mark.kernel
def test_status_checks_are_not_connects_and_udp_needs_the_flag(client, listeners):
    """connect() again on a connecting/connected socket (returns 0, then EISCONN) is not a new
    connect; UDP connect()s are counted only with --udp (as blocking, OK, timed in the call)."""
    socks, _ = listeners
    recheck = [{"addr": socks[f][0], "port": socks[f][1], "family": f, "mode": "nonblocking",
                "how": "recheck"} for f in (4, 6) for _ in range(3)]
    udp = [{"addr": "127.0.0.1", "port": 9, "family": 4, "mode": "blocking", "udp": True}] * 2
    for flags, expected in (([], Counter({("IPv4", "nonblocking", "OK"): 3,
                                          ("IPv6", "nonblocking", "OK"): 3})),
                            (["--udp"], Counter({("IPv4", "nonblocking", "OK"): 3,
                                                 ("IPv6", "nonblocking", "OK"): 3,
                                                 ("IPv4", "blocking", "OK"): 2}))):
        tool = Traced(["soconnlat", "-e", "--json", "-p", str(client.pid), *flags])
        made = client.connect(recheck + udp)
        out, _ = tool.finish()
        events = records(out)["event"]
        assert kinds(events) == expected, flags
        check_latencies(events, made[:len(events)], (recheck + udp)[:len(events)])


@pytest.mark.kernel
def test_cgroup_filter(listeners):
    """-c: only tasks in the cgroup; the test process connects to the same port outside it."""
    require_root_bpf("soconnlat")
    from pathlib import Path
    root = next((r for r in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))
                 if (r / "cgroup.procs").exists()), None)
    if root is None:
        require_or_skip("no cgroup v2 hierarchy mounted")
    group = root / f"nkconnlat{os.getpid()}"
    group.mkdir()
    c = None
    try:
        c = Client()
        (group / "cgroup.procs").write_text(str(c.pid))
        socks, closed = listeners
        tool = Traced(["soconnlat", "-e", "--json", "-c", str(group)])
        for _ in range(3):
            socket.create_connection(socks[4]).close()
        made = c.connect(plan(*socks[4], 4, 2))
        out, _ = tool.finish()
        events = records(out)["event"]
        assert [(e["pid"], e["result"]) for e in events] == [(c.pid, "OK")] * 4
        assert len(made) == 4
    finally:
        if c:
            c.close()
        time.sleep(0.1)
        group.rmdir()


@pytest.mark.kernel
def test_blocking_latencies_match_bpftrace(client, listeners):
    """Independent check of blocking connects: bpftrace times the same syscalls (the original
    soconnlat.bt's method) for the same process; the two agree to some microseconds."""
    socks, closed = listeners
    # The peer stores each latency in a map (printed at exit): a printf per call would put
    # bpftrace's perf-buffer output inside soconnlat's window and widen the gap under test.
    peer = BpftracePeer(
        "tracepoint:syscalls:sys_enter_connect /pid == %d/ { @start[tid] = nsecs; } "
        "tracepoint:syscalls:sys_exit_connect /pid == %d && @start[tid]/ "
        "{ @lat[@calls] = nsecs - @start[tid]; @calls = @calls + 1; delete(@start[tid]); }"
        % (client.pid, client.pid))
    try:
        planned = [p for f in (4, 6) for p in plan(*socks[f], f, N) + plan(socks[f][0], closed[f], f,
                                                                             REFUSED)
                   if p["mode"] == "blocking"]
        tool = Traced(["soconnlat", "-e", "--json", "-p", str(client.pid)])
        client.connect(planned)
        out, _ = tool.finish()
    finally:
        peer_out = peer.stop()
    by_call = {int(line[5:line.index("]")]): int(line.split()[-1]) / 1e3
               for line in peer_out.splitlines() if line.startswith("@lat[")}
    theirs = [by_call[i] for i in sorted(by_call)]
    ours = [e["latency_us"] for e in records(out)["event"]]
    assert len(ours) == len(theirs) == len(planned)
    # With no output inside the window the two agree to ~0.5 us per call (measured); a busy CPU
    # can put one tool's probe work inside the other's window. The first call is left out of
    # the bound: each tool pays its first-time costs there (on a fresh machine bpftrace's first
    # map insert read 333 us against our 165 us, the rest within 1 us).
    diffs = sorted(abs(a - b) for a, b in zip(ours[1:], theirs[1:]))
    assert diffs[len(diffs) // 2] <= 5 and diffs[-1] <= 150, list(zip(ours, theirs))
    print("blocking us, soconnlat vs bpftrace:", [(round(a, 1), round(b, 1))
                                                  for a, b in zip(ours, theirs)])


@pytest.mark.kernel
def test_plain_histograms_and_table(client, listeners):
    socks, closed = listeners
    tool = Traced(["soconnlat", "-p", str(client.pid)])
    client.connect(loopback_plan(socks, closed))
    out, err = tool.finish()
    assert "Traceback" not in err
    lines = out.splitlines()
    assert f"PID {client.pid} {CLIENT_COMM}, OK (us):" in lines
    assert f"PID {client.pid} {CLIENT_COMM}, ECONNREFUSED (us):" in lines
    header = next(l for l in lines if l.split()[:3] == ["PID", "COMM", "FAM"])
    assert header.split() == ["PID", "COMM", "FAM", "MODE", "RESULT", "COUNT", "AVG(us)"]
    rows = [l.split() for l in lines[lines.index(header) + 1:] if l.strip()]
    counts = {(r[2], r[3], r[4]): int(r[5]) for r in rows}
    assert counts[("IPv4", "blocking", "OK")] == N
    assert counts[("IPv6", "nonblocking", "ECONNREFUSED")] == REFUSED
    assert not any(ch in out for ch in "┃━│─")


@pytest.mark.kernel
def test_textfile_export_counts(client, listeners, tmp_path):
    socks, closed = listeners
    tool = Traced(["soconnlat", "-p", str(client.pid), "--textfile", str(tmp_path), "--json"])
    client.connect(loopback_plan(socks, closed))
    tool.finish()
    text = (tmp_path / "netkit_soconnlat.prom").read_text()
    line = ('netkit_soconnlat_connects_total{comm="%s",family="IPv6",mode="nonblocking",'
            'result="ECONNREFUSED"} %s' % (CLIENT_COMM, float(REFUSED)))
    assert line in text, text
    assert ('netkit_soconnlat_latency_seconds_count{comm="%s",family="IPv4",mode="blocking",'
            'result="OK"} %s' % (CLIENT_COMM, float(N))) in text



@pytest.mark.kernel
def test_netkit_export_runs_soconnlat(client, listeners, tmp_path):
    """`netkit export soconnlat` (no view) publishes the same counts as the tool itself."""
    socks, closed = listeners
    tool = Traced(["export", "soconnlat", "-p", str(client.pid), "-i", "0.2",
                   "--textfile", str(tmp_path)])
    client.connect(loopback_plan(socks, closed))
    time.sleep(0.5)
    out, err = tool.finish()
    assert tool.proc.returncode == 0 and out == "", err
    text = (tmp_path / "netkit_soconnlat.prom").read_text()
    assert ('netkit_soconnlat_connects_total{comm="%s",family="IPv4",mode="blocking",'
            'result="OK"} %s' % (CLIENT_COMM, float(N))) in text, text

STRESS = f"""
import asyncio, ctypes, socket, sys, threading
ctypes.CDLL(None).prctl(15, b"{CLIENT_COMM}", 0, 0, 0)
N = int(sys.argv[1])
async def main():
    srv = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, backlog=4096)
    port = srv.sockets[0].getsockname()[1]
    async def one():
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.close()
    await asyncio.gather(*(one() for _ in range(N)))        # N handshakes in flight at once
    def blocking():
        for _ in range(N // 4):
            socket.create_connection(("127.0.0.1", port)).close()
    threads = [threading.Thread(target=blocking) for _ in range(4)]
    for t in threads:
        t.start()
    await asyncio.get_running_loop().run_in_executor(None, lambda: [t.join() for t in threads])
    srv.close()
asyncio.run(main())
"""


@pytest.mark.kernel
def test_concurrent_connects_are_each_counted_once():
    """1000 asyncio connects in flight together, then 4 threads of blocking connects: each is
    seen once (the state tracepoint and connect()'s return race on two CPUs), as an event and in
    the histograms."""
    require_root_bpf("soconnlat")
    n = 1000
    tool = Traced(["soconnlat", "-e", "--json", "-n", CLIENT_COMM])
    subprocess.run([sys.executable, "-c", STRESS, str(n)], check=True, timeout=60)
    out, _ = tool.finish()
    got = records(out)
    assert Counter((e["mode"], e["result"]) for e in got["event"]) == {
        ("nonblocking", "OK"): n, ("blocking", "OK"): n}
    assert sum(h["count"] for h in got["hist"] if h["scope"] == "run") == 2 * n
    assert got["summary"][-1]["lost_events"] == 0


@pytest.mark.kernel
def test_full_backlog_holds_the_connect_until_the_syn_is_resent(client):
    """A listener whose accept queue is full drops SYNs: the next connect waits for the SYN
    retransmission (initial RTO: 1 s), which finds room once the test has accepted."""
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)                       # one connection fills the accept queue
    addr, port = srv.getsockname()
    accepted = []
    timer = threading.Timer(0.3, lambda: accepted.append(srv.accept()))
    planned = [{"addr": addr, "port": port, "family": 4, "mode": m} for m in ("blocking",
                                                                             "nonblocking")]
    try:
        tool = Traced(["soconnlat", "-e", "--json", "-p", str(client.pid)])
        timer.start()
        made = client.connect(planned)
        out, _ = tool.finish()
    finally:
        timer.cancel()
        srv.close()
    first, held = records(out)["event"]
    check_latencies([first, held], made, planned)
    assert first["latency_us"] < 10_000 and held["result"] == "OK"
    assert 1.0 <= held["latency_us"] / 1e6 <= 1.0 + 0.3, held
    print("held by a full backlog:", held["latency_us"] / 1e3, "ms")


# -- slow and failing connects through a namespace test bed --------------------------------------
DELAY_S = 0.025                 # each way, so every handshake takes >= 50 ms
TOLERANCE_S = 0.030             # stated: emulator (~15 us) + scheduling on a busy 2-core machine
USER_TIMEOUT_MS = 300           # the client's TCP_USER_TIMEOUT on the dropped-SYN port
PORT_OK, PORT_DROP, PORT_UNREACH = 8001, 8002, 8003


@pytest.fixture(scope="module")
def bed():
    require_root_bpf("soconnlat")
    if not shutil.which("nft"):
        require_or_skip("nft is not installed")
    from tools.testbed import Link, TestBed, TestBedError
    try:
        b = TestBed([Link(delay_s=DELAY_S)]).__enter__()
    except TestBedError as exc:
        require_or_skip(f"test bed: {exc}")
    servers = []
    try:
        rules = (f"table inet soconnlat {{\n chain input {{\n"
                 f"  type filter hook input priority 0;\n"
                 f"  tcp dport {PORT_DROP} tcp flags syn drop\n"
                 f"  tcp dport {PORT_UNREACH} reject with icmpx type host-unreachable\n }}\n}}\n")
        b.run(b.target, ["nft", "-f", "-"], input=rules)
        with b.inside(b.target):
            for af, family in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
                s = socket.socket(af)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((b.target_addr(family), PORT_OK))
                s.listen(256)
                servers.append(s)
        yield b
    finally:
        for s in servers:
            s.close()
        b.__exit__(None, None, None)


@pytest.fixture
def bed_client(bed):
    c = Client(["ip", "netns", "exec", bed.host])
    yield c
    c.close()


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.kernel
@pytest.mark.netns
def test_delayed_handshake_latency_is_at_least_the_imposed_delay(bed, bed_client, family):
    addr = bed.target_addr(family)
    planned = plan(addr, PORT_OK, family, 4)
    tool = Traced(["soconnlat", "-e", "--json", "-p", str(bed_client.pid)])
    made = bed_client.connect(planned)
    out, _ = tool.finish()
    events = records(out)["event"]
    assert len(events) == len(planned)
    check_latencies(events, made, planned)
    print(f"IPv{family} via {DELAY_S * 1e3:.0f} ms each way: tool ms",
          [round(e["latency_us"] / 1e3, 2) for e in events], "client ms",
          [round(t * 1e3, 2) for _, t in made])
    for e in events:
        assert e["result"] == "OK" and e["dest"] == addr
        assert 2 * DELAY_S <= e["latency_us"] / 1e6 <= 2 * DELAY_S + TOLERANCE_S, e


@pytest.mark.kernel
@pytest.mark.netns
@pytest.mark.vm
def test_timeout_and_unreachable_are_classified(bed, bed_client):
    addr = bed.target_addr(4)
    planned = (plan(addr, PORT_DROP, 4, 1, user_timeout_ms=USER_TIMEOUT_MS)
               + plan(bed.target_addr(6), PORT_DROP, 6, 1, user_timeout_ms=USER_TIMEOUT_MS)
               + plan(addr, PORT_UNREACH, 4, 1) + plan(bed.target_addr(6), PORT_UNREACH, 6, 1))
    tool = Traced(["soconnlat", "-e", "--json", "-p", str(bed_client.pid)])
    made = bed_client.connect(planned)
    out, _ = tool.finish()
    got = records(out)
    events = got["event"]
    # Which side lost a connect, if one is missing: the kernel's histograms or the event stream.
    assert len(events) == len(planned), (
        [(e["family"], e["mode"], e["result"]) for e in events],
        [(h["family"], h["mode"], h["result"], h["count"]) for h in got.get("hist", [])
         if h["scope"] == "run"], got.get("summary"))
    check_latencies(events, made, planned)
    print("timeout/unreachable: tool ms", [(e["result"], round(e["latency_us"] / 1e3, 2))
                                           for e in events])
    timed_out, unreachable = events[:4], events[4:]
    for e in timed_out:
        # The kernel checks TCP_USER_TIMEOUT when the first SYN retransmission is due (the
        # initial RTO, 1 s): so at least the imposed 300 ms, and about 1 s.
        assert e["result"] == "ETIMEDOUT" and e["errno"] == 110
        assert USER_TIMEOUT_MS / 1e3 <= e["latency_us"] / 1e6 <= 1.0 + 0.3, e
    for e in unreachable:
        # The ICMP error comes back over the delayed link: one round trip at least.
        assert e["result"] == "EHOSTUNREACH"
        assert 2 * DELAY_S <= e["latency_us"] / 1e6 <= 2 * DELAY_S + TOLERANCE_S, e
    assert [e["mode"] for e in events] == [p["mode"] for p in planned]


@pytest.mark.kernel
@pytest.mark.netns
def test_closed_before_the_handshake_and_interrupted_blocking_connect(bed, bed_client):
    """A non-blocking connect abandoned (closed) after CLOSE_AFTER_S while its SYNs are dropped
    is CLOSED at about that time; a blocking connect interrupted by a signal (the kernel returns
    -ERESTARTSYS, Python then waits itself) is timed to the end of its delayed handshake."""
    close_after = 0.1
    planned = [{"addr": bed.target_addr(4), "port": PORT_DROP, "family": 4, "mode": "nonblocking",
                "how": "abandon", "close_after": close_after},
               {"addr": bed.target_addr(6), "port": PORT_OK, "family": 6, "mode": "blocking",
                "signal_after": 0.01}]
    tool = Traced(["soconnlat", "-e", "--json", "-p", str(bed_client.pid)])
    made = bed_client.connect(planned)
    out, _ = tool.finish()
    abandoned, interrupted = records(out)["event"]
    check_latencies([abandoned, interrupted], made, planned)
    assert abandoned["result"] == "CLOSED" and abandoned["errno"] is None
    assert close_after <= abandoned["latency_us"] / 1e6 <= close_after + TOLERANCE_S
    assert (interrupted["result"], interrupted["mode"]) == ("OK", "blocking")
    assert 2 * DELAY_S <= interrupted["latency_us"] / 1e6 <= 2 * DELAY_S + TOLERANCE_S


@pytest.mark.kernel
def test_events_into_head_exit_quietly(client, listeners):
    """`netkit soconnlat -e | head -2`: the header and one event, then exit 0 without a word."""
    socks, _ = listeners
    tool = subprocess.Popen(["bash", "-c", f"set -o pipefail; {NETKIT} soconnlat -e "
                                           f"-p {client.pid} | head -2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 15
    out = ""
    while time.monotonic() < deadline and tool.poll() is None:
        client.connect(plan(*socks[4], 4, 2))   # until the tool is up and head has its lines
        time.sleep(0.1)
    out, err = tool.communicate(timeout=10)
    assert tool.returncode == 0, err          # netkit's own status too (pipefail)
    assert err.startswith("Tracing") and "Traceback" not in err and "Exception" not in err, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["TIME", "PID", "COMM"] and CLIENT_COMM in lines[1]


@pytest.mark.kernel
@pytest.mark.netns
def test_milliseconds_histograms_in_the_kernel(bed, bed_client):
    """-m: the kernel slots latencies in ms, so a 50 ms handshake lands in [32, 63]."""
    planned = plan(bed.target_addr(4), PORT_OK, 4, 2)
    tool = Traced(["soconnlat", "-m", "-e", "--json", "-p", str(bed_client.pid)])
    bed_client.connect(planned)
    out, _ = tool.finish()
    got = records(out)
    assert all(2 * DELAY_S * 1e3 <= e["latency_ms"] <= (2 * DELAY_S + TOLERANCE_S) * 1e3
               for e in got["event"])
    hists = [h for h in got["hist"] if h["scope"] == "run"]
    assert {h["mode"]: (h["count"], h["latency_ms"]) for h in hists} == {
        m: (2, [{"low": 32, "high": 64, "count": 2}]) for m in ("blocking", "nonblocking")}
    assert all("latency_ms_sum" in h and "latency_us_sum" not in h for h in hists)


@pytest.fixture
def routeless_netns():
    """A namespace with only lo: any other destination has no route."""
    require_root_bpf("soconnlat")
    name = f"nkconnlat{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode:
        require_or_skip("cannot create a network namespace")
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.mark.kernel
@pytest.mark.netns
def test_no_route_fails_in_the_call(routeless_netns):
    """ENETUNREACH comes from connect() itself, blocking or not, before any SYN: both are timed
    in the call, and the non-blocking one keeps its mode."""
    c = Client(["ip", "netns", "exec", routeless_netns])
    try:
        planned = plan("198.51.100.1", 80, 4, 2) + plan("2001:db8::1", 80, 6, 1)
        tool = Traced(["soconnlat", "-e", "--json", "-p", str(c.pid)])
        made = c.connect(planned)
        out, _ = tool.finish()
    finally:
        c.close()
    events = records(out)["event"]
    assert kinds(events) == {("IPv4", "blocking", "ENETUNREACH"): 2,
                             ("IPv4", "nonblocking", "ENETUNREACH"): 2,
                             ("IPv6", "blocking", "ENETUNREACH"): 1,
                             ("IPv6", "nonblocking", "ENETUNREACH"): 1}
    check_latencies(events, made, planned)


# -- command line ----------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [["-4", "-6"], ["--by", "port"], ["1", "2", "3"],
                                  ["-D", "1", "-D", "2", "-D", "3", "-D", "4", "-D", "5", "-D", "6",
                                   "-D", "7", "-D", "8", "-D", "9"]])
def test_bad_arguments_exit_2(args):
    result = run_netkit("soconnlat", *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.kernel
def test_missing_pid_is_a_clear_error():
    require_root_bpf("soconnlat")
    line = assert_one_line_error(run_netkit("soconnlat", "-p", str(unused_pid())), "soconnlat")
    assert "no process with PID" in line


def test_both_families_is_one_line_usage_error():
    line = assert_one_line_error(run_netkit("soconnlat", "-4", "-6"), "soconnlat", code=2)
    assert "-4 and -6" in line


@pytest.mark.kernel
def test_duration_zero_attaches_and_exits():
    require_root_bpf("soconnlat")
    result = run_netkit("soconnlat", "-d", "0")
    assert result.returncode == 0 and result.stdout == "", result.stderr


@pytest.mark.kernel
def test_unprivileged_user_gets_one_line():
    require_root_bpf("soconnlat")
    nobody = 65534
    result = run_netkit("soconnlat", "-d", "0", user=nobody, group=nobody, extra_groups=[])
    line = assert_one_line_error(result, "soconnlat")
    assert "root" in line
