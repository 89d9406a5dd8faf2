"""netkit.pyz's __main__ (tools/dist.py copies it in). The first import is netkit.entry, whose
own first instructions set netkit's early Ctrl-C/SIGTERM handlers, exactly as the installed
command does. The interpreter is checked next, before any module that needs 3.11 is read, so an
older python3 gets one line instead of a SyntaxError. This file stays valid Python 3.0 for that."""
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
