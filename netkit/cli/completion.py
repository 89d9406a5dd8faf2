"""`netkit completion [SHELL]`: shell completion for bash, zsh and fish, on typer's completion
scripts and classes (subcommands, options, and the values of options that have choices).

At each TAB the script runs `netkit` again with _NETKIT_COMPLETE set (`complete_bash`...) and the
words typed so far in the environment. netkit.cli.main drives click itself (make_context,
invoke), so typer's hook in its own _main never sees that variable: main() hands such a run to
complete() first. As for a real run, only the tool named on the line is imported, so a TAB costs
one start-up; the list of tools (`netkit so<TAB>`) needs them all for zsh's and fish's help
texts.
"""
from __future__ import annotations

import os
from enum import Enum

import typer

from netkit.engine.errors import UsageError

PROG = "netkit"
COMPLETE_VAR = "_NETKIT_COMPLETE"
SUMMARY = "Print or install the completion script for bash, zsh or fish."


def requested() -> bool:
    return bool(os.environ.get(COMPLETE_VAR))


def words_typed() -> list[str]:
    """The words before the one being completed, without the command itself. bash passes the
    line in COMP_WORDS/COMP_CWORD; typer's zsh and fish scripts in _TYPER_COMPLETE_ARGS (with
    the word being completed at the end, which names no tool unless it is complete)."""
    from typer._click.shell_completion import split_arg_string
    if "COMP_WORDS" in os.environ:
        words = split_arg_string(os.environ["COMP_WORDS"])
        return words[1:int(os.environ.get("COMP_CWORD", len(words)))]
    return split_arg_string(os.environ.get("_TYPER_COMPLETE_ARGS", ""))[1:]


def complete(build_command, tool_of) -> int:
    """Answer the shell's completion request: `build_command(only)` makes the click command,
    `tool_of(words)` finds the tool on the line."""
    from typer.completion import completion_init, shell_complete
    completion_init()
    command = build_command(tool_of(words_typed()))
    return shell_complete(command, {}, PROG, COMPLETE_VAR, os.environ[COMPLETE_VAR])


class Shell(str, Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def detected_shell() -> Shell:
    """The shell netkit was started from (the process tree, as typer finds it), else $SHELL."""
    from typer._completion_shared import _get_shell_name
    name = _get_shell_name() or os.path.basename(os.environ.get("SHELL", ""))
    try:
        return Shell(name)
    except ValueError:
        raise UsageError(f"cannot complete for the shell {name or '(unknown)'}; name one of "
                         f"{', '.join(s.value for s in Shell)}") from None


def command(shell: Shell | None = typer.Argument(
                None, metavar="[SHELL]",
                help="bash, zsh or fish (default: the shell netkit runs under)."),
            install: bool = typer.Option(False, "--install", help=(
                "Install the script where typer puts it instead of printing it: bash "
                "~/.bash_completions/netkit.sh (sourced from ~/.bashrc), zsh ~/.zfunc/_netkit, "
                "fish ~/.config/fish/completions/netkit.fish."))):
    """Print (or --install) the shell completion script: subcommands, options and their values
    complete at TAB.

    bash: `netkit completion bash > /etc/bash_completion.d/netkit`, or
    `source <(netkit completion bash)` in ~/.bashrc. A TAB runs netkit once (about 0.1 s)."""
    from typer._completion_shared import get_completion_script, install as install_script
    shell = shell or detected_shell()
    if install:
        _, path = install_script(shell=shell.value, prog_name=PROG, complete_var=COMPLETE_VAR)
        print(f"{shell.value} completion for netkit installed in {path}; new shells have it")
    else:
        print(get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR,
                                    shell=shell.value))
