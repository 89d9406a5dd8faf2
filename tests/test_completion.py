"""Shell completion through the installed command, as the shells run it: a real bash sources the
script `netkit completion bash` prints and calls its completion function; zsh's and fish's
scripts are driven through the environment they set (those shells are not installed here)."""
from __future__ import annotations

import os
import subprocess

from conftest import NETKIT, assert_one_line_error, run_netkit
from netkit.cli import tool_names


def bash_completions(words: list[str], home: str | None = None) -> list[str]:
    """COMPREPLY of netkit's bash completion for a line whose last word is being completed."""
    script = ('source <(netkit completion bash)\n' if home is None else 'source ~/.bashrc\n') + (
        f'COMP_WORDS=({" ".join(words)}); COMP_CWORD={len(words) - 1}\n'
        '_netkit_completion netkit\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n')
    env = {**os.environ, "PATH": f"{NETKIT.parent}:{os.environ['PATH']}"}
    if home:
        env["HOME"] = home
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and not result.stderr, result.stderr
    return result.stdout.split()


def completion_run(shell: str, line: str, **env: str) -> str:
    """What netkit answers when zsh's or fish's script asks for `line` (as typed so far)."""
    result = subprocess.run([str(NETKIT)], capture_output=True, text=True, timeout=30,
                            env={**os.environ, "_NETKIT_COMPLETE": f"complete_{shell}",
                                 "_TYPER_COMPLETE_ARGS": line, **env})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_bash_completes_the_tools_that_start_with_what_was_typed():
    expected = sorted(name for name in tool_names() if name.startswith("so"))
    assert len(expected) >= 2                                    # sockstat, soconnlat at least
    assert sorted(bash_completions(["netkit", "so"])) == expected


def test_bash_completes_a_tools_options_and_choice_values():
    assert "--duration" in bash_completions(["netkit", "sockstat", "--d"])
    assert bash_completions(["netkit", "sockstat", "--du"]) == ["--duration"]
    assert bash_completions(["netkit", "completion", "''"]) == ["bash", "zsh", "fish"]


def test_zsh_and_fish_get_names_with_help():
    zsh = completion_run("zsh", "netkit so")
    assert zsh.startswith("_arguments") and '"sockstat":"Socket syscalls' in zsh
    fish = completion_run("fish", "netkit sockstat --d", _TYPER_COMPLETE_FISH_ACTION="get-args")
    assert any(line.startswith("--duration\tStop after") for line in fish.splitlines()), fish


def test_scripts_for_each_shell_call_netkit_back():
    for shell, marker in (("bash", "complete -o default -F _netkit_completion netkit"),
                          ("zsh", "compdef _netkit_completion netkit"),
                          ("fish", "complete --command netkit")):
        result = run_netkit("completion", shell)
        assert result.returncode == 0 and marker in result.stdout, (shell, result.stdout)
        assert "_NETKIT_COMPLETE=complete_" + shell in result.stdout


def test_the_shell_is_detected_from_the_process_tree():
    # `; true` keeps bash from exec'ing netkit, so bash stays its parent.
    env = {**os.environ, "PATH": f"{NETKIT.parent}:{os.environ['PATH']}", "SHELL": "/bin/sh"}
    out = subprocess.run(["bash", "--norc", "-c", "netkit completion; true"], env=env,
                         capture_output=True, text=True, timeout=30).stdout
    assert "complete -o default -F _netkit_completion netkit" in out


def test_install_puts_a_working_script_in_home(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path)}
    result = run_netkit("completion", "bash", "--install", env=env)
    assert result.returncode == 0 and str(tmp_path / ".bash_completions") in result.stdout
    assert "sockstat" in bash_completions(["netkit", "so"], home=str(tmp_path))
    result = run_netkit("completion", "fish", "--install", env=env)
    installed = tmp_path / ".config" / "fish" / "completions" / "netkit.fish"
    assert installed.read_text().strip() == run_netkit("completion", "fish").stdout.strip()


def test_an_unknown_shell_is_one_line():
    assert "'tcsh' is not one of" in assert_one_line_error(run_netkit("completion", "tcsh"),
                                                           "completion", code=2)
