"""Shared test plumbing.

Kernel and namespace tests need root, BPF and the built objects. Outside CI a test that cannot run
here is skipped with its reason; in CI (CI=true or NETKIT_REQUIRE_BPF=1) it fails instead, so a
green CI run always means the kernel tests really ran.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NETKIT = ROOT / ".venv" / "bin" / "netkit"
if not NETKIT.exists():                      # installed elsewhere: the console script next to python
    NETKIT = Path(sys.executable).parent / "netkit"


def must_run() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("NETKIT_REQUIRE_BPF") == "1"


def require_or_skip(reason: str):
    """A test that cannot run here: skip on a workstation, fail in CI."""
    if must_run():
        pytest.fail(f"cannot run in CI: {reason}")
    pytest.skip(reason)


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

    def __init__(self, args: list[str], banner: str = "Tracing", timeout: float = 15.0):
        self.proc = subprocess.Popen([str(NETKIT), *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self._stderr: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stderr], [], [], 0.1)
            if ready:
                line = self.proc.stderr.readline()
                if not line:
                    break
                self._stderr.append(line)
                if banner in line:
                    return
            elif self.proc.poll() is not None:
                break
        out, err = self.finish()
        raise AssertionError(f"netkit {' '.join(args)} did not start: {''.join(self._stderr)}{err}")

    def finish(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> tuple[str, str]:
        """Send `sig` (Ctrl-C by default), wait, return (stdout, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=timeout)
        return out, "".join(self._stderr) + err

    def wait(self, timeout: float = 30.0) -> tuple[str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return out, "".join(self._stderr) + err


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
