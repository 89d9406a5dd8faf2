"""Shared test plumbing.

Kernel and namespace tests need root, BPF and the built objects. Outside CI a test that cannot run
here is skipped with its reason; in CI (CI=true or NETKIT_REQUIRE_BPF=1) it fails instead, so a
green CI run always means the kernel tests really ran.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.procio import read_until  # noqa: F401 (tests import it from here)

ROOT = Path(__file__).resolve().parent.parent
NETKIT = ROOT / ".venv" / "bin" / "netkit"
if not NETKIT.exists():                      # installed elsewhere: the console script next to python
    NETKIT = Path(sys.executable).parent / "netkit"


TRACEFS = Path("/sys/kernel/tracing")


def mount_tracefs() -> None:
    """A machine fresh from boot has no tracefs mounted until something mounts it (netkit does,
    at its first tracepoint check). The tests read tracefs as their outside reference, at module
    import, so mount it first: a fresh CI machine read 6.18 as lacking sock_send_length and
    expected 6.1's n/a byte counts (7 tests failed). Without root there is nothing to mount,
    and no kernel test runs."""
    if (TRACEFS / "events").is_dir() or os.geteuid() != 0:
        return
    subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True)


mount_tracefs()

# A suite started as a background job of a script (or by a runner that does so) has SIGINT
# ignored, and every tool it starts inherits that: the kernel discards a signal that is ignored
# when it is sent, so a Ctrl-C sent before a tool's first instruction could never reach it (a
# loop of CI-style runs started with `&` failed every "SIGINT at 0.000 s" test). Give the tools
# the disposition an interactive shell gives them; the test of a tool started with SIGINT
# ignored sets that itself.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def kernel_has_tracepoint(category: str, event: str) -> bool:
    """Read from tracefs, apart from netkit's own checks: what a test expects of a kernel that
    lacks a tracepoint (6.1 has no sock:sock_send_length) must not come from the tool."""
    if os.geteuid() == 0 and not (TRACEFS / "events").is_dir():
        raise RuntimeError(f"tracefs is not mounted at {TRACEFS} and mounting it failed")
    return (TRACEFS / "events" / category / event).is_dir()


def must_run() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("NETKIT_REQUIRE_BPF") == "1"


def require_or_skip(reason: str):
    """A test that cannot run here: skip on a workstation, fail in CI."""
    if must_run():
        pytest.fail(f"cannot run in CI: {reason}")
    pytest.skip(reason)


# The hardware our CI kernel lacks: the only reasons a test may skip in CI. Each is run
# elsewhere (the VM subset boots a kernel that has it). Any other skip in CI is a failure.
HARDWARE = {
    "wifi": "no Wi-Fi stack (cfg80211, mac80211_hwsim) in this kernel",
    "sch_fq": "no sch_fq qdisc in this kernel",
}
_HARDWARE_TAG = "lacks hardware: "


def skip_for_hardware(what: str, detail: str = ""):
    """Skip because this kernel lacks `what` (a key of HARDWARE), also in CI."""
    pytest.skip(_HARDWARE_TAG + what + (f" ({detail})" if detail else ""))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a skip is a failure unless it names a piece of HARDWARE this kernel lacks: a test
    that silently does not run proves nothing."""
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and must_run()) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    what = reason.removeprefix(_HARDWARE_TAG).split(" ")[0]
    if reason.startswith(_HARDWARE_TAG) and what in HARDWARE:
        item.config.stash.setdefault(_skipped_for_hardware, []).append((item.nodeid, what))
        return
    report.outcome = "failed"
    report.longrepr = f"skipped in CI, and not for lack of hardware: {reason}"


_skipped_for_hardware = pytest.StashKey[list]()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = config.stash.get(_skipped_for_hardware, [])
    if must_run():
        terminalreporter.section("hardware this kernel lacks (the only skips CI allows)")
        for key, text in HARDWARE.items():
            tests = [nodeid for nodeid, what in skipped if what == key]
            terminalreporter.write_line(f"{key}: {text}; skipped here: {len(tests)}")
            for nodeid in tests:
                terminalreporter.write_line(f"    {nodeid}")


def require_root_bpf(tool: str = "sockstat") -> None:
    if os.geteuid() != 0:
        require_or_skip("needs root")
    if not (ROOT / "netkit" / "bpf" / f"{tool}.bpf.o").exists():
        require_or_skip(f"netkit/bpf/{tool}.bpf.o is not built (make bpf)")


@pytest.fixture
def bpf_root():
    require_root_bpf()



class Traced:
    """A netkit tool running in a subprocess, for tests that make traffic while it traces."""

    def __init__(self, args: list[str], banner: str = "Tracing", timeout: float = 15.0,
                 command: list[str] | None = None, env: dict | None = None):
        """command: how netkit is run (the installed command; tests/test_dist.py: the pyz)."""
        self.proc = subprocess.Popen([*(command or [str(NETKIT)]), *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        started, seen = read_until(self.proc, self.proc.stderr, banner, timeout)
        self._stderr = seen.splitlines(keepends=True)
        if not started:
            out, err = self.finish()
            raise AssertionError(f"netkit {' '.join(args)} did not start: {err}")

    def finish(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> tuple[str, str]:
        """Send `sig` (Ctrl-C by default), wait, return (stdout, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=timeout)
        return out, "".join(self._stderr) + err

    def wait(self, timeout: float = 30.0) -> tuple[str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return out, "".join(self._stderr) + err


class BpftracePeer:
    """bpftrace running a script beside a netkit tool, as an independent check.

    It counts as started when its BEGIN probe has printed: "Attaching N probes..." comes before
    the probes are attached. It is stopped by Ctrl-C, repeated: bpftrace 0.17 leaves its event
    loop only when a SIGINT interrupts its epoll_wait; one that lands anywhere else only sets a
    flag that the loop never reads again, and it runs on (seen here: 10 of 10 runs interrupted
    right after "Attaching" hung, and 1 in about 5 runs of the sockstat cross-check)."""

    READY = "netkit-bpftrace-peer-ready"

    def __init__(self, script: str, timeout: float = 30.0):
        if not shutil.which("bpftrace"):
            require_or_skip("bpftrace is not installed")
        self.proc = subprocess.Popen(
            ["bpftrace", "-e", f'BEGIN {{ printf("{self.READY}\\n"); }} {script}'],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started, self._early = read_until(self.proc, self.proc.stdout, self.READY, timeout)
        if not started:
            self.proc.kill()
            raise AssertionError(f"bpftrace did not start: {self.proc.communicate()[1]}")

    def stop(self, timeout: float = 20.0) -> str:
        """Ctrl-C until it ends; what it printed (its maps)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.proc.send_signal(signal.SIGINT)
            try:
                return self._early + self.proc.communicate(timeout=1.0)[0]
            except subprocess.TimeoutExpired:
                pass
        self.proc.kill()
        raise AssertionError(f"bpftrace ignored SIGINT for {timeout:g} s")


def run_netkit(*args: str, timeout: float = 30.0, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(NETKIT), *args], capture_output=True, text=True, timeout=timeout,
                          **kwargs)


def assert_one_line_error(result: subprocess.CompletedProcess, tool: str, code: int = 1) -> str:
    """The house style for bad input: one line on stderr, a non-zero status, no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"netkit {tool}: "), result.stderr
    return lines[0]


def records(stdout: str) -> dict[str, list[dict]]:
    """A tool's NDJSON output as its objects by "type" (event, hist, summary...)."""
    import json
    by_type: dict[str, list[dict]] = {}
    for line in stdout.splitlines():
        obj = json.loads(line)
        by_type.setdefault(obj["type"], []).append(obj)
    return by_type


def slots_of(buckets: list[dict], nslots: int = 32) -> list[int]:
    """A histogram's JSON buckets ({"low", "high", "count"}, [low, high) with high a power of
    two) back as counts per log2 slot."""
    slots = [0] * nslots
    for b in buckets:
        assert b["high"] == (2 if b["low"] == 0 else 2 * b["low"]), b
        slots[max(0, b["low"].bit_length() - 1)] += b["count"]
    return slots


def object_types(tool: str):
    """The BTF types of a built BPF object, read without loading it (no privilege needed)."""
    from netkit.engine.btf import object_types as read
    path = ROOT / "netkit" / "bpf" / f"{tool}.bpf.o"
    if not path.exists():
        require_or_skip(f"netkit/bpf/{tool}.bpf.o is not built (make bpf)")
    return read(path)


def unused_pid() -> int:
    """A PID no process has (within the kernel's PID range, so it passes -p's range check)."""
    pid = 4_194_303
    while Path(f"/proc/{pid}").exists():
        pid -= 1
    return pid
