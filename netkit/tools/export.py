"""Run several interval tools together and export what they measure to Prometheus, node_exporter's
textfile collector or Graphite, without a view: the way to run netkit as a fleet's agent.

Each tool keeps counting in the kernel; every interval its totals become one Snapshot per tool,
handed to the exporters named by --prometheus, --textfile and --graphite.
"""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Annotated, Optional

import typer

from netkit.export import ExportHub, ExportUsageError, export_options
from netkit.tools.common import (CgroupOpt, DurationOpt, ManPage, NameOpt, PidOpt, Ticker,
                                 VerboseOpt, tool_errors)

SUMMARY = "Run chosen interval tools together and export them to Prometheus or Graphite."

MAN = ManPage(
    description=(
        "export attaches the probes of the chosen tools (all exportable tools when none is "
        "named), reads their in-kernel counters every interval and hands the totals to the "
        "exporters: an HTTP endpoint for Prometheus (--prometheus), a .prom file per tool for "
        "node_exporter's textfile collector (--textfile) and carbon's plaintext protocol "
        "(--graphite). It prints nothing on stdout; notices go to stderr.\n\n"
        "Counters are cumulative since export started, so Prometheus' rate() and Graphite's "
        "perSecond() give rates; latencies are histograms in seconds whose buckets are the "
        "tools' log2 slots. The endpoint binds to 127.0.0.1 unless an address is given. "
        "Graphite lines go through a bounded queue in a background thread: when carbon is "
        "unreachable netkit keeps the newest intervals, reconnects with exponential backoff, and "
        "reports how many metrics it dropped (also sent as "
        "<prefix>.netkit.graphite.lost_metrics)."),
    examples=[
        ("netkit export --prometheus 9464", "every exportable tool, served on 127.0.0.1:9464"),
        ("netkit export sockstat --prometheus 0.0.0.0:9464 -i 15", "for a remote Prometheus"),
        ("netkit export --textfile /var/lib/prometheus/node-exporter", "via node_exporter"),
        ("netkit export --graphite carbon.example:2003 --prefix netkit.web1", "to carbon"),
    ],
    output=(
        "Metric names: netkit_<tool>_<counter>_total (counters) and netkit_<tool>_<name>_seconds "
        "(histograms) in Prometheus; <prefix>.<tool>.<counter> and <prefix>.<tool>.<name>.count "
        "and .sum_seconds in Graphite, with <label>.<value> pairs appended in label order."),
    see_also=["netkit-sockstat(8)", "prometheus(1)", "carbon-cache(1)"],
    exit_status=("0 on success and after Ctrl-C or SIGTERM (the last totals are exported "
                 "first); 1 when a tool or an exporter cannot start (port taken, directory "
                 "missing: one line on stderr says why); 2 for a usage error (no exporter "
                 "named, a tool that cannot export, a malformed address)."),
)

ToolsArg = Annotated[Optional[list[str]], typer.Argument(
    metavar="TOOL...", show_default=False,
    help="Tools to run (default: every tool that can export).")]
IntervalOpt = Annotated[float, typer.Option(
    "-i", "--interval", min=0.1, metavar="SECONDS",
    help="Seconds between two reads of the kernel's counters.")]


def exportable_tools(names: list[str] | None = None) -> dict:
    """Tool modules that offer `export_source(pid=, name=, cgroup=)`, by name; when names are
    given only those are imported (start-up stays short, and a tool that was not asked for
    cannot get in the way)."""
    from netkit.cli import tool_modules
    modules = {}
    for name in names or [None]:
        modules.update(tool_modules(name))
    return {name: module for name, module in modules.items() if hasattr(module, "export_source")}


def check_arguments(arguments: dict) -> None:
    if not any(arguments[option] for option in ("prometheus", "textfile", "graphite")):
        raise ExportUsageError("name where to export: --prometheus, --textfile or --graphite")
    named = arguments["tools"] or []
    unknown = [tool for tool in named if tool not in exportable_tools(named)]
    if unknown:
        raise ExportUsageError(f"cannot export {', '.join(unknown)} "
                               f"(exportable: {', '.join(exportable_tools())})")


@tool_errors("export")
@export_options("export", validate=check_arguments)
def command(
    tools: ToolsArg = None,
    interval: IntervalOpt = 5.0,
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    duration: DurationOpt = None,
    verbose: VerboseOpt = False,
    exporters: ExportHub = None,
):
    from netkit.engine.bpfobject import set_verbose

    available = exportable_tools(tools)
    chosen = list(dict.fromkeys(tools or sorted(available)))
    set_verbose(verbose)
    with contextlib.ExitStack() as attached:
        samplers = [attached.enter_context(available[tool].export_source(pid=pid, name=name,
                                                                         cgroup=cgroup))
                    for tool in chosen]
        if duration == 0:
            return
        print(f"Tracing for export: {', '.join(chosen)} every {interval:g} s... "
              "Hit Ctrl-C to end.", file=sys.stderr, flush=True)
        intervals = 0
        try:
            for ts in Ticker(interval, None, duration):
                for sample in samplers:
                    exporters.publish(sample(ts))
                intervals += 1
        except KeyboardInterrupt:
            # The last partial interval too, so the final totals reach the exporters.
            for sample in samplers:
                exporters.publish(sample(time.time()))
        print(f"Exported {intervals} intervals of {', '.join(chosen)}.", file=sys.stderr,
              flush=True)
