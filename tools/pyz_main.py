"""netkit.pyz's __main__ (tools/dist.py copies it in). The first import is netkit.entry, whose
own first instructions set netkit's early Ctrl-C/SIGTERM handlers, exactly as the installed
command does. The interpreter is checked next, before any module that needs 3.11 is read, so an
older python3 gets one line instead of a SyntaxError. This file stays valid Python 3.0 for that.
The same handlers are set here first, through built-in modules: finding netkit.entry in the
archive takes long enough for a Ctrl-C to land in it (an import traceback, once in CI at 30 ms)."""
import _signal
import os


def _leave_at_once(signum, frame):
    os._exit(0)


_signal.signal(_signal.SIGINT, _leave_at_once)
_signal.signal(_signal.SIGTERM, _leave_at_once)

import netkit.entry
import sys

if sys.version_info < (3, 11):
    sys.stderr.write("netkit: needs Python 3.11 or newer; this python3 is %d.%d\n"
                     % sys.version_info[:2])
    sys.exit(1)

import os
import netkit.onefile

netkit.onefile.install(os.path.dirname(__file__))   # the archive: extensions load from memory
netkit.entry.main()
