"""The `netkit` command's first instructions. Ctrl-C and SIGTERM must end netkit cleanly from
the start: until netkit.cli.main takes them over (it turns them into the tools' Ctrl-C path),
nothing is attached and nothing printed, so a signal that arrives while Python imports typer,
rich and the tool ends the process at once, without an import's KeyboardInterrupt traceback."""
import os
import signal


def _leave_at_once(signum, frame):
    os._exit(0)


def main() -> None:
    signal.signal(signal.SIGINT, _leave_at_once)
    signal.signal(signal.SIGTERM, _leave_at_once)
    from netkit.cli import main as run
    run()
