"""The CLI as users meet it: --help lists every tool, --version, `python -m netkit`, and a
property test that throws random argument lists at every subcommand and never sees a traceback."""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import typer.main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import netkit
from conftest import ROOT, run_netkit
from netkit.cli import build_app, tool_modules

TOOLS = list(tool_modules())


def test_help_lists_every_tool_with_its_summary():
    result = run_netkit("--help")
    assert result.returncode == 0
    for name, module in tool_modules().items():
        assert name in result.stdout
        assert module.SUMMARY.split()[0] in result.stdout


def test_version_from_script_and_module():
    assert run_netkit("--version").stdout.strip() == f"netkit {netkit.__version__}"
    module = subprocess.run([sys.executable, "-m", "netkit", "--version"], capture_output=True,
                            text=True, timeout=30)
    assert module.stdout.strip() == f"netkit {netkit.__version__}"


def test_every_tool_has_help_and_man_metadata():
    for name, module in tool_modules().items():
        result = run_netkit(name, "--help")
        assert result.returncode == 0 and "Usage: netkit " + name in result.stdout
        assert module.MAN.description and module.MAN.output, name


def test_unknown_command_is_a_usage_error():
    result = run_netkit("nosuchtool")
    assert result.returncode == 2 and "Traceback" not in result.stderr


# -- property test ------------------------------------------------------------------------------
# Values are chosen so that nothing a tool does with them leaves this machine: numeric loopback
# addresses and localhost (from /etc/hosts) only, never a name that would go to a DNS server.
SAFE_WORDS = ["127.0.0.1", "::1", "localhost", "lo", "0", "1", "-1", "2.5", "1e9", "abc", "",
              "/nonexistent", "--", "-", "udp", "icmp", "tcp", "dest", "sock", "99999999",
              "nan", "inf", "-inf", "1e309", "-1e309", "99999999999999999999",
              "-99999999999999999999", "0.0001"]
_group = typer.main.get_command(build_app())


def _option_names(tool: str) -> list[str]:
    import typer._click as click
    command = _group.get_command(click.Context(_group, info_name="netkit"), tool)
    names = []
    for param in command.params:
        names += [n for n in getattr(param, "opts", []) + getattr(param, "secondary_opts", [])
                  if n.startswith("-")]
    return [n for n in names if n not in ("-h", "--help")]


def _argv(tool: str):
    token = st.one_of(st.sampled_from(_option_names(tool) or ["--json"]),
                      st.sampled_from(SAFE_WORDS),
                      st.integers(-3, 300).map(str),
                      st.sampled_from(["--bogus", "-Z", "---", "--json=1"]))
    return st.lists(token, max_size=6)


class _Timeout(BaseException):
    pass


def _interrupt(signum, frame):
    # Ctrl-C after a short while, so a tool that starts tracing or probing ends through its own
    # Ctrl-C path (summary, detach) like it would for a user.
    raise KeyboardInterrupt


@pytest.mark.kernel          # as root, a draw that parses starts the tool for real
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(tool=st.sampled_from(TOOLS), data=st.data())
def test_random_arguments_never_raise_a_traceback(tool, data):
    argv = [tool] + data.draw(_argv(tool))
    runner = CliRunner()
    previous = signal.signal(signal.SIGALRM, _interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.4)
    try:
        result = runner.invoke(build_app(), argv, catch_exceptions=True)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    text = result.output
    assert "Traceback" not in text, (argv, text)
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), (argv, repr(result.exception), text)
    assert result.exit_code in (0, 1, 2, 130), (argv, result.exit_code, text)


# netkit.cli.main with its command replaced by one whose stop signal lands while exec() runs a
# string, as dataclasses and namedtuple run theirs while a tool's module is imported.
SIGNAL_INSIDE_EXEC = """
import netkit.cli

def run(argv, tool):
    exec("import os, signal\\nos.kill(os.getpid(), signal.%s)\\nfor _ in range(10**7): pass")
    raise AssertionError("the signal did not stop the command")

netkit.cli.run = run
netkit.cli.main()
"""


# The stop signal lands inside a weakref callback (importlib frees its module locks so during
# any import), where Python prints "Exception ignored" and drops what the handler raised; then
# the command waits in the shared tool loop, which nothing else would end.
SIGNAL_INSIDE_WEAKREF_CALLBACK = """
import signal, weakref
import netkit.cli
from netkit.cli.loop import Loop


class Thing:
    pass


def run(argv, tool):
    thing = Thing()
    gone = weakref.ref(thing, lambda ref: signal.raise_signal(signal.%s))
    del thing
    Loop(None, every=0.05).run(lambda *tick: None)
    print("the wait ended")
    return 0

netkit.cli.run = run
netkit.cli.main()
"""


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_stop_python_drops_in_a_callback_ends_the_next_wait(tmp_path, name):
    """CI once sent SIGINT to tcplife 0.17 s after its start, during an import: the handler ran
    in importlib's weakref callback, the Stop was printed as ignored, and the tool traced on."""
    script = tmp_path / "app.py"
    script.write_text(SIGNAL_INSIDE_WEAKREF_CALLBACK % name)
    try:
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                                timeout=20, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    except subprocess.TimeoutExpired as lost:
        raise AssertionError(f"the stop was lost: the loop waited on ({lost.stderr!r})") from None
    assert (result.returncode, result.stdout, result.stderr) == (0, "the wait ended\n", "")


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_signal_inside_exec_still_ends_with_status_0_when_run_as_a_zip_or_module(tmp_path, name):
    """A KeyboardInterrupt of exactly that type that leaves exec'd code is recorded by CPython as
    unhandled even when caught, and a program run as a module (netkit.pyz is one) then ends
    killed by SIGINT instead of with its status: netkit's signal handlers raise their own
    subclass. Run as a directory with __main__.py, the way python3 runs netkit.pyz."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__main__.py").write_text(SIGNAL_INSIDE_EXEC % name)
    result = subprocess.run([sys.executable, str(tmp_path / "app")], capture_output=True,
                            text=True, timeout=60, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
