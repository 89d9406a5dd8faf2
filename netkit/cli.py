"""The `netkit` command: one typer app, one subcommand per module in netkit/tools/.

A tool module defines `command` (the typer function), `SUMMARY` (one line for --help) and `MAN`
(a ManPage); dropping a module into netkit/tools registers it, nothing else to edit.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import signal
import sys

import typer

import netkit
import netkit.tools

NOT_TOOLS = {"common"}


def tool_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(netkit.tools.__path__)
                  if m.name not in NOT_TOOLS and not m.name.startswith("_"))


def tool_modules(only: str | None = None) -> dict:
    """The tool modules by name (just `only` when given: start-up imports the tool being run)."""
    return {name: importlib.import_module(f"netkit.tools.{name}")
            for name in tool_names() if only in (None, name)}


def _requested_tool(argv: list[str]) -> str | None:
    """The subcommand on the command line, if it names a tool (options come after it)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in tool_names() else None


def _version(value: bool):
    if value:
        print(f"netkit {netkit.__version__}")
        raise typer.Exit()


def build_app(only: str | None = None) -> typer.Typer:
    # rich help and errors only on a terminal: piped or in a file, they would carry box drawing.
    fancy = sys.stderr.isatty() and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    app = typer.Typer(name="netkit", no_args_is_help=True, add_completion=False,
                      rich_markup_mode="rich" if fancy else None,
                      pretty_exceptions_enable=False,
                      context_settings={"help_option_names": ["-h", "--help"]},
                      help="Linux network diagnostics for the terminal: eBPF tracing tools built "
                           "once (libbpf CO-RE) and raw-socket probers.")

    @app.callback()
    def root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print netkit's version and exit.")):
        """Linux network diagnostics for the terminal."""

    for name, module in tool_modules(only).items():
        app.command(name, help=module.__doc__, short_help=module.SUMMARY,
                    epilog=_examples(module), no_args_is_help=False)(module.command)
    return app


def _examples(module) -> str | None:
    man = getattr(module, "MAN", None)
    if not man or not man.examples:
        return None
    # "\b" keeps click from re-flowing the lines of the paragraph that follows it.
    return "Examples:\n\n\b\n" + "\n".join(f"  {cmd}   # {what}" for cmd, what in man.examples)


def _sigterm_is_ctrl_c(signum, frame):
    # A tool's Ctrl-C path prints its summary and detaches; SIGTERM takes the same path.
    raise KeyboardInterrupt


def main() -> None:
    # Like bpftrace and tcpdump, take Ctrl-C even when started with SIGINT ignored (a background
    # job of a non-interactive shell inherits that): `kill -INT` must still end the trace with a
    # summary and a clean detach.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _sigterm_is_ctrl_c)
    # A closed pipe (`netkit ... | head`) is handled by each tool's tool_errors boundary.
    build_app(only=_requested_tool(sys.argv[1:]))(prog_name="netkit")
