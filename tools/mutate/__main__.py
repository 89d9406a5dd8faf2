"""make mutate: plant each mutant of tools/mutate/mutants.py, one at a time, in a scratch copy of
the tree, run the tests that should notice it, and print which were killed.

    python -m tools.mutate              all mutants
    python -m tools.mutate 3 17         only these
    python -m tools.mutate --list       what they are

A mutant is a small, plausible bug (two counters swapped, a unit off by 1000, an estimator
without its t-factor, a ranking reversed). It is killed when its tests fail. The scratch copy
lives in /tmp/netkit-mutate-<tree directory name>; it reuses this tree's venv (PYTHONPATH puts
the copy first) and BPF build, and rebuilds an object only when a mutant is in C. Not part of
CI: it takes a while.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# One scratch copy per tree, so that mutation runs from two worktrees never share one.
SCRATCH = Path(os.environ.get("NETKIT_MUTATE_DIR", f"/tmp/netkit-mutate-{ROOT.name}"))
TIMEOUT = 1800
LOCK = "/tmp/netkit-heavy.lock"


def locked(command: list[str]) -> list[str]:
    """command run under the shared heavy lock (one heavy run at a time on a shared machine:
    the test bed times links, and clang is heavy)."""
    return (["flock", LOCK] if shutil.which("flock") else []) + command


def copy_tree() -> None:
    if SCRATCH.exists():
        shutil.rmtree(SCRATCH)
    ignore = shutil.ignore_patterns(".git", ".venv", ".hypothesis", "__pycache__", "dist")
    shutil.copytree(ROOT, SCRATCH, ignore=ignore, symlinks=True)


def run_tests(tests: list[str]) -> tuple[bool, float, str]:
    env = {**os.environ, "PYTHONPATH": str(SCRATCH), "CI": "true", "NETKIT_REQUIRE_BPF": "1",
           "PYTHONDONTWRITEBYTECODE": "1"}
    started = time.monotonic()
    try:
        result = subprocess.run(locked([sys.executable, "-m", "pytest", "-x", "-q", "-p",
                                        "no:cacheprovider", *tests]), cwd=SCRATCH, env=env,
                                capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return False, time.monotonic() - started, "timed out"
    tail = (result.stdout.strip().splitlines() or [""])[-1]
    return result.returncode == 0, time.monotonic() - started, tail


def rebuild(path: Path) -> bool:
    """The BPF objects again after a mutant in C; False when the mutant does not compile."""
    if path.suffix not in (".c", ".h"):
        return True
    return subprocess.run(locked(["make", "-s", "-C", str(SCRATCH), "bpf"]),
                          capture_output=True).returncode == 0


def main(argv: list[str]) -> int:
    from tools.mutate.mutants import MUTANTS
    if argv[:1] == ["--list"]:
        for n, m in enumerate(MUTANTS, 1):
            print(f"{n:3} {m.area:10} {m.file}: {m.what}")
        return 0
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    bad = [a for a in argv if not a.isdecimal() or not 1 <= int(a) <= len(MUTANTS)]
    if bad:
        print(f"mutate: no mutant {bad[0]!r} (numbers 1 to {len(MUTANTS)}; --list names them)",
              file=sys.stderr)
        return 2
    chosen = [int(a) for a in argv] or list(range(1, len(MUTANTS) + 1))
    copy_tree()
    killed, survived = [], []
    for n in chosen:
        m = MUTANTS[n - 1]
        path = SCRATCH / m.file
        original = path.read_text()
        if original.count(m.old) != 1:
            print(f"{n:3} BROKEN    {m.file}: the text to change is not there exactly once",
                  flush=True)
            survived.append(n)
            continue
        objects = {p: p.read_bytes() for p in (SCRATCH / "netkit" / "bpf").glob("*.o")}
        try:
            path.write_text(original.replace(m.old, m.new))
            if not rebuild(path):
                print(f"{n:3} BROKEN    {m.file}: the mutant does not compile", flush=True)
                survived.append(n)
                continue
            passed, seconds, tail = run_tests(m.tests)
        finally:
            path.write_text(original)
            for obj, data in objects.items():
                obj.write_bytes(data)
        (survived if passed else killed).append(n)
        verdict = "SURVIVED" if passed else "killed  "
        print(f"{n:3} {verdict} {m.area:10} {m.what}  [{seconds:.0f} s: {tail}]", flush=True)
    total = len(killed) + len(survived)
    print(f"\n{len(killed)} of {total} mutants killed ({100 * len(killed) / total:.0f}%)"
          + (f"; survived: {' '.join(map(str, survived))}" if survived else ""))
    return 0


if __name__ == "__main__":
    try:
        status = main(sys.argv[1:])
        sys.stdout.flush()
    except BrokenPipeError:
        # `python -m tools.mutate --list | head`: stop writing, as netkit's own commands do.
        from netkit.cli.tool import quiet_stdout
        quiet_stdout()
        status = 0
    sys.exit(status)
