"""Run several interval tools together and export what they measure to Prometheus, node_exporter's
textfile collector or Graphite, without a view: the way to run netkit as a fleet's agent.

Each tool keeps counting in the kernel; every interval its totals become one Snapshot per tool,
handed to the exporters named by --prometheus, --textfile and --graphite.
"""
from __future__ import annotations

import contextlib
import inspect
import sys
from typing import Annotated, Optional

import typer

from netkit.cli.loop import Loop
from netkit.cli.options import CgroupOpt, DurationOpt, NameOpt, PidOpt, VerboseOpt, seconds
from netkit.cli.tool import ManPage
from netkit.engine.errors import KernelLacks
from netkit.export import ExportHub, ExportUsageError, export_options

SUMMARY = "Run chosen interval tools together and export them to Prometheus or Graphite."

MAN = ManPage(
    description=(
        "export attaches the probes of the chosen tools (all exportable tools when none is "
        "named, less those this kernel cannot run, each named on stderr), reads their in-kernel counters every interval and hands the totals to the "
        "exporters: an HTTP endpoint for Prometheus (--prometheus), a .prom file per tool for "
        "node_exporter's textfile collector (--textfile) and carbon's plaintext protocol "
        "(--graphite). It prints nothing on stdout; notices go to stderr. The packet tools "
        "count what happens in netkit's own network namespace, and packets belong to no "
        "process: with -p, -n or -c only the tools that select processes run, and naming a "
        "packet tool with them is a usage error.\n\n"
        "Counters are cumulative since export started, so Prometheus' rate() and Graphite's "
        "perSecond() give rates; latencies are histograms in seconds whose buckets are the "
        "tools' log2 slots. The endpoint binds to 127.0.0.1 unless an address is given. "
        "Graphite lines go through a bounded queue in a background thread: when carbon is "
        "unreachable netkit keeps the newest intervals, reconnects with exponential backoff, and "
        "reports how many metrics it dropped (also sent as "
        "<prefix>.netkit.graphite.lost_metrics). At exit it waits at most half a second for "
        "carbon to take the rest, and counts what it did not take."),
    examples=[
        ("netkit export --prometheus 9464", "every exportable tool, served on 127.0.0.1:9464"),
        ("netkit export sockstat --prometheus 0.0.0.0:9464 -i 15", "for a remote Prometheus"),
        ("netkit export --textfile /var/lib/prometheus/node-exporter", "via node_exporter"),
        ("netkit export --graphite carbon.example:2003 --prefix netkit.web1", "to carbon"),
    ],
    output=(
        "Metric names: netkit_<tool>_<counter>_total (counters) and netkit_<tool>_<name>_seconds "
        "(histograms) in Prometheus; <prefix>.<tool>.<counter> and <prefix>.<tool>.<name>.count "
        "and .sum_seconds in Graphite (_bytes and .sum_bytes for sizes), with <label>.<value> "
        "pairs appended in label order."),
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
    "-i", "--interval", click_type=seconds(0.1), metavar="SECONDS",
    help="Seconds between two reads of the kernel's counters.")]


def exportable_tools(names: list[str] | None = None) -> dict:
    """Tool modules that offer `export_source()`, by name; when names are given only those are
    imported (start-up stays short, and a tool that was not asked for cannot get in the way)."""
    from netkit.cli import tool_modules
    modules = {}
    for name in names or [None]:
        modules.update(tool_modules(name))
    return {name: module for name, module in modules.items() if hasattr(module, "export_source")}


def filters_processes(module) -> bool:
    """The tool's export_source takes -p/-n/-c: packet tools count what no process owns."""
    return "pid" in inspect.signature(module.export_source).parameters


def check_arguments(arguments: dict) -> None:
    if not any(arguments[option] for option in ("prometheus", "textfile", "graphite")):
        raise ExportUsageError("name where to export: --prometheus, --textfile or --graphite")
    named = arguments["tools"] or []
    available = exportable_tools(named)
    unknown = [tool for tool in named if tool not in available]
    if unknown:
        raise ExportUsageError(f"cannot export {', '.join(unknown)} "
                               f"(exportable: {', '.join(exportable_tools())})")
    if any(arguments[option] is not None for option in ("pid", "name", "cgroup")):
        unfiltered = [tool for tool in named if not filters_processes(available[tool])]
        if unfiltered:
            verb = "count" if len(unfiltered) > 1 else "counts"
            raise ExportUsageError(f"{', '.join(unfiltered)} {verb} packets, which belong to no "
                                   f"process (-p, -n and -c select processes)")


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
    process_filters = {"pid": pid, "name": name, "cgroup": cgroup}
    if not tools and any(value is not None for value in process_filters.values()):
        # -p/-n/-c select processes: the tools that count packets have none to select.
        available = {tool: module for tool, module in available.items()
                     if filters_processes(module)}
    chosen = list(dict.fromkeys(tools or sorted(available)))
    set_verbose(verbose)
    with contextlib.ExitStack() as attached:
        samplers = []
        for tool in list(chosen):
            module = available[tool]
            try:
                samplers.append(attached.enter_context(module.export_source(
                    **(process_filters if filters_processes(module) else {}))))
            except KernelLacks as exc:
                if tools:                   # asked for by name: it is the user's run
                    raise
                # The default, "every tool that can export", means every tool this kernel can
                # run (6.1 lacks sock_send_length, which some of them need).
                chosen.remove(tool)
                print(f"netkit export: leaving out {tool}: {exc}", file=sys.stderr, flush=True)
        if duration == 0:
            return
        intervals = 0

        def tick(ts: float, seconds: float, show: bool):
            nonlocal intervals
            intervals += show
            return [sample(ts) for sample in samplers]

        from netkit.render.output import Output
        notes = Output(stream=sys.stderr)       # export has no view, only notices on stderr
        Loop(notes, interval=interval, duration=duration, exporters=exporters).run(
            tick, f"Tracing for export: {', '.join(chosen)} every {interval:g} s... "
                  "Hit Ctrl-C to end.")
        print(f"Exported {intervals} intervals of {', '.join(chosen)}.", file=sys.stderr,
              flush=True)
