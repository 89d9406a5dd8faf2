#!/usr/bin/env python3
"""`make dist`: dist/netkit.pyz (one file to copy onto a server) and dist/netkit-VERSION-py3-
none-linux_ARCH.whl (for pip and pipx), from a source tree where `make venv bpf` has run.

Both carry every netkit/bpf/*.bpf.o and every module under netkit/, found by walking the tree
(nothing to list when a tool is added), the objects stripped of DWARF (.BTF and .BTF.ext, which
libbpf needs, stay: 660 KB -> 38 KB for sockstat). The wheel is tagged for this machine's
architecture, which the objects were built for (endianness, __TARGET_ARCH). The man pages go
into the wheel's share/man/man8.

The pyz holds netkit and its dependencies at the versions of the project's venv (the ones the
tests ran against), taken as wheels into build/wheelhouse. A compiled one (psutil) goes in too:
netkit/onefile.py loads its extension from memory. It must be built for the stable ABI (abi3),
so that any python3 >= 3.11 can load it; `make dist` refuses any other. Every module is stored
as source and as bytecode for this interpreter (unchecked-hash .pyc beside the .py, which
zipimport prefers), so a start compiles nothing; another Python version compiles from the
sources at each start instead.
"""
from __future__ import annotations

import os
import py_compile
import shutil
import subprocess
import sys
import zipapp
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "dist"
STAGE = BUILD / "stage"              # the source tree as the wheel is built from it
PYZ_ROOT = BUILD / "pyz"             # what goes into netkit.pyz
WHEELHOUSE = ROOT / "build" / "wheelhouse"
DIST = ROOT / "dist"
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, cwd=ROOT)


def version() -> str:
    namespace: dict = {}
    exec((ROOT / "netkit" / "__init__.py").read_text(), namespace)
    return namespace["__version__"]


def check_objects() -> list[Path]:
    """Every bpf_programs/<tool>.bpf.c has its object, newer than the source."""
    objects = []
    for source in sorted((ROOT / "bpf_programs").glob("*.bpf.c")):
        obj = ROOT / "netkit" / "bpf" / source.name.replace(".bpf.c", ".bpf.o")
        if not obj.exists() or obj.stat().st_mtime < source.stat().st_mtime:
            sys.exit(f"dist: {obj.relative_to(ROOT)} is missing or stale: run `make bpf` first")
        objects.append(obj)
    return objects


def stage(objects: list[Path]) -> None:
    shutil.rmtree(STAGE, ignore_errors=True)
    STAGE.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "man"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, STAGE / name)
    shutil.copytree(ROOT / "netkit", STAGE / "netkit", ignore=SKIP)
    strip = os.environ.get("LLVM_STRIP", "llvm-strip")
    for obj in objects:
        run(strip, "--strip-debug", str(obj), "-o", str(STAGE / "netkit" / "bpf" / obj.name))


def build_wheel() -> Path:
    platform = f"linux_{os.uname().machine}"
    out = BUILD / "wheel"
    shutil.rmtree(out, ignore_errors=True)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
        f"--config-settings=--build-option=--plat-name={platform}", str(STAGE))
    (wheel,) = out.glob("netkit-*.whl")
    for old in DIST.glob("netkit-*.whl"):
        old.unlink()
    DIST.mkdir(exist_ok=True)
    return Path(shutil.copy2(wheel, DIST / wheel.name))


def fill_wheelhouse(wheel: Path) -> list[Path]:
    """The wheels of netkit's run-time dependencies, resolved by pip from the wheel's metadata
    (markers and all) and pinned to what the venv has."""
    shutil.rmtree(WHEELHOUSE, ignore_errors=True)
    WHEELHOUSE.mkdir(parents=True)
    pins = WHEELHOUSE / "venv-constraints.txt"
    pins.write_text(subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                                   check=True, capture_output=True, text=True).stdout)
    run(sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d",
        str(WHEELHOUSE), "-c", str(pins), str(wheel))
    (WHEELHOUSE / wheel.name).unlink(missing_ok=True)
    return sorted(WHEELHOUSE.glob("*.whl"))


def build_pyz(dependencies: list[Path]) -> Path:
    tied = [dep.name for dep in dependencies
            if not dep.name.endswith("-none-any.whl") and "-abi3-" not in dep.name]
    if tied:
        sys.exit(f"dist: {', '.join(tied)} hold compiled code for one Python version only, which "
                 f"the pyz could not load under another python3: only pure-Python and abi3 "
                 f"wheels can go into netkit.pyz")
    shutil.rmtree(PYZ_ROOT, ignore_errors=True)
    shutil.copytree(STAGE / "netkit", PYZ_ROOT / "netkit")
    for dep in dependencies:
        with zipfile.ZipFile(dep) as whl:
            whl.extractall(PYZ_ROOT)
    shutil.copy2(ROOT / "tools" / "pyz_main.py", PYZ_ROOT / "__main__.py")
    for source in PYZ_ROOT.rglob("*.py"):
        py_compile.compile(str(source), cfile=str(source) + "c", doraise=True,
                           dfile=str(source.relative_to(PYZ_ROOT)),
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    target = DIST / "netkit.pyz"
    zipapp.create_archive(PYZ_ROOT, target, interpreter="/usr/bin/env python3", compressed=True)
    return target


def main() -> None:
    objects = check_objects()
    stage(objects)
    wheel = build_wheel()
    dependencies = fill_wheelhouse(wheel)
    pyz = build_pyz(dependencies)
    for artefact in (pyz, wheel):
        print(f"{artefact.relative_to(ROOT)}  {artefact.stat().st_size / 1e6:.1f} MB")
    print(f"{len(objects)} BPF objects, {len(dependencies)} dependencies: "
          f"{', '.join(dep.name.split('-')[0] for dep in dependencies)}")


if __name__ == "__main__":
    main()
