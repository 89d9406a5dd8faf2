"""netkit gethostlatency against real lookups with a known answer time.

A resolver child runs in a private mount and network namespace (`unshare -m -n`): there it
bind-mounts a test-owned resolv.conf (nameserver 127.0.0.1) and nsswitch.conf (hosts: dns) over
/etc's and serves the test's names from tests/dnsserver.py on its own loopback, holding each
answer back for a chosen delay. The host's /etc files and DNS server are never touched or asked.
The child makes the calls it is told to (getaddrinfo, gethostbyname, gethostbyname2 and the _r
variants, through ctypes so each libc function is called exactly once) and times each itself.
netkit, started on the host, must report every call exactly once with the child's PID, the name,
a latency at least the imposed delay and at most the child's own timing of the call, and the
EAI / h_errno code of the names that do not exist."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (ROOT, Traced, assert_one_line_error, require_or_skip, require_root_bpf,
                      run_netkit, unused_pid)

SLOW = "slow.netkit.test"          # answered after SLOW_DELAY
MISSING = "no-such-name-here.netkit.test"   # NXDOMAIN after MISSING_DELAY; longer than SLOW
SLOW_DELAY = 0.15
MISSING_DELAY = 0.05
# Upper bound on what a lookup may add to the server's delay on a busy 2-core machine shared
# with other test runs (the child's own timing is the tight bound; this one catches nonsense).
TOLERANCE = 0.5

RESOLVER = r"""
import ctypes, json, os, socket, subprocess, sys, time
conf, tests_dir, comm = sys.argv[1], sys.argv[2], sys.argv[3]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
for name in ("resolv.conf", "nsswitch.conf"):
    subprocess.run(["mount", "--bind", os.path.join(conf, name), "/etc/" + name], check=True)
sys.path.insert(0, tests_dir)
from dnsserver import DnsServer, Zone
server = DnsServer({%(slow)r: Zone("192.0.2.7", "2001:db8::7", %(slow_delay)r)},
                   default_delay=%(missing_delay)r).start()
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.prctl(15, comm.encode(), 0, 0, 0)
libc.gethostbyname.restype = libc.gethostbyname2.restype = ctypes.c_void_p

def reentrant(name, family=None):
    hostent, buf = ctypes.create_string_buffer(64), ctypes.create_string_buffer(8192)
    result, herr = ctypes.c_void_p(), ctypes.c_int()
    if family is None:
        rc = libc.gethostbyname_r(name, hostent, buf, len(buf), ctypes.byref(result),
                                  ctypes.byref(herr))
    else:
        rc = libc.gethostbyname2_r(name, family, hostent, buf, len(buf), ctypes.byref(result),
                                   ctypes.byref(herr))
    return rc == 0 and bool(result.value)

def getaddrinfo(name):
    try:
        if name == "-":                    # no node: a service lookup only
            socket.getaddrinfo(None, 80)
        else:
            socket.getaddrinfo(name, None)
        return True
    except socket.gaierror:
        return False

CALLS = {
    "getaddrinfo": getaddrinfo,
    "gethostbyname": lambda n: bool(libc.gethostbyname(n.encode())),
    "gethostbyname2": lambda n: bool(libc.gethostbyname2(n.encode(), socket.AF_INET6)),
    "gethostbyname_r": lambda n: reentrant(n.encode()),
    "gethostbyname2_r": lambda n: reentrant(n.encode(), socket.AF_INET6),
}
print("ready", os.getpid(), flush=True)
for line in sys.stdin:
    words = line.split()
    if words[0] == "bye":
        break
    if words[0] == "queries":
        print(json.dumps(server.queries), flush=True)
        continue
    if words[0] == "pin":             # stay on one CPU from now on
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        print("{}", flush=True)
        continue
    if words[0] == "threads":          # threads N NAME: N getaddrinfo calls at once
        import threading
        tids, start = [], time.perf_counter()
        def one():
            tids.append(threading.get_native_id())
            getaddrinfo(words[2])
        workers = [threading.Thread(target=one) for _ in range(int(words[1]))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        print(json.dumps({"tids": tids, "elapsed": time.perf_counter() - start}), flush=True)
        continue
    start = time.perf_counter()
    ok = CALLS[words[0]](words[1])
    print(json.dumps({"ok": ok, "elapsed": time.perf_counter() - start}), flush=True)
""" % {"slow": SLOW, "slow_delay": SLOW_DELAY, "missing_delay": MISSING_DELAY}

# (function, name, expected result) in the order the child makes the calls.
PLAN = [
    ("getaddrinfo", SLOW, "OK"),
    ("gethostbyname", SLOW, "OK"),
    ("gethostbyname2", SLOW, "OK"),
    ("gethostbyname_r", SLOW, "OK"),
    ("gethostbyname2_r", SLOW, "OK"),
    ("getaddrinfo", MISSING, "EAI_NONAME"),
    ("gethostbyname", MISSING, "HOST_NOT_FOUND"),
    ("gethostbyname2", MISSING, "HOST_NOT_FOUND"),
    ("gethostbyname_r", MISSING, "HOST_NOT_FOUND"),
    ("gethostbyname2_r", MISSING, "HOST_NOT_FOUND"),
]


class Resolver:
    """The child in its own namespaces, with its DNS server; one lookup per `call`."""

    def __init__(self, tmp_path: Path, comm: str = "nkresolver"):
        conf = tmp_path / f"conf-{comm}"
        conf.mkdir()
        (conf / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:2 attempts:1\n")
        (conf / "nsswitch.conf").write_text("hosts: dns\n")
        self.proc = subprocess.Popen(["unshare", "-m", "-n", "--", sys.executable, "-c", RESOLVER,
                                      str(conf), str(ROOT / "tests"), comm],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        first = self.proc.stdout.readline().split()
        if first[:1] != ["ready"]:
            self.proc.kill()
            raise AssertionError(f"resolver did not start: {first}")
        self.pid = int(first[1])
        assert self.pid == self.proc.pid          # unshare execs: the PID is the resolver's

    def _ask(self, line: str):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def call(self, function: str, name: str) -> dict:
        self.last = self._ask(f"{function} {name}")
        return self.last

    def queries(self) -> list:
        return self._ask("queries")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("bye\n")
            self.proc.stdin.flush()
        self.proc.wait(timeout=10)


def _needs_namespaces():
    require_root_bpf("gethostlatency")
    if not shutil.which("unshare") or not shutil.which("ip"):
        require_or_skip("needs unshare(1) and ip(8)")


@pytest.fixture
def resolver(tmp_path):
    _needs_namespaces()
    r = Resolver(tmp_path)
    yield r
    r.close()


def lookups(stdout: str) -> list[dict]:
    records = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return [r for r in records if r["type"] == "lookup"]


def trace(args: list[str], calls) -> tuple[list[dict], str]:
    """Run netkit while resolvers make `calls` ((resolver, function, name), in order); Ctrl-C it.
    Returns the resolvers' own timings of the calls and netkit's stdout."""
    tracer = Traced(["gethostlatency", *args])
    timings = [who.call(function, name) for who, function, name in calls]
    time.sleep(0.2)                 # the last event through the ring buffer
    out, err = tracer.finish()
    assert tracer.proc.returncode == 0, err
    assert "Traceback" not in err
    return timings, out


@pytest.mark.kernel
@pytest.mark.netns
@pytest.mark.vm
def test_each_call_once_with_name_pid_latency_and_result(resolver):
    timings, out = trace(["-p", str(resolver.pid), "--json"],
                         [(resolver, function, name) for function, name, _ in PLAN])
    records = lookups(out)
    assert [(r["function"], r["host"], r["result"]) for r in records] == PLAN
    for record, timing, (_, name, result) in zip(records, timings, PLAN):
        assert record["pid"] == record["tid"] == resolver.pid
        assert record["comm"] == "nkresolver"
        assert record["ok"] is (result == "OK") is timing["ok"]
        delay = SLOW_DELAY if name == SLOW else MISSING_DELAY
        latency = record["latency_ms"] / 1e3
        # Inside the call the child timed, and at least as long as the server held the answer.
        assert delay <= latency <= timing["elapsed"] + 0.0005, (record, timing)
        assert latency <= delay + TOLERANCE, record
    assert [r["code"] for r in records if r["host"] == MISSING] == [-2, 1, 1, 1, 1]
    # The answers came from the test's server, not from /etc/hosts or the host's resolver.
    asked = {name for name, _ in resolver.queries()}
    assert asked == {SLOW, MISSING}


@pytest.mark.kernel
@pytest.mark.netns
@pytest.mark.vm
def test_concurrent_lookups_on_threads_are_kept_apart(resolver):
    """A thread pool resolving at once (what event loops do): one event per thread, each with
    the whole delay, none mixed up with another thread's call."""
    _, out = trace(["-p", str(resolver.pid), "--json"], [(resolver, "threads", f"8 {SLOW}")])
    records = lookups(out)
    tids = resolver.last["tids"]
    assert sorted(r["tid"] for r in records) == sorted(tids) and len(set(tids)) == 8
    for r in records:
        assert (r["pid"], r["function"], r["host"], r["result"]) == \
            (resolver.pid, "getaddrinfo", SLOW, "OK")
        assert SLOW_DELAY <= r["latency_ms"] / 1e3 <= resolver.last["elapsed"] + 0.0005


@pytest.mark.kernel
@pytest.mark.netns
def test_name_filter_sees_only_that_command(resolver, tmp_path):
    other = Resolver(tmp_path, comm="nkother")
    try:
        _, out = trace(["-n", "nkresolver", "--json"],
                       [(other, "getaddrinfo", SLOW), (resolver, "getaddrinfo", SLOW)] * 2 +
                       [(other, "gethostbyname", MISSING)])
    finally:
        other.close()
    assert [(r["pid"], r["comm"], r["host"]) for r in lookups(out)] == \
        [(resolver.pid, "nkresolver", SLOW)] * 2


@contextlib.contextmanager
def cgroup_holding(pid: int):
    """A new cgroup v2 group with `pid` in it, removed when the process has gone."""
    root = next((r for r in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))
                 if (r / "cgroup.controllers").exists()), None)      # hybrid or unified mount
    if root is None:
        require_or_skip("no cgroup v2 hierarchy mounted")
    group = root / f"netkit-ghl-{os.getpid()}-{pid}"
    group.mkdir()
    try:
        (group / "cgroup.procs").write_text(str(pid))
        yield group
    finally:
        deadline = time.monotonic() + 10
        while True:
            try:
                group.rmdir()
                break
            except OSError:          # busy until the process has exited
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.mark.kernel
@pytest.mark.netns
def test_cgroup_filter(resolver, tmp_path):
    other = Resolver(tmp_path, comm="nkother")
    try:
        with cgroup_holding(resolver.pid) as group:
            _, out = trace(["-c", str(group), "--json"],
                           [(resolver, "gethostbyname", SLOW), (other, "gethostbyname", SLOW),
                            (resolver, "getaddrinfo", MISSING)])
            resolver.close()
    finally:
        other.close()
    assert [(r["pid"], r["function"], r["result"]) for r in lookups(out)] == \
        [(resolver.pid, "gethostbyname", "OK"), (resolver.pid, "getaddrinfo", "EAI_NONAME")]


@pytest.mark.kernel
@pytest.mark.netns
@pytest.mark.vm
def test_hist_counts_per_host_in_the_kernel(resolver):
    # The shorter name before and after the longer one, on one CPU: the key must hold the name
    # alone, not what a longer name left behind in a reused buffer.
    resolver.call("pin", "-")
    plan = [(resolver, "getaddrinfo", SLOW), (resolver, "gethostbyname", MISSING)] * 2 + \
        [(resolver, "getaddrinfo", SLOW)]
    for unit, per_second in (("us", 1e6), ("ms", 1e3)):
        timings, out = trace(["-p", str(resolver.pid), "--hist", "--json"] +
                             (["-m"] if unit == "ms" else []), plan)
        records = [json.loads(line) for line in out.splitlines()]
        hists = {r["host"]: r for r in records if r["type"] == "hist"}
        assert set(hists) == {SLOW, MISSING}
        assert records[-1] == {"ts": records[-1]["ts"], "type": "summary", "lost_events": 0}
        for host, count, delay in ((SLOW, 3, SLOW_DELAY), (MISSING, 2, MISSING_DELAY)):
            h = hists[host]
            buckets = h[f"latency_{unit}"]
            assert h["type"] == "hist" and h["unit"] == unit and h["count"] == count
            assert sum(b["count"] for b in buckets) == count
            # The unit, from both sides: at least the DNS server's delay for every call, at
            # most what the caller itself timed around its calls (the kernel truncates each
            # value to a whole unit).
            caller = sum(t["elapsed"] for (_, _, name), t in zip(plan, timings) if name == host)
            assert int(delay * per_second) * count <= h["sum"] <= caller * per_second, \
                (unit, h["sum"], caller)
            # Every lookup took between the delay and the caller's longest call, so each bucket
            # [low, high) in use starts at or below that longest call and ends above the delay.
            # (Both in one bucket is not given: on a slow guest the caller's own time crossed a
            # power of two that the kernel's value did not.)
            longest = max(t["elapsed"] for (_, _, name), t in zip(plan, timings) if name == host)
            assert all(b["low"] <= longest * per_second and delay * per_second < b["high"]
                       for b in buckets if b["count"]), (unit, h)


@pytest.mark.kernel
@pytest.mark.netns
def test_plain_output_columns(resolver):
    _, out = trace(["-p", str(resolver.pid)], [(resolver, "getaddrinfo", "-"),
                                               (resolver, "getaddrinfo", MISSING)])
    header, no_node, line = out.splitlines()
    assert header.split() == ["TIME", "PID", "COMM", "LATms", "HOST", "RESULT"]
    assert no_node.split()[4:] == ["-", "OK"]
    clock, pid, comm, latency, host, result = line.split()
    assert (int(pid), comm, host, result) == (resolver.pid, "nkresolver", MISSING, "EAI_NONAME")
    assert len(clock) == 8 and clock.count(":") == 2
    assert len(latency.split(".")[1]) == 3 and float(latency) >= MISSING_DELAY * 1e3


def _sleeper(tmp_path: Path, compiler: str, *flags: str) -> subprocess.Popen:
    if not shutil.which(compiler):
        require_or_skip(f"needs {compiler} to build a test program")
    source = tmp_path / "sleeper.c"
    source.write_text("#include <unistd.h>\nint main(void) { pause(); return 0; }\n")
    binary = tmp_path / f"sleeper-{compiler}"
    build = subprocess.run([compiler, *flags, "-o", str(binary), str(source)], capture_output=True,
                           text=True)
    if build.returncode:
        require_or_skip(f"{compiler} {' '.join(flags)} failed: {build.stderr.strip()[:200]}")
    proc = subprocess.Popen([str(binary)])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:          # until the program (not the fork) is mapped
        if str(binary) in Path(f"/proc/{proc.pid}/maps").read_text():
            return proc
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("sleeper did not start")


@pytest.mark.parametrize("compiler,flags,text", [
    ("gcc", ["-static"], "has no shared libc mapped (statically linked"),
    ("musl-gcc", [], "uses musl libc"),
])
@pytest.mark.kernel
def test_target_without_glibc_is_one_line(tmp_path, compiler, flags, text):
    require_root_bpf("gethostlatency")
    proc = _sleeper(tmp_path, compiler, *flags)
    try:
        line = assert_one_line_error(run_netkit("gethostlatency", "-p", str(proc.pid)),
                                     "gethostlatency")
    finally:
        proc.kill()
        proc.wait()
    assert text in line and f"process {proc.pid} (" in line


@pytest.mark.parametrize("args,text", [
    (["-p", str(unused_pid())], "no process with PID"),
    (["--libc", "/no/such/libc.so.6"], "no such file"),
    (["--libc", __file__], "not an ELF file"),
    (["--libc", "/bin/true"], "has no function getaddrinfo"),
    (["-c", "no/such/group"], "no cgroup v2 directory"),
])
@pytest.mark.kernel
def test_bad_input_is_one_line(args, text):
    require_root_bpf("gethostlatency")
    assert text in assert_one_line_error(run_netkit("gethostlatency", *args, "-d", "0"),
                                         "gethostlatency")


def test_usage_errors_exit_2():
    for args in (["-p", "abc"], ["--bogus"], ["-d", "-1"]):
        result = run_netkit("gethostlatency", *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr


@pytest.mark.kernel
def test_attach_then_exit_with_duration_zero():
    require_root_bpf("gethostlatency")
    result = run_netkit("gethostlatency", "-d", "0")
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result


def test_result_names():
    from netkit.tools.gethostlatency import describe_result
    assert describe_result("getaddrinfo", 0, -1000, False) == (True, "OK", 0)
    assert describe_result("getaddrinfo", -2, -1000, False) == (False, "EAI_NONAME", -2)
    assert describe_result("getaddrinfo", -3, -1000, False) == (False, "EAI_AGAIN", -3)
    assert describe_result("gethostbyname", 0x7F00DEAD, 0, False) == (True, "OK", 0)
    assert describe_result("gethostbyname", 0, 2, False) == (False, "TRY_AGAIN", 2)
    assert describe_result("gethostbyname2", 0, -1000, False) == (False, "FAILED", -1)
    assert describe_result("gethostbyname_r", 0, 0, False) == (True, "OK", 0)
    assert describe_result("gethostbyname_r", 0, 1, True) == (False, "HOST_NOT_FOUND", 1)
    assert describe_result("gethostbyname2_r", 34, 0, True) == (False, "ERANGE", 34)


@pytest.mark.kernel
def test_sigterm_ends_like_ctrl_c():
    require_root_bpf("gethostlatency")
    tracer = Traced(["gethostlatency", "--json"])
    out, err = tracer.finish(signal.SIGTERM)
    assert tracer.proc.returncode == 0 and "Traceback" not in err, err


@pytest.mark.kernel
@pytest.mark.netns
def test_closed_pipe_ends_quietly(resolver):
    """`netkit gethostlatency | head -1`: the reader goes away, netkit exits 0 without a word."""
    tracer = Traced(["gethostlatency", "-p", str(resolver.pid), "--json"])
    resolver.call("getaddrinfo", MISSING)
    assert json.loads(tracer.proc.stdout.readline())["host"] == MISSING
    tracer.proc.stdout.close()
    for _ in range(3):                  # the next writes meet the closed pipe
        resolver.call("getaddrinfo", MISSING)
    assert tracer.proc.wait(timeout=20) == 0
    err = "".join(tracer._stderr) + tracer.proc.stderr.read()
    assert "Traceback" not in err and "Exception" not in err, err


# -- a container: its own root with its own copy of libc ------------------------------------------
CONTAINER_RESOLVER_C = r"""
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

int main(void)
{
	char name[256];

	prctl(PR_SET_NAME, "ctresolver");
	printf("ready %d\n", getpid());
	fflush(stdout);
	while (fgets(name, sizeof(name), stdin)) {
		struct addrinfo *res = NULL;
		struct timespec a, b;
		int rc;

		name[strcspn(name, "\n")] = 0;
		clock_gettime(CLOCK_MONOTONIC, &a);
		rc = getaddrinfo(name, NULL, NULL, &res);
		clock_gettime(CLOCK_MONOTONIC, &b);
		if (rc == 0)
			freeaddrinfo(res);
		printf("{\"ok\": %s, \"elapsed\": %.6f}\n", rc ? "false" : "true",
		       (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
		fflush(stdout);
	}
	return 0;
}
"""

# In a new network namespace: the DNS server on its loopback, the resolver chrooted in `root`.
CONTAINER = r"""
import subprocess, sys
root, tests_dir = sys.argv[1], sys.argv[2]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
sys.path.insert(0, tests_dir)
from dnsserver import DnsServer, Zone
DnsServer({%(slow)r: Zone("192.0.2.7", "2001:db8::7", %(slow_delay)r)},
          default_delay=%(missing_delay)r).start()
sys.exit(subprocess.call(["chroot", root, "/resolver"]))
""" % {"slow": SLOW, "slow_delay": SLOW_DELAY, "missing_delay": MISSING_DELAY}


class ContainerResolver(Resolver):
    """A C program calling getaddrinfo() in a chroot whose libc is a copy (another inode) of the
    host's, as a container image's would be."""

    def __init__(self, tmp_path: Path):
        if not shutil.which("gcc") or not shutil.which("chroot"):
            require_or_skip("needs gcc and chroot(8)")
        root = tmp_path / "root"
        (root / "etc").mkdir(parents=True)
        (root / "etc" / "resolv.conf").write_text("nameserver 127.0.0.1\n"
                                                 "options timeout:2 attempts:1\n")
        (root / "etc" / "nsswitch.conf").write_text("hosts: dns\n")
        (tmp_path / "resolver.c").write_text(CONTAINER_RESOLVER_C)
        subprocess.run(["gcc", "-O2", "-o", str(root / "resolver"), str(tmp_path / "resolver.c")],
                       check=True)
        # The libraries it loads, copied to the same paths inside the root.
        ldd = subprocess.run(["ldd", str(root / "resolver")], capture_output=True, text=True).stdout
        for lib in (w for line in ldd.splitlines() for w in line.split() if w.startswith("/")):
            target = root / lib.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib, target)
            if Path(lib).name.startswith("libc.so"):
                self.libc_shown = lib
        self.proc = subprocess.Popen(["unshare", "-m", "-n", "--", sys.executable, "-c", CONTAINER,
                                      str(root), str(ROOT / "tests")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        first = self.proc.stdout.readline().split()
        assert first[:1] == ["ready"], first
        self.pid = int(first[1])

    def call(self, function: str, name: str) -> dict:
        assert function == "getaddrinfo"
        self.last = self._ask(name)
        return self.last

    def close(self) -> None:
        self.proc.stdin.close()              # end of input ends the program
        self.proc.wait(timeout=10)


@pytest.fixture
def container(tmp_path):
    _needs_namespaces()
    c = ContainerResolver(tmp_path)
    yield c
    c.close()


@pytest.mark.kernel
@pytest.mark.netns
def test_container_libc_is_found_through_the_process(container):
    plan = [(container, "getaddrinfo", SLOW), (container, "getaddrinfo", MISSING)]
    # The host's libc is another file: tracing it does not see the container's calls...
    _, out = trace(["-n", "ctresolver", "--json"], plan)
    assert lookups(out) == []
    # ...-p finds the libc the process has mapped, opened through /proc/PID/root.
    timings, out = trace(["-p", str(container.pid), "--json"], plan)
    records = lookups(out)
    assert [(r["pid"], r["comm"], r["host"], r["result"]) for r in records] == \
        [(container.pid, "ctresolver", SLOW, "OK"), (container.pid, "ctresolver", MISSING,
                                                       "EAI_NONAME")]
    for record, timing, delay in zip(records, timings, (SLOW_DELAY, MISSING_DELAY)):
        assert delay <= record["latency_ms"] / 1e3 <= timing["elapsed"] + 0.0005
    # -c probes the libcs of the processes in the cgroup as well as the host's.
    with cgroup_holding(container.pid) as group:
        _, out = trace(["-c", str(group), "--json"], plan)
        container.close()
    assert [(r["pid"], r["host"]) for r in lookups(out)] == [(container.pid, SLOW),
                                                             (container.pid, MISSING)]
