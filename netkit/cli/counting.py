"""The command of a counting tool whose only options are the process filters: one signature for
sofamily, soprotocol, socksize and sormem. Apart from netkit.cli.runs, which every tracing tool
imports at start-up: this one needs netkit.export, which tools without exporters need not load.
"""
from __future__ import annotations

from typing import Callable

from netkit.cli.options import (CgroupOpt, CountArg, DurationOpt, IntervalArg, JsonOpt, NameOpt,
                                NoColorOpt, PidOpt, VerboseOpt)
from netkit.cli.tool import open_output
from netkit.export import ExportHub, export_options


def process_counting_command(tool: str):
    """The typer command of a counting tool whose options are [INTERVAL [COUNT]], -p/-n/-c, -d,
    --json, --no-color, -v and the export options, made from the tool's run:

        @process_counting_command("sofamily")
        def command(out, pid, name, cgroup, **run):   # run: interval, count, duration,
            with _open(pid, name, cgroup) as obj:     # exporters, as run_counting takes them
                ...
    """
    def decorate(tool_run: Callable):
        @export_options(tool)
        def command(
            interval: IntervalArg = None,
            count: CountArg = None,
            pid: PidOpt = None,
            name: NameOpt = None,
            cgroup: CgroupOpt = None,
            duration: DurationOpt = None,
            json: JsonOpt = False,
            no_color: NoColorOpt = False,
            verbose: VerboseOpt = False,
            exporters: ExportHub = None,
        ):
            tool_run(open_output(json, no_color, verbose), pid, name, cgroup, interval=interval,
                     count=count, duration=duration, exporters=exporters)
        return command
    return decorate
