"""`make dist` and what it makes, used the way a user on another host would: netkit.pyz run by a
bare python3 (env -i, a PATH of python3 and coreutils only: no clang, bpftool or pip) counting a
known workload exactly, and the wheel installed into a fresh venv from the file, with no index.
Both artefacts are built once for the session (about 5 s)."""
from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, Traced, require_or_skip, require_root_bpf
from netkit.cli import tool_names
from test_sockstat import Workload, assert_counts, summary_of

DIST = ROOT / "dist"
WHEELHOUSE = ROOT / "build" / "wheelhouse"
PYTHON3 = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")


@pytest.fixture(scope="session")
def built():
    """dist/netkit.pyz and dist/netkit-*.whl, made by `make dist` in this tree."""
    if not (shutil.which("make") and shutil.which("llvm-strip")):
        require_or_skip("make dist needs make and llvm-strip (tools/bootstrap.sh installs them)")
    result = subprocess.run(["make", "-s", "-C", str(ROOT), "dist"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = DIST.glob("netkit-*.whl")
    return DIST / "netkit.pyz", wheel


@pytest.fixture(scope="session")
def bare_path(tmp_path_factory) -> str:
    """A directory of symlinks to python3 and coreutils' programs, and nothing else."""
    if PYTHON3 is None:
        require_or_skip("no python3 on this host")
    bare = tmp_path_factory.mktemp("bare-bin")
    os.symlink(PYTHON3, bare / "python3")
    files = subprocess.run(["dpkg", "-L", "coreutils"], capture_output=True, text=True,
                           check=True).stdout.split()
    for program in map(Path, files):
        if program.parent.name == "bin" and program.is_file() and os.access(program, os.X_OK):
            if not (bare / program.name).exists():
                os.symlink(program, bare / program.name)
    for absent in ("clang", "bpftool", "pip", "pip3", "cc", "gcc", "llvm-strip", "make"):
        assert shutil.which(absent, path=str(bare)) is None, absent
    assert shutil.which("ls", path=str(bare)) and shutil.which("python3", path=str(bare))
    return str(bare)


def bare_env(bare_path: str, tmp: Path) -> dict:
    return {"PATH": bare_path, "TMPDIR": str(tmp)}


def objects_in(names: list[str], prefix: str) -> set[str]:
    return {Path(n).name for n in names if re.fullmatch(rf"{prefix}netkit/bpf/\w+\.bpf\.o", n)}


# -- what the artefacts hold -------------------------------------------------------------------
def test_both_carry_every_file_of_the_package_and_every_object(built):
    """The tree's netkit/ as it is (every tool module, every object, any data file a tool adds),
    found by walking it: nothing listed here goes stale as tools arrive."""
    pyz, wheel = built
    package = ROOT / "netkit"
    tree = {str(p.relative_to(ROOT)) for p in package.rglob("*") if p.is_file()
            and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert {f"netkit/bpf/{p.name.replace('.c', '.o')}"
            for p in (ROOT / "bpf_programs").glob("*.bpf.c")} <= tree
    assert "netkit/tools/sockstat.py" in tree and "netkit/bpf/sockstat.bpf.o" in tree
    for archive in (pyz, wheel):
        names = zipfile.ZipFile(archive).namelist()
        assert {n for n in names if n.startswith("netkit/") and n[-1] != "/"
                and not n.endswith(".pyc")} == tree, archive
    names = set(zipfile.ZipFile(pyz).namelist())
    assert {f"{n}c" for n in tree if n.endswith(".py")} <= names   # a start compiles nothing
    for dependency in ("typer", "rich", "prometheus_client"):
        assert f"{dependency}/__init__.py" in names and f"{dependency}/__init__.pyc" in names


def test_the_wheel_is_tagged_for_this_architecture_and_ships_man_pages(built):
    _, wheel = built
    assert wheel.name.endswith(f"-py3-none-linux_{os.uname().machine}.whl"), wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    pages = {Path(n).name for n in names if "/data/share/man/man8/" in n}
    assert pages == {p.name for p in (ROOT / "man").glob("*.8")}
    assert {"netkit.8", "netkit-sockstat.8"} <= pages


# -- the pyz on a host with only python3 --------------------------------------------------------
def run_pyz(pyz: Path, args: list[str], env: dict, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["python3", str(pyz), *args], env=env, capture_output=True, text=True,
                          timeout=60, **kwargs)


def tools_with_duration() -> list[str]:
    """The tools that take -d (all but the probers and export), found from their options."""
    import typer.main
    from netkit.cli import build_app
    commands = typer.main.get_command(build_app()).commands
    return [name for name, command in commands.items()
            if any("-d" in param.opts for param in command.params)]


@pytest.mark.kernel
def test_pyz_runs_every_tool_under_a_bare_environment(built, bare_path, tmp_path):
    """`-d 0`: open, load, attach, detach, exit, for each tool as the pyz carries it. A tool that
    cannot run on this host (ieee80211scan without wireless) must say so as the installed
    command does."""
    require_root_bpf()
    pyz, _ = built
    tools = tools_with_duration()
    assert {"sockstat", "soconnect", "udpconnect"} <= set(tools)   # udpconnect: soconnect.bpf.o
    for tool in tools:
        result = run_pyz(pyz, [tool, "-d", "0"], bare_env(bare_path, tmp_path), cwd=tmp_path)
        assert "Traceback" not in result.stderr, (tool, result.stderr)
        if result.returncode != 0:
            installed = subprocess.run([str(ROOT / ".venv" / "bin" / "netkit"), tool, "-d", "0"],
                                       capture_output=True, text=True, timeout=60)
            assert (result.returncode, result.stderr) == (installed.returncode,
                                                          installed.stderr), tool
    assert run_pyz(pyz, ["sockstat", "-d", "0"], bare_env(bare_path, tmp_path)).returncode == 0
    assert list(tmp_path.iterdir()) == []       # objects came from memory: nothing extracted


@pytest.mark.kernel
def test_pyz_counts_the_sockstat_workload_exactly(built, bare_path, tmp_path):
    require_root_bpf()
    pyz, _ = built
    workload = Workload()
    try:
        tool = Traced(["sockstat", "-p", str(workload.pid), "--json", "0.2"],
                      command=["python3", str(pyz)], env=bare_env(bare_path, tmp_path))
        workload.run()
        time.sleep(0.3)
        out, err = tool.finish()
    finally:
        workload.release()
    assert tool.proc.returncode == 0, err
    summary = summary_of(out)
    assert_counts(summary)
    assert [p["pid"] for p in summary["top"]] == [workload.pid]


# Run with one netkit first on sys.path (the pyz by a bare python3, or this tree by the venv's
# python, which has the dependencies): imports every tool module, loads every object through the
# package loader as a tool would, and prints {tool: "loaded" or the one-line error}. A program
# whose target this kernel lacks is left unloaded, as a tool's optional programs are.
LOAD_EVERY_OBJECT = """
import importlib, json, pkgutil, sys
sys.path.insert(0, sys.argv[1])
import netkit, netkit.tools
from netkit.engine.bpfobject import BPFObject
from netkit.engine.errors import NetkitError

class EveryTarget(set):
    def __contains__(self, target):
        return True

for module in pkgutil.iter_modules(netkit.tools.__path__):
    importlib.import_module("netkit.tools." + module.name)
outcome = {"netkit": netkit.__file__}
for name in sys.argv[2:]:
    tool = name.split(".")[0]
    try:
        with BPFObject(tool, optional=EveryTarget()) as obj:
            obj.open()
            obj.load()
        outcome[tool] = "loaded"
    except NetkitError as error:
        outcome[tool] = str(error)
print(json.dumps(outcome))
"""


@pytest.mark.kernel
def test_every_object_in_the_pyz_loads_as_the_trees_does(built, bare_path, tmp_path):
    """The pyz's objects are stripped of DWARF: each must load (BTF, CO-RE relocations, the
    verifier) exactly as the unstripped one of this tree, and every tool module must import
    from the zip."""
    require_root_bpf()
    pyz, _ = built
    names = sorted(objects_in(zipfile.ZipFile(pyz).namelist(), ""))
    outcomes = {}
    for where, python in ((pyz, "python3"), (ROOT, str(ROOT / ".venv" / "bin" / "python"))):
        result = subprocess.run([python, "-c", LOAD_EVERY_OBJECT, str(where), *names],
                                env=bare_env(bare_path, tmp_path), cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        outcomes[where] = json.loads(result.stdout)
        assert outcomes[where].pop("netkit").startswith(str(where))
    assert outcomes[pyz] == outcomes[ROOT]
    assert set(outcomes[pyz]) == {name.split(".")[0] for name in names}
    assert outcomes[pyz]["sockstat"] == "loaded" and outcomes[pyz]["soconnlat"] == "loaded"


def test_pyz_help_version_and_completion_need_no_root(built, bare_path, tmp_path):
    pyz, _ = built
    env = bare_env(bare_path, tmp_path)
    assert run_pyz(pyz, ["--version"], env).stdout.strip() == "netkit 0.1.0"
    listing = run_pyz(pyz, ["--help"], env).stdout
    listed = {line.split()[0] for line in listing.splitlines() if line.startswith("  ")}
    assert {*tool_names(), "completion"} <= listed, listing
    completed = run_pyz(pyz, [], {**env, "_NETKIT_COMPLETE": "complete_bash",
                                  "COMP_WORDS": "netkit so", "COMP_CWORD": "1"})
    assert {"sockstat", "soconnlat"} <= set(completed.stdout.split()), completed.stderr
    assert all(word.startswith("so") for word in completed.stdout.split())


# psutil (netkit top's interfaces) is compiled: zipimport cannot load its extension module,
# netkit/onefile.py does, from a memfd. The script sets it up as the pyz's __main__.py does.
IMPORT_PSUTIL = """
import json, os, sys
pyz = sys.argv[1]
sys.path.insert(0, pyz)
import netkit.onefile
netkit.onefile.install(pyz)
lo = "/sys/class/net/lo/statistics/rx_packets"
before = int(open(lo).read())
import psutil, psutil._psutil_linux as extension
received = psutil.net_io_counters(pernic=True)["lo"].packets_recv
after = int(open(lo).read())
me = psutil.Process()
print(json.dumps({"psutil": psutil.__file__, "extension": extension.__file__,
                  "lo": before <= received <= after, "pid": me.pid == os.getpid(),
                  "ppid": me.ppid() == os.getppid(),
                  "exe": me.exe() == os.path.realpath(sys.executable)}))
"""


def test_pyz_loads_its_compiled_dependency_from_memory(built, bare_path, tmp_path):
    pyz, _ = built
    assert any(n.startswith("psutil/_psutil_linux.") for n in zipfile.ZipFile(pyz).namelist())
    result = subprocess.run(["python3", "-c", IMPORT_PSUTIL, str(pyz)], cwd=tmp_path,
                            env=bare_env(bare_path, tmp_path), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["psutil"].startswith(f"{pyz}/psutil/")                # the pyz's, not the host's
    assert re.fullmatch(r"/proc/self/fd/\d+", seen["extension"])      # a memfd, no file
    assert seen["lo"] and seen["pid"] and seen["ppid"] and seen["exe"], seen
    assert list(tmp_path.iterdir()) == []


def interpreter_not_yet_up(err: str) -> bool:
    """CPython's own fatal error for a signal during its core initialisation (importing io for
    sys.stdout, before site or the pyz's __main__ ran): no frame of the pyz in it."""
    return (err.startswith("Fatal Python error: init_") and
            not [p for p in re.findall(r'File "([^"]+)"', err) if not p.startswith(("<", "/"))])


def pyz_frames_before_handlers(err: str) -> bool:
    """A KeyboardInterrupt traceback from before netkit/entry.py set its handlers: the frames
    from the pyz (netkit/..., __main__.py) are only those that lead there; the rest are the
    interpreter's own start-up (its site module, zipimport)."""
    entry = (ROOT / "netkit" / "entry.py").read_text().splitlines()
    first = next(n for n, line in enumerate(entry, 1) if line.startswith("_signal."))
    main = (ROOT / "tools" / "pyz_main.py").read_text().splitlines()
    imports_entry = main.index("import netkit.entry") + 1
    allowed = {("__main__.py", imports_entry), ("netkit/__init__.py", None)} | {
        ("netkit/entry.py", n) for n in range(1, first)}
    for path, line in re.findall(r'File "([^"]+)", line (\d+)', err):
        from_pyz = not path.startswith(("<", "/"))      # its files are named relative to it
        if from_pyz and (path, int(line)) not in allowed and (path, None) not in allowed:
            return False
    return "KeyboardInterrupt" in err


@pytest.mark.kernel
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_pyz_ends_cleanly_on_a_signal_from_its_first_instruction(built, bare_path, tmp_path,
                                                                 signum):
    require_root_bpf()
    pyz, _ = built
    for delay in (0.0, 0.01, 0.03, 0.06, 0.1, 0.3):
        proc = subprocess.Popen(["python3", str(pyz), "sockstat"], env=bare_env(bare_path,
                                                                                 tmp_path),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=10)
        if proc.returncode == 1 and pyz_frames_before_handlers(err):
            continue                    # Python's own start-up, before any netkit instruction
        if interpreter_not_yet_up(err):
            continue                    # earlier still: CI met one at 10 ms (init_sys_streams)
        assert "Traceback" not in err, (delay, err)
        # -signum: the signal came before the interpreter ran netkit's first instruction. Never
        # -SIGINT for a SIGTERM (tests/test_cli.py's signal inside exec shows why it could be).
        assert proc.returncode in (0, -signum), (delay, proc.returncode, err)


@pytest.mark.kernel
@pytest.mark.parametrize("hide", ["libbpf", "btf"])
def test_pyz_says_in_one_line_what_a_host_lacks(built, bare_path, tmp_path, hide):
    """A host without libbpf.so.1 or without kernel BTF, made here in a mount namespace."""
    require_root_bpf()
    pyz, _ = built
    if hide == "libbpf":
        ctypes.CDLL("libbpf.so.1")
        lib = next(line.split()[-1] for line in open("/proc/self/maps") if "/libbpf.so" in line)
        cover = f"mount --bind /dev/null {lib}"
        expected = "install libbpf1 (Debian, Ubuntu) or libbpf (Fedora, RHEL, Alpine, Arch)"
    else:
        cover = "mount -t tmpfs none /sys/kernel/btf"
        expected = "this kernel has no BTF"
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"{cover} && exec python3 {pyz} sockstat -d 0"],
        env={**bare_env(bare_path, tmp_path), "PATH": f"{bare_path}:/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netkit sockstat: "), result.stderr
    assert expected in lines[0]


# -- the wheel in a fresh venv ----------------------------------------------------------------
@pytest.fixture(scope="session")
def wheel_venv(built, tmp_path_factory) -> Path:
    """A new venv (its own pip) that installed the wheel from the file and its dependencies from
    build/wheelhouse: no index, no sdist, no compiler on PATH."""
    _, wheel = built
    venv = tmp_path_factory.mktemp("wheel") / "venv"
    subprocess.run([PYTHON3 or sys.executable, "-m", "venv", str(venv)], check=True)
    result = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--only-binary=:all:",
         "--find-links", str(WHEELHOUSE), str(wheel)],
        env={"PATH": str(venv / "bin"), "HOME": str(venv), "PIP_CONFIG_FILE": os.devnull},
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return venv


@pytest.mark.kernel
def test_wheel_installs_offline_and_runs(wheel_venv, tmp_path):
    require_root_bpf()
    netkit = wheel_venv / "bin" / "netkit"
    located = subprocess.run([str(wheel_venv / "bin" / "python"), "-c",
                              "import netkit; print(netkit.__file__)"], cwd=tmp_path,
                             capture_output=True, text=True, check=True).stdout
    assert located.startswith(str(wheel_venv))        # the installed copy, not this tree
    result = subprocess.run([str(netkit), "soconnlat", "-d", "0"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr


def test_wheel_man_pages_are_found_by_man(wheel_venv):
    if not shutil.which("man"):
        require_or_skip("man-db is not installed")
    page = wheel_venv / "share" / "man" / "man8" / "netkit-sockstat.8"
    rendered = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True,
                              env={**os.environ, "MANPAGER": "cat", "MANWIDTH": "80"},
                              timeout=30)
    assert rendered.returncode == 0 and "netkit-sockstat" in rendered.stdout, rendered.stderr
    # man-db derives <dir>/../share/man from each PATH entry: the venv's bin on PATH is enough.
    found = subprocess.run(["man", "-w", "netkit-sockstat"], capture_output=True, text=True,
                           env={"PATH": f"{wheel_venv / 'bin'}:/usr/bin:/bin"}, timeout=30)
    assert found.stdout.strip() == str(page), found.stderr
