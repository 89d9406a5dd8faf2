"""Exporters: each interval, an interval tool hands its Snapshot to the exporters asked for.

    --prometheus [ADDR:]PORT   an HTTP /metrics endpoint (127.0.0.1 unless an address is given)
    --textfile DIR             a .prom file per tool for node_exporter's textfile collector
    --graphite HOST[:PORT]     carbon's plaintext protocol, sent from a background thread
    --prefix PATH              the Graphite path prefix (default netkit.<hostname>)

A tool gets all four options with one decorator line, `@export_options("sockstat")`, and a
keyword argument `exporters` (an ExportHub) to which it hands each interval's Snapshot.
Publishing never waits on the network: Prometheus serves the latest Snapshot when it scrapes, and
Graphite batches go through a bounded queue.
"""
from __future__ import annotations

import functools
import inspect
import ipaddress
import re
import sys
import time
from typing import Annotated, Callable, Optional, Protocol

import typer

from netkit.engine.errors import NetkitError, UsageError
from netkit.metrics import Snapshot


class ExportError(NetkitError):
    """An exporter could not start (port taken, directory missing): one line for the user."""


class ExportUsageError(ExportError, UsageError):
    """An export option is malformed: one line, and exit status 2 like other usage errors."""


# How long stopping all exporters may take at exit, in all: enough for a reachable carbon to
# take the last interval (a loopback round trip is microseconds, a WAN one ~0.1 s), short enough
# that Ctrl-C ends netkit within a second when carbon is not answering.
EXIT_GRACE = 0.5


class Exporter(Protocol):
    def publish(self, snapshot: Snapshot) -> None: ...
    def close(self, deadline: float | None = None) -> None:
        """Stop; whatever is left to do must be done or given up by `deadline` (monotonic)."""


def _is_port_text(text: str) -> bool:
    # ASCII digits only: str.isdigit() also takes '²' and other scripts' digits.
    return re.fullmatch(r"[0-9]+", text) is not None


def split_host_port(text: str, default_port: int | None, default_host: str) -> tuple[str, int]:
    """Parse PORT, HOST:PORT, HOST, [V6]:PORT or [V6]; raise ValueError with a readable reason.

    Port 0 passes: it means "any free port" to a listener and nothing to a client, so each
    caller decides."""
    text = text.strip()
    if not text:
        raise ValueError("empty address")
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not host or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not [IPV6]:PORT")
        port_text = rest[1:] if rest else ""
    elif _is_port_text(text):
        host, port_text = default_host, text
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, as [::1]:9100")
    else:
        host, port_text = text, ""
    if not host:
        host = default_host
    if not host.isprintable() or any(c.isspace() for c in host):
        raise ValueError(f"{host!r} is not a host name or address")
    if not port_text:
        if default_port is None:
            raise ValueError(f"{text!r} has no port")
        return host, default_port
    if not _is_port_text(port_text) or len(port_text) > 5 or int(port_text) > 65535:
        raise ValueError(f"{port_text!r} is not a port number (0-65535)")
    return host, int(port_text)


def format_host_port(host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def _tool_name(tools) -> str:
    """Who speaks in messages: the tool, or `export` when one command runs several."""
    return tools[0] if len(tools) == 1 else "export"


def stderr_notice(tool: str) -> Callable[[str], None]:
    """Exporters report outages and losses as one `netkit <tool>: ...` line on stderr."""
    def notice(message: str) -> None:
        print(f"netkit {tool}: {message}", file=sys.stderr, flush=True)
    return notice


class HeldNotices:
    """Exporter notices kept back until the tool is measuring: a bad PID or a missing privilege
    found while the probes attach is then the only line the user sees, not the second one after
    a "serving at" notice."""

    def __init__(self, tool: str):
        self.say = stderr_notice(tool)
        self.held: list[str] | None = []

    def __call__(self, message: str) -> None:
        if self.held is None:
            self.say(message)
        else:
            self.held.append(message)

    def release(self) -> None:
        held, self.held = self.held or [], None
        for message in held:
            self.say(message)


class ExportHub:
    """The exporters of one run; publish() hands a Snapshot to each, close() stops them all.
    start() says the run has begun (netkit.cli.loop.Loop calls it once the probes are
    attached): notices held back until then are printed."""

    def __init__(self, exporters: list[Exporter] | None = None,
                 notices: HeldNotices | None = None):
        self.exporters: list[Exporter] = list(exporters or [])
        self.notices = notices

    def __bool__(self) -> bool:
        # Lets a tool skip building Snapshots when nobody exports.
        return bool(self.exporters)

    def start(self) -> None:
        if self.notices is not None:
            self.notices.release()

    def add(self, exporter: Exporter) -> None:
        self.exporters.append(exporter)

    def publish(self, snapshot: Snapshot) -> None:
        for exporter in self.exporters:
            exporter.publish(snapshot)

    def close(self) -> None:
        # One deadline for all: each exporter has been working since its last publish(), so
        # they overlap, and exit is never held up longer than EXIT_GRACE.
        deadline = time.monotonic() + EXIT_GRACE
        while self.exporters:
            self.exporters.pop().close(deadline)

    def __enter__(self) -> ExportHub:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @classmethod
    def from_options(cls, tools: list[str], *, prometheus: str | None = None,
                     textfile: str | None = None, graphite: str | None = None,
                     prefix: str | None = None,
                     notice: Callable[[str], None] | None = None) -> ExportHub:
        """Start the exporters the options ask for; on failure stop those already started.
        Every option is checked before anything starts, so a bad one fails alone; notices are
        held until start() unless a `notice` function is given."""
        # Imported here so that a tool run without exporters never imports prometheus_client.
        if prefix is not None and graphite is None:
            raise ExportUsageError("--prefix needs --graphite HOST[:PORT]")
        if prometheus is not None:
            from netkit.export.prometheus import PrometheusServer
            PrometheusServer.parse_listen(prometheus)
        if graphite is not None:
            from netkit.export.graphite import GraphiteSender
            GraphiteSender.parse_target(graphite)
            GraphiteSender.check_prefix(prefix)
        held = None if notice else HeldNotices(_tool_name(tools))
        notice = notice or held
        hub = cls(notices=held)
        try:
            if graphite is not None:
                hub.add(GraphiteSender(graphite, prefix=prefix, notice=notice))
            if textfile is not None:
                from netkit.export.prometheus import TextfileWriter
                hub.add(TextfileWriter(textfile, notice=notice))
            if prometheus is not None:
                hub.add(PrometheusServer(prometheus, notice=notice))
        except BaseException:
            hub.close()
            raise
        return hub


def _export_option(metavar: str, help: str):
    return Annotated[Optional[str], typer.Option(metavar=metavar, rich_help_panel="Export",
                                                 show_default=False, help=help)]


# The shared options, defined once (name -> type); export_options() adds them to a command.
_OPTION_PARAMETERS = {
    "prometheus": _export_option(
        "[ADDR:]PORT",
        "Serve Prometheus metrics at http://ADDR:PORT/metrics (ADDR defaults to 127.0.0.1; "
        "PORT 0 takes a free port and says which on stderr)."),
    "textfile": _export_option(
        "DIR", "Write netkit_<tool>.prom into DIR each interval for node_exporter's textfile "
               "collector."),
    "graphite": _export_option(
        "HOST[:PORT]", "Send each interval to carbon's plaintext listener (port 2003 by default)."),
    "prefix": _export_option(
        "PATH", "Graphite path prefix: dot-separated names of letters, digits, '_' and '-' "
                "[default: netkit.<hostname>]."),
}


def export_options(*tools: str, validate: Callable[[dict], None] | None = None):
    """Decorate a typer command so it takes the export options and receives `exporters`.

    The command must accept a keyword parameter `exporters` (an ExportHub); the exporters are
    started before the command runs (their notices held until it calls hub.start(), as
    netkit.cli.loop.Loop does once the probes are attached) and stopped after it returns or
    raises. An exporter that
    cannot start raises ExportError, a NetkitError (ExportUsageError for a malformed option),
    which the tool's error boundary (netkit.cli.tool) turns into one line:

        @export_options("sockstat")
        def command(..., exporters: ExportHub = None): ...

    `validate`, given the command's keyword arguments and the export options, may raise
    ExportUsageError before any exporter starts.
    """
    def decorate(command):
        signature = inspect.signature(command, eval_str=True)
        if "exporters" not in signature.parameters:
            raise TypeError(f"{command.__name__} needs an `exporters` parameter")
        kept = [p for name, p in signature.parameters.items() if name != "exporters"]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                   annotation=annotation)
                 for name, annotation in _OPTION_PARAMETERS.items()]

        @functools.wraps(command)
        def run_with_exporters(*args, **kwargs):
            options = {name: kwargs.pop(name, None) for name in _OPTION_PARAMETERS}
            if validate:        # the command's own checks, before any server starts
                validate({**kwargs, **options})
            with ExportHub.from_options(list(tools), **options) as hub:
                return command(*args, exporters=hub, **kwargs)

        run_with_exporters.__signature__ = signature.replace(parameters=kept + added)
        run_with_exporters.__annotations__ = {
            **{p.name: p.annotation for p in kept}, **_OPTION_PARAMETERS}
        return run_with_exporters
    return decorate

