"""What every tool's command shares besides its options: its man-page metadata and the error
boundary that turns what goes wrong into one line on stderr and an exit status.

    NetkitError        -> `netkit <tool>: <message>`, exit 1 (the tool cannot run)
    UsageError         -> `netkit <tool>: <message>`, exit 2 (bad options)
    Ctrl-C, SIGTERM    -> exit 0 (a tool that was tracing has printed its summary)
    a closed pipe      -> exit 0, quietly (`netkit ... | head`)
    stdout unwritable  -> `netkit <tool>: cannot write ...`, exit 1 (a full disk, a closed stdout)
    another OSError    -> `netkit <tool>: <file>: <reason>`, exit 1 (a file only root may read)

cli.build_app wraps every tool's command in `boundary`, so a tool only raises.
"""
from __future__ import annotations

import errno
import functools
import os
import sys
from dataclasses import dataclass, field

import typer

from netkit.engine.errors import NetkitError, OutputError, UsageError


@dataclass
class ManPage:
    """What the man page says beyond the options: written next to the code it documents."""
    description: str
    examples: list[tuple[str, str]] = field(default_factory=list)   # (command, what it does)
    output: str = ""                                                # columns and JSON keys
    see_also: list[str] = field(default_factory=list)               # e.g. "ss(8)"
    exit_status: str = ("0 on success and after Ctrl-C or SIGTERM (the summary is printed first "
                        "when tracing had begun); 1 when the tool cannot run or its output cannot "
                        "be written (one line on stderr says why); 2 for a usage error.")


def say(tool: str, message: str) -> None:
    """One line on stderr in the house style; silent when stderr itself is gone."""
    try:
        print(f"netkit {tool}: {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


def boundary(tool: str, command):
    """Wrap a tool's command: every way it can end becomes an exit status (see module doc)."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UsageError as exc:
            say(tool, str(exc))
            raise typer.Exit(2) from None
        except NetkitError as exc:
            say(tool, str(exc))
            if isinstance(exc, OutputError):
                quiet_stdout()
            raise typer.Exit(1) from None
        except BrokenPipeError:
            # `netkit ... | head`: stop writing, keep quiet (Python's documented pattern).
            quiet_stdout()
            raise typer.Exit(0) from None
        except OSError as exc:
            # The system said no (a file in /proc or /sys that needs root, a device that went
            # away): as much a reason the tool cannot run as a NetkitError.
            say(tool, os_error_text(exc))
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM outside a tool's tracing loop (while loading, while detaching):
            # everything was detached on the way out; nothing more to say.
            raise typer.Exit(0) from None
    return run


def open_output(json: bool, no_color: bool, verbose: bool = False):
    """The tool's Output (rich on a terminal, plain when piped, NDJSON with --json), and libbpf's
    messages on stderr with --verbose."""
    from netkit.engine.bpfobject import set_verbose
    from netkit.render.output import Output
    set_verbose(verbose)
    return Output(json_mode=json, no_color=no_color)


def os_error_text(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    if exc.filename:
        text = f"{exc.filename}: {text}"
    if exc.errno in (errno.EACCES, errno.EPERM) and os.geteuid() != 0:
        text += " (netkit needs root here)"
    return text


def output_failed(exc: OSError) -> BaseException:
    """What a failed write to stdout becomes: a closed pipe stays a BrokenPipeError (exit 0),
    anything else one line (exit 1)."""
    if exc.errno == errno.EPIPE:
        return BrokenPipeError(exc.errno, exc.strerror)
    return OutputError(f"cannot write to standard output: {exc.strerror or exc}")
