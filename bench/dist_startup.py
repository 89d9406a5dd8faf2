#!/usr/bin/env python3
"""Start-up of the one-file netkit against the installed command: `python3 dist/netkit.pyz
sockstat -d 0` and `.venv/bin/netkit sockstat -d 0` (load, attach, detach, exit), run
alternately, medians of wall time and peak RSS. Target (issue 18): the pyz within 1.3x of the
installed command. `make bench` builds dist/ first."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from sockstat_startup import alternating_medians

ROOT = Path(__file__).resolve().parent.parent
PYZ = ROOT / "dist" / "netkit.pyz"
INSTALLED = [str(ROOT / ".venv" / "bin" / "netkit"), "sockstat", "-d", "0"]
# The python3 that `sudo python3 netkit.pyz` runs: the first on sudo's secure_path (a pyenv shim
# earlier on a user's PATH would add its own ~100 ms).
SECURE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ONE_FILE = [shutil.which("python3", path=SECURE_PATH) or "python3", str(PYZ), "sockstat", "-d", "0"]


def main(rounds: int = 15) -> None:
    if not PYZ.exists():
        sys.exit("dist/netkit.pyz is not built (make dist)")
    med = alternating_medians({"installed": INSTALLED, "netkit.pyz": ONE_FILE}, rounds)
    print(f"sockstat -d 0 start-up, {rounds} alternating rounds (median); "
          f"netkit.pyz is {PYZ.stat().st_size / 1e6:.1f} MB")
    print(f"{'':12} {'wall s':>8} {'peak RSS MiB':>13}")
    for name, (wall, rss) in med.items():
        print(f"{name:12} {wall:8.3f} {rss:13.1f}")
    print(f"ratio netkit.pyz/installed: wall {med['netkit.pyz'][0] / med['installed'][0]:.2f}x "
          f"(target <= 1.30), peak RSS {med['netkit.pyz'][1] / med['installed'][1]:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
