"""The `netkit` command's first instructions. Ctrl-C and SIGTERM must end netkit cleanly from
the start: until netkit.cli.main takes them over (it turns them into the tools' Ctrl-C path),
nothing is attached and nothing printed, so a signal that arrives while Python imports typer,
rich and the tool ends the process at once, without an import's KeyboardInterrupt traceback.
The handlers are set at import, first thing, through the built-in _signal module (nothing to
find on disk first)."""
import _signal
import os


def _leave_at_once(signum, frame):
    os._exit(0)


_signal.signal(_signal.SIGINT, _leave_at_once)
_signal.signal(_signal.SIGTERM, _leave_at_once)


def main() -> None:
    from netkit.cli import main as run
    run()
