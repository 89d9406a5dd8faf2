"""Every tool on this kernel: it runs (attach, then exit with -d 0), or it says in one line
what this kernel lacks and exits 1. On our 6.18 every tool but the Wi-Fi one runs; the vm
subset runs this file on Debian 12's 6.1 (make vmtest), with the BPF objects built for 6.18.

What a kernel lacks is found here from tracefs and sysfs, apart from netkit's
own checks, so a tool that fails where it should run (or runs where it cannot) is caught."""
from __future__ import annotations

import concurrent.futures
import re
import subprocess
from pathlib import Path

import pytest

from conftest import NETKIT, kernel_has_tracepoint, require_root_bpf

pytestmark = [pytest.mark.kernel, pytest.mark.vm]


def lacks() -> dict[str, str]:
    """tool -> a pattern its one-line error must match, for the tools this kernel cannot run."""
    missing = {}
    if not kernel_has_tracepoint("sock", "sock_send_length"):          # 6.3
        for tool in ("socketio", "socksize", "so1stbyte", "tcpnagle", "tcptop"):
            missing[tool] = r"no tracepoint sock_(send|recv)_length"
    if not Path("/sys/module/cfg80211").exists():
        missing["ieee80211scan"] = r"no wireless support in this kernel"
    return missing


# How each tool attaches and exits at once; the others take -d 0. export runs them all: its
# own test is below.
ARGS = {
    "superping": ["-c", "1", "-W", "2", "127.0.0.1"],
    "pchar": ["-H", "1", "-R", "1", "-I", "400", "-m", "1300", "-t", "1", "-n", "127.0.0.1"],
    "top": ["--batch", "-d", "0"],
}


def tools() -> list[str]:
    from netkit.cli import tool_names
    return [name for name in tool_names() if name not in ("completion", "export")]


def run(tool: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(NETKIT), tool, *ARGS.get(tool, ["-d", "0"])], capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def runs() -> dict:
    """Every tool's run, three at a time: on the emulated guest each costs seconds of start-up,
    and one at a time they would take most of the vm subset's time."""
    require_root_bpf()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        return dict(zip(tools(), pool.map(run, tools())))


@pytest.mark.parametrize("tool", tools())
def test_runs_or_names_what_this_kernel_lacks(tool, runs):
    done = runs[tool]
    assert "Traceback" not in done.stderr, done.stderr
    pattern = lacks().get(tool)
    if pattern is None:
        assert done.returncode == 0, done.stderr
        return
    lines = done.stderr.splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"netkit {tool}: this kernel has ") or tool == "ieee80211scan"
    assert re.search(pattern, lines[0]), lines[0]


def test_every_tool_is_listed_here():
    """A new tool is checked too: it takes -d 0, or ARGS says how it attaches and exits."""
    from netkit.cli import tool_modules
    for name, module in tool_modules().items():
        if name in ARGS or name in ("completion", "export"):
            continue
        command = getattr(module, "command", None)
        assert command is not None, name
        import inspect
        assert "duration" in inspect.signature(command).parameters, name


def test_top_runs_without_what_this_kernel_lacks():
    """netkit top keeps a panel whose tool cannot run here and says why on its title line."""
    require_root_bpf()
    done = subprocess.run([str(NETKIT), "top", "--batch", "-d", "1.5", "-r", "1"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    title = next(line for line in done.stdout.splitlines() if line.startswith("2 TCP flows"))
    if "tcptop" in lacks():
        assert title.endswith("n/a: this kernel has no tracepoint sock_send_length "
                              "(needed by tcptop)"), title
    else:
        assert "n/a" not in title, title


def test_export_leaves_out_only_what_this_kernel_cannot_run(tmp_path):
    require_root_bpf()
    done = subprocess.run([str(NETKIT), "export", "--textfile", str(tmp_path), "-d", "1.2",
                           "-i", "0.5"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    left_out = set(re.findall(r"netkit export: leaving out (\w+):", done.stderr))
    assert left_out == set(lacks()) & left_out_candidates(), done.stderr
    written = {p.name.removeprefix("netkit_").removesuffix(".prom") for p in tmp_path.iterdir()}
    assert written and not written & left_out, (written, left_out)


def left_out_candidates() -> set[str]:
    from netkit.tools.export import exportable_tools
    return set(exportable_tools())
