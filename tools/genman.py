#!/usr/bin/env python3
"""Write man/netkit.8 and man/netkit-<tool>.8 from the typer app and each tool's MAN metadata.

typer bundles its own click, so generic click-to-man converters see no options; this walks the
commands through typer.main.get_command and writes roff directly. `python tools/genman.py DIR`.
tests/test_man.py regenerates the pages and fails when the committed ones differ.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

os.environ["NO_COLOR"] = "1"        # plain help texts, never rich markup

import typer.main  # noqa: E402

import netkit  # noqa: E402
from netkit.cli import build_app, completion, tool_modules  # noqa: E402


def esc(text: str) -> str:
    """roff-safe text: backslashes, hyphens in words, and control characters at line starts."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line
                     for line in text.splitlines())


def paragraphs(text: str) -> str:
    return "\n.PP\n".join(esc(p.strip()) for p in re.split(r"\n\s*\n", text.strip()) if p.strip())


def header(name: str, summary: str) -> list[str]:
    return [f'.TH {name.upper()} 8 "" "netkit {netkit.__version__}" "netkit manual"',
            ".SH NAME", f"{esc(name)} \\- {esc(summary)}"]


def option_lines(command, ctx) -> list[str]:
    lines = []
    for param in command.params:
        if param.param_type_name == "argument":
            default = f" (default: {param.default})" if param.default is not None else ""
            record = ((param.metavar or param.name.upper()),
                      (getattr(param, "help", "") or "") + default)
        else:
            record = param.get_help_record(ctx)
        if record:
            lines += [".TP", f".B {esc(record[0])}", esc(record[1]) or "\\&"]
    lines += [".TP", ".B \\-h, \\-\\-help", "Show the help and exit."]
    return lines


def tool_page(name: str, module, command, parent_ctx) -> str:
    import typer._click as click
    ctx = click.Context(command, info_name=name, parent=parent_ctx)
    man = module.MAN
    usage = " ".join(command.collect_usage_pieces(ctx))
    out = header(f"netkit-{name}", module.SUMMARY.rstrip("."))
    out += [".SH SYNOPSIS", f".B netkit {name}", esc(usage)]
    out += [".SH DESCRIPTION", paragraphs(man.description)]
    out += [".SH OPTIONS"] + option_lines(command, ctx)
    if man.examples:
        out.append(".SH EXAMPLES")
        for cmd, what in man.examples:
            out += [".TP", f".B {esc(cmd)}", esc(what)]
    if man.output:
        out += [".SH OUTPUT", paragraphs(man.output)]
    out += [".SH EXIT STATUS", esc(man.exit_status)]
    see_also = ["netkit(8)"] + man.see_also
    out += [".SH SEE ALSO", esc(", ".join(see_also))]
    return "\n".join(out) + "\n"


def index_page(modules: dict) -> str:
    out = header("netkit", "Linux network diagnostics for the terminal")
    out += [".SH SYNOPSIS", ".B netkit", "[\\-\\-version] [\\-h] \\fICOMMAND\\fR [\\fIOPTIONS\\fR]"]
    out += [".SH DESCRIPTION", paragraphs(
        "netkit is a set of network diagnostics tools behind one command. Each tool pairs a "
        "backend that measures, an eBPF program compiled once with clang against the kernel's "
        "BTF (CO-RE) and loaded through libbpf, or a raw-socket prober, with a view that renders "
        "what it measured: rich tables and histograms on a terminal, aligned plain columns when "
        "the output is piped or NO_COLOR is set, and NDJSON with \\-\\-json.\n\n"
        "The tracing tools use only tracepoints and uprobes, so they run on kernels without "
        "kprobes. They need root, or CAP_BPF with CAP_PERFMON.")]
    out.append(".SH COMMANDS")
    for name, module in modules.items():
        out += [".TP", f".B {name}", esc(module.SUMMARY) + f" See netkit\\-{name}(8)."]
    out += [".TP", ".B completion [bash|zsh|fish] [\\-\\-install]",
            esc(completion.SUMMARY) + " The script completes subcommands, options and the values "
            "of options that have choices; \\-\\-install puts it in your home directory."]
    out += [".SH OPTIONS", ".TP", ".B \\-\\-version", "Print netkit's version and exit.",
            ".TP", ".B \\-h, \\-\\-help", "Show the list of commands and exit."]
    out += [".SH ENVIRONMENT", ".TP", ".B NO_COLOR",
            "When set, output is plain text even on a terminal."]
    out += [".SH EXIT STATUS", "0 on success, 1 when a tool cannot run, 2 for a usage error."]
    out += [".SH SEE ALSO",
            esc(", ".join([f"netkit-{n}(8)" for n in modules] + ["bpftrace(8)", "ss(8)"]))]
    return "\n".join(out) + "\n"


def generate(directory: Path) -> list[Path]:
    import typer._click as click
    directory.mkdir(parents=True, exist_ok=True)
    group = typer.main.get_command(build_app())
    root_ctx = click.Context(group, info_name="netkit")
    modules = tool_modules()
    written = [directory / "netkit.8"]
    written[0].write_text(index_page(modules))
    for name, module in modules.items():
        path = directory / f"netkit-{name}.8"
        path.write_text(tool_page(name, module, group.get_command(root_ctx, name), root_ctx))
        written.append(path)
    return written


if __name__ == "__main__":
    for page in generate(Path(sys.argv[1] if len(sys.argv) > 1 else "man")):
        print(page)
