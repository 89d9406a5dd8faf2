"""Man pages are generated from the CLI: the committed ones must be what the generator writes
now, and groff must render each without a warning."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

from conftest import ROOT, require_or_skip


def test_committed_man_pages_are_current(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "tools" / "genman.py"), str(tmp_path)], check=True,
                   capture_output=True)
    generated = {p.name: p.read_text() for p in tmp_path.glob("*.8")}
    committed = {p.name: p.read_text() for p in (ROOT / "man").glob("*.8")}
    assert sorted(generated) == sorted(committed), "run `make man` and commit man/"
    for name, text in generated.items():
        assert committed[name] == text, f"man/{name} is stale: run `make man` and commit man/"


def test_man_pages_render_without_warnings():
    if not shutil.which("groff"):
        require_or_skip("groff is not installed")
    for page in sorted((ROOT / "man").glob("*.8")):
        result = subprocess.run(["groff", "-ww", "-man", "-Tutf8", str(page)], capture_output=True,
                                text=True)
        assert result.returncode == 0 and result.stderr == "", (page.name, result.stderr)
        text = re.sub(r".\x08", "", result.stdout)         # grotty's overstrike for bold
        for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SEE ALSO"):
            assert section in text, (page.name, section)
