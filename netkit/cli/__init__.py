"""The `netkit` command: one typer app, one subcommand per module in netkit/tools/.

A tool module defines `command` (the typer function), `SUMMARY` (one line for --help) and `MAN`
(a ManPage); dropping a module into netkit/tools registers it, nothing else to edit. The shared
pieces a tool builds on sit beside this file: options (declarations), tool (the error boundary
and ManPage) and loop (the interval loop).
"""
import importlib
import os
import pkgutil
import signal
import sys

import typer
from typer._click import exceptions as click_errors

import netkit
import netkit.tools
from netkit.cli import completion
from netkit.cli.tool import boundary
from netkit.engine import signals


def tool_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(netkit.tools.__path__)
                  if not m.name.startswith("_"))


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
    # rich help only on a terminal: piped or in a file, it would carry box drawing.
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
                    epilog=_examples(module), no_args_is_help=False)(boundary(name,
                                                                             module.command))
    app.command("completion", help=completion.command.__doc__, short_help=completion.SUMMARY)(
        boundary("completion", completion.command))
    return app


def _examples(module) -> str | None:
    man = getattr(module, "MAN", None)
    if not man or not man.examples:
        return None
    # "\b" keeps click from re-flowing the lines of the paragraph that follows it.
    return "Examples:\n\n\b\n" + "\n".join(f"  {cmd}   # {what}" for cmd, what in man.examples)


def _keep_standard_fds() -> bool:
    """Reopen a closed stdin/stdout/stderr on /dev/null, so the next file netkit opens (a BPF
    map, a socket) cannot become fd 1 and receive its output. True when stdout was closed."""
    closed_stdout = False
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, os.O_RDWR)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
            closed_stdout |= fd == 1
    if closed_stdout:
        sys.stdout = None
    return closed_stdout


def usage_line(error: click_errors.UsageError) -> str:
    """click's usage error as one line: `netkit TOOL: invalid value for ...`."""
    message = error.format_message().strip().rstrip(".")
    where = error.ctx.command_path if error.ctx is not None else "netkit"
    return f"{where}: {message[:1].lower()}{message[1:]} (see {where} --help)"


def run(argv: list[str], tool: str | None) -> int:
    """Parse and run one command line; every way it ends is an exit status (no traceback)."""
    command = typer.main.get_command(build_app(only=tool))
    try:
        with command.make_context("netkit", argv) as ctx:
            command.invoke(ctx)
    except typer.Exit as done:
        return done.exit_code
    except click_errors.NoArgsIsHelpError as error:
        error.show()
        return 2
    except click_errors.UsageError as error:
        print(usage_line(error), file=sys.stderr)
        return error.exit_code
    except click_errors.ClickException as error:
        print(f"netkit: {error.format_message()}", file=sys.stderr)
        return error.exit_code
    except (KeyboardInterrupt, typer.Abort):
        return 0
    return 0


def main() -> None:
    code = 0
    try:
        # Like bpftrace and tcpdump, take Ctrl-C even when started with SIGINT ignored (a
        # background job of a non-interactive shell inherits that): `kill -INT` must still end
        # the trace with a summary and a clean detach. SIGTERM takes the same path (a tool's
        # Ctrl-C path prints its summary and detaches). Inside the try: a signal may come while
        # the handlers change.
        signals.install()
        stdout_closed = _keep_standard_fds()
        argv = sys.argv[1:]
        tool = _requested_tool(argv)
        if completion.requested():
            code = completion.complete(lambda only: typer.main.get_command(build_app(only=only)),
                                       _requested_tool)
        elif stdout_closed and tool not in (None, "export"):
            print(f"netkit {tool}: standard output is closed", file=sys.stderr)
            code = 1
        else:
            code = run(argv, tool)
    except KeyboardInterrupt:
        pass
    except RuntimeError as error:
        # Python < 3.12 wraps an exception raised in __set_name__ (a dataclass being built
        # while a tool's module is imported) in RuntimeError: Ctrl-C there is still Ctrl-C.
        if not isinstance(error.__cause__, KeyboardInterrupt):
            raise
    # The run is over; a signal now would only interrupt the interpreter's exit. Ignored, not
    # blocked: Python skips a handler that is now SIG_IGN even for a signal that came just before
    # (blocked, such a signal's KeyboardInterrupt escaped here and Python, unable to die of the
    # blocked SIGINT, ended with 130). The try covers that handler running during the change.
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except KeyboardInterrupt:
        pass
    sys.exit(code)
