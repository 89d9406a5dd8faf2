#!/usr/bin/env python3
"""Run every benchmark in bench/ (each prints its own figures and ratios)."""
import subprocess
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
failed = 0
for script in sorted(here.glob("*.py")):
    if script.name == "run.py" or script.name.startswith("_"):     # helpers
        continue
    print(f"== {script.name}", flush=True)
    failed |= subprocess.run([sys.executable, str(script)]).returncode != 0
sys.exit(failed)
