"""What every tool's command shares: option declarations with the letters bcc and libbpf-tools
users know, man-page metadata, the interval clock, and the error boundary that turns a
NetkitError into one line and exit status 1."""
from __future__ import annotations

import functools
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Annotated, Optional

import typer

from netkit.engine.errors import NetkitError
from netkit.render.output import Column  # noqa: F401  (tools import it from here)

# -- options (Annotated types: a tool writes `pid: PidOpt = None`) --------------------------------
PidOpt = Annotated[Optional[int], typer.Option("-p", "--pid", metavar="PID", show_default=False,
                                               help="Trace only this process (PID).")]
NameOpt = Annotated[Optional[str], typer.Option("-n", "--name", metavar="COMM", show_default=False,
                                                help="Trace only processes with this command name "
                                                     "(as in /proc/PID/comm, 15 characters).")]
CgroupOpt = Annotated[Optional[str], typer.Option("-c", "--cgroup", metavar="PATH", show_default=False,
                                                  help="Trace only tasks in this cgroup v2 (a path "
                                                       "under /sys/fs/cgroup).")]
DurationOpt = Annotated[Optional[float], typer.Option("-d", "--duration", metavar="SECONDS", min=0,
                                                      show_default=False,
                                                      help="Stop after this many seconds "
                                                           "(0: attach and exit).")]
TimestampOpt = Annotated[bool, typer.Option("-t", "--timestamp", help="Print a timestamp on each line.")]
JsonOpt = Annotated[bool, typer.Option("-j", "--json", help="Write NDJSON: one object per line.")]
NoColorOpt = Annotated[bool, typer.Option("--no-color", help="Plain text even on a terminal "
                                                             "(also when NO_COLOR is set).")]
VerboseOpt = Annotated[bool, typer.Option("-v", "--verbose", help="Show libbpf's messages and the "
                                                                  "full verifier log on failure.")]
MillisecondsOpt = Annotated[bool, typer.Option("-m", "--milliseconds",
                                               help="Show latencies in milliseconds, not microseconds.")]
IntervalArg = Annotated[float, typer.Argument(min=0.01, metavar="INTERVAL",
                                              help="Seconds between outputs.")]
CountArg = Annotated[Optional[int], typer.Argument(min=1, metavar="COUNT", show_default=False,
                                                   help="Number of outputs, then exit.")]


@dataclass
class ManPage:
    """What the man page says beyond the options: written next to the code it documents."""
    description: str
    examples: list[tuple[str, str]] = field(default_factory=list)   # (command, what it does)
    output: str = ""                                                # columns and JSON keys
    see_also: list[str] = field(default_factory=list)               # e.g. "ss(8)"
    exit_status: str = ("0 on success and after Ctrl-C or SIGTERM (the summary is printed first); "
                        "1 when the tool cannot run (one line on stderr says why); 2 for a usage "
                        "error.")


def fail(tool: str, message: str, code: int = 1):
    print(f"netkit {tool}: {message}", file=sys.stderr)
    raise typer.Exit(code)


def tool_errors(tool: str):
    """Decorator for a tool's command: NetkitError -> one line + exit 1; a closed pipe -> exit 0."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except NetkitError as exc:
                fail(tool, str(exc))
            except BrokenPipeError:
                # `netkit ... | head`: stop writing, keep quiet (Python's documented pattern).
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                raise typer.Exit(0)
        return run
    return wrap


class Ticker:
    """Interval clock: yields the end of each interval until COUNT intervals or the duration have
    passed. Deadlines are absolute, so intervals don't drift by the time spent rendering.
    Without an interval it yields nothing and ends with the duration (or with Ctrl-C).

    `wait(seconds)` passes the time between ticks: time.sleep, or for a tool that streams
    ring-buffer events a poll that handles them and may return early (it is called again until
    the tick is due)."""

    LONGEST_WAIT = 0.5     # s; an endless wait is made of these

    def __init__(self, interval: float | None, count: int | None = None,
                 duration: float | None = None, wait=time.sleep):
        self.interval = interval
        self.count = count
        self.stop_at = None if duration is None else time.monotonic() + duration
        self.wait = wait

    def __iter__(self):
        n, deadline = 0, time.monotonic()
        while self.count is None or n < self.count:
            deadline = deadline + self.interval if self.interval else float("inf")
            if self.stop_at is not None:
                if time.monotonic() >= self.stop_at:
                    return
                deadline = min(deadline, self.stop_at)
            while (left := deadline - time.monotonic()) > 0:
                self.wait(min(left, self.LONGEST_WAIT))
            if not self.interval:
                return
            n += 1
            yield time.time()

    def run_out(self) -> None:
        """Wait through every tick: for a tool that prints only at the end."""
        for _ in self:
            pass
