"""Latency of host name lookups through libc: getaddrinfo(3), gethostbyname(3), gethostbyname2
and their _r variants, one line per call with the time it took, the name and the result.

Uprobes on the libc that the traced processes use (found from /proc/PID/maps with -p, else from
the ld.so cache; --libc overrides). Only the outermost call of a thread is reported:
gethostbyname() runs gethostbyname_r() inside and counts once. Like bcc's gethostlatency.
"""
from __future__ import annotations

import errno
import os
import platform
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from netkit.cli.loop import Loop
from netkit.cli.options import (CgroupOpt, DurationOpt, JsonOpt, MillisecondsOpt, NameOpt,
                                NoColorOpt, PidOpt, VerboseOpt)
from netkit.cli.tool import ManPage, open_output
from netkit.engine.errors import NetkitError
from netkit.render.output import Column

SUMMARY = "Latency of getaddrinfo/gethostbyname calls per process and host (libc uprobes)."

RETURN_PROGRAM = "lookup_return"     # the uretprobe program, attached to every function
HERRNO_UNKNOWN = -1000          # gethostlatency.h's enum herrno_value (tests/test_engine.py ties it)

# glibc's <netdb.h> values (musl numbers some differently; musl is not probed).
EAI_NAMES = {-1: "EAI_BADFLAGS", -2: "EAI_NONAME", -3: "EAI_AGAIN", -4: "EAI_FAIL",
             -5: "EAI_NODATA", -6: "EAI_FAMILY", -7: "EAI_SOCKTYPE", -8: "EAI_SERVICE",
             -9: "EAI_ADDRFAMILY", -10: "EAI_MEMORY", -11: "EAI_SYSTEM", -12: "EAI_OVERFLOW",
             -100: "EAI_INPROGRESS", -101: "EAI_CANCELED", -102: "EAI_NOTCANCELED",
             -103: "EAI_ALLDONE", -104: "EAI_INTR", -105: "EAI_IDN_ENCODE"}
HERRNO_NAMES = {-1: "NETDB_INTERNAL", 1: "HOST_NOT_FOUND", 2: "TRY_AGAIN", 3: "NO_RECOVERY",
                4: "NO_DATA"}

MAN = ManPage(
    description=(
        "gethostlatency traces host name lookups made through the C library: every call of "
        "getaddrinfo(3), gethostbyname(3), gethostbyname2(3), gethostbyname_r(3) and "
        "gethostbyname2_r(3), with the time it took from entry to return, the name asked for and "
        "the result. It finds the slow lookups behind a slow connect: a DNS server that answers "
        "late, a search list that tries several names, a timeout and retry.\n\n"
        "It places uprobes on the functions' entries and returns in a libc. With -p PID that is "
        "the libc the process has mapped (found in /proc/PID/maps and opened through "
        "/proc/PID/map_files, so a process in a container or a chroot is traced in its own "
        "libc, even one deleted by an upgrade since); otherwise the libc.so.6 of the "
        "ld.so cache (ldconfig -p), or of netkit's own Python; --libc PATH names one. With "
        "-c CGROUP the libcs of the processes already in that cgroup are probed too, so a "
        "container's lookups are seen; a container started later needs another run.\n\n"
        "glibc's gethostbyname() calls gethostbyname_r() (gethostbyname2() calls "
        "gethostbyname2_r()): the nested call is recognised per thread and only the outermost "
        "call is reported, once. A failed gethostbyname*() is reported with the h_errno it left, "
        "read in the kernel through the h_errnop argument of the _r call.\n\n"
        "What is not seen: statically linked programs and those built on musl libc (netkit says "
        "so and exits 1 when -p names one), Go programs using Go's own resolver, programs that "
        "query a DNS server or systemd-resolved themselves, and getaddrinfo_a(3). The latency is "
        "the whole library call: /etc/hosts, every configured NSS module and every DNS retry.\n\n"
        "By default one line is printed per completed call. --hist instead keeps a log2 "
        "histogram of the latency per host name in the kernel (no event per call crosses to "
        "user space) and prints them at the end (Ctrl-C, SIGTERM or --duration)."),
    examples=[
        ("netkit gethostlatency", "every lookup on the system, one line each"),
        ("netkit gethostlatency -p 1234", "one process, in its own libc (containers too)"),
        ("netkit gethostlatency -n curl", "processes named curl"),
        ("netkit gethostlatency --hist -d 60", "per-host latency histograms over a minute"),
        ("netkit gethostlatency --libc /opt/glibc/lib/libc.so.6", "a libc of your choice"),
        ("netkit gethostlatency --json", "NDJSON, one object per lookup"),
    ],
    output=(
        "Columns: TIME (HH:MM:SS when the call returned), PID, COMM, LATms (milliseconds, three "
        "decimals), HOST (the name argument; - for a getaddrinfo() with no node, \"\" in JSON) "
        "and RESULT: OK, the EAI_* name of a failed getaddrinfo() (EAI_NONAME, EAI_AGAIN, ...), "
        "the h_errno name of a failed gethostbyname*() (HOST_NOT_FOUND, TRY_AGAIN, NO_RECOVERY, NO_DATA, "
        "NETDB_INTERNAL; FAILED when it could not be read), or the errno name a _r variant "
        "returned (ERANGE).\n\n"
        "JSON (one object per call): type (\"lookup\"), ts (ISO 8601, when the call returned), "
        "pid, tid, comm, function (getaddrinfo, gethostbyname, gethostbyname2, gethostbyname_r "
        "or gethostbyname2_r), host, latency_ms (a number in milliseconds with microsecond "
        "resolution), ok (true or false), result (as the column), code (the raw number: the "
        "EAI code, h_errno or errno; 0 when ok).\n\n"
        "With --hist: one histogram per host, slots of powers of two microseconds (-m: "
        "milliseconds) as bpftrace prints them, busiest host first, each with its count and mean. "
        "JSON: one object per host with type (\"hist\"), host, unit (\"us\" or \"ms\"), count, "
        "sum (in the unit) and latency_us (latency_ms with -m): a list of objects with low, high "
        "and count for the bucket [low, high).\n\n"
        "At the end, JSON has one object with type \"summary\" and lost_events, the lookups the "
        "ring buffer could not take (text output reports them on stderr)."),
    see_also=["gethostlatency(8) (bcc)", "getaddrinfo(3)", "gethostbyname(3)", "resolv.conf(5)",
              "nsswitch.conf(5)"],
)

HistOpt = Annotated[bool, typer.Option("--hist", help="Per-host log2 latency histograms kept in "
                                                      "the kernel, printed at the end.")]
LibcOpt = Annotated[Optional[Path], typer.Option("--libc", metavar="PATH", show_default=False,
                                                 help="Probe this libc instead of the one found.")]


# -- which libc ----------------------------------------------------------------------------------
LIBC_NAME = re.compile(r"^libc(\.so(\.\d+)*|-\d[\d.]*\.so)$")
MUSL_NAME = re.compile(r"^(ld-musl-.*|libc\.musl-.*)\.so\.\d+$")      # Alpine names both


@dataclass
class Libc:
    path: str            # a path that opens the file (/proc/PID/map_files/... for a process)
    shown: str           # the path as the process sees it

    def identity(self) -> tuple[int, int]:
        st = os.stat(self.path)
        return st.st_dev, st.st_ino


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def mapped_files(pid: int) -> dict[str, str]:
    """Files mapped by a process: path as the process sees it -> its first mapping's range."""
    try:
        text = Path(f"/proc/{pid}/maps").read_text()
    except FileNotFoundError:
        raise NetkitError(f"no process with PID {pid}") from None
    except OSError as exc:
        raise NetkitError(f"cannot read /proc/{pid}/maps: {exc.strerror}") from None
    files: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith("/"):
            files.setdefault(parts[5], parts[0])
    return files


def _openable(pid: int, span: str, shown: str) -> str:
    """A path that opens the very file a process has mapped. map_files is exact whatever the
    process's root (chroot, container) and also for a file deleted by an upgrade; it needs
    CAP_SYS_ADMIN, so without it the path is tried through /proc/PID/root, as containers show it."""
    for path in (f"/proc/{pid}/map_files/{span}", f"/proc/{pid}/root{shown}", shown):
        try:
            os.stat(path)
            return path
        except OSError:
            continue
    raise NetkitError(f"cannot open {shown}, mapped by process {pid}")


def libc_of_process(pid: int) -> Libc:
    """The glibc a process has mapped, or NetkitError saying why it has none to probe."""
    files = mapped_files(pid)
    for shown, span in files.items():
        path = shown.removesuffix(" (deleted)")
        if LIBC_NAME.match(os.path.basename(path)) and "musl" not in path:
            return Libc(_openable(pid, span, path), shown)
    musl = next((f for f in files if MUSL_NAME.match(os.path.basename(f)) or
                 ("musl" in f and LIBC_NAME.match(os.path.basename(f)))), None)
    if musl:
        raise NetkitError(f"process {pid} ({_comm(pid)}) uses musl libc ({musl}), not glibc: "
                          f"nothing to probe")
    raise NetkitError(f"process {pid} ({_comm(pid)}) has no shared libc mapped (statically "
                      f"linked, or a runtime with its own resolver): nothing to probe")


def system_libc() -> Libc:
    """libc.so.6 of this machine's architecture from the ld.so cache, else the one we run on."""
    abi = {"x86_64": "x86-64", "aarch64": "AArch64"}.get(platform.machine(), platform.machine())
    for ldconfig in ("/sbin/ldconfig", "/usr/sbin/ldconfig"):
        if not os.path.exists(ldconfig):
            continue
        listing = subprocess.run([ldconfig, "-p"], capture_output=True, text=True).stdout
        for line in listing.splitlines():
            match = re.match(r"\s*libc\.so\.6 \(([^)]*)\) => (\S+)", line)
            if match and abi in match.group(1) and os.path.exists(match.group(2)):
                return Libc(match.group(2), match.group(2))
    return libc_of_process(os.getpid())


def libcs_in_cgroup(cgroup: Path) -> list[Libc]:
    """The glibcs mapped by the processes now in a cgroup (and its children)."""
    found = []
    for procs in cgroup.rglob("cgroup.procs"):
        try:
            pids = [int(p) for p in procs.read_text().split()]
        except OSError:
            continue
        for pid in pids:
            try:
                found.append(libc_of_process(pid))
            except (NetkitError, OSError):    # exited, static, musl: nothing to add
                continue
    return found


def choose_libcs(libc: Path | None, pid: int | None, cgroup: Path | None) -> list[Libc]:
    if libc is not None:
        if not libc.is_file():
            raise NetkitError(f"--libc {libc}: no such file")
        with open(libc, "rb") as f:
            if f.read(4) != b"\x7fELF":
                raise NetkitError(f"--libc {libc}: not an ELF file")
        chosen = [Libc(str(libc.resolve()), str(libc))]
    elif pid is not None:
        chosen = [libc_of_process(pid)]
    else:
        chosen = [system_libc()]
        if cgroup is not None:
            chosen += libcs_in_cgroup(cgroup)
    unique, seen = [], set()
    for item in chosen:
        key = item.identity()
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


# -- results -------------------------------------------------------------------------------------
def describe_result(function: str, ret: int, herrno: int,
                    result_null: bool) -> tuple[bool, str, int]:
    """(ok, name, code) of one call, from what the uretprobe saw."""
    if function == "getaddrinfo":
        if ret == 0:
            return True, "OK", 0
        return False, EAI_NAMES.get(ret, f"EAI_{ret}"), ret
    if function in ("gethostbyname", "gethostbyname2"):  # returns struct hostent *
        if ret != 0:
            return True, "OK", 0
    else:                                                # _r: returns 0 or an errno
        if ret != 0:
            return False, errno.errorcode.get(ret, f"errno {ret}"), ret
        if not result_null:
            return True, "OK", 0
    if herrno == HERRNO_UNKNOWN:
        return False, "FAILED", -1
    return False, HERRNO_NAMES.get(herrno, f"h_errno {herrno}"), herrno


class LookupView:
    def __init__(self, out, functions: list[str]):
        from netkit.render.output import StreamTable
        self.out = out
        self.functions = functions          # enum lookup_func's names, by value
        self.stream = StreamTable(out, [
            Column("TIME", 8, "<", style="dim"), Column("PID", 7), Column("COMM", 15, "<"),
            Column("LATms", 10, fmt=lambda v: f"{v:.3f}", style="bold"),
            Column("HOST", 28, "<", style="cyan"), Column("RESULT", 6, "<")])  # 79 wide

    def event(self, e) -> None:
        from netkit.render.fields import clock, comm
        function = self.functions[e.func]
        ok, result, code = describe_result(function, e.ret, e.herrno, bool(e.result_null))
        host = comm(e.host)
        latency_ms = e.latency_ns / 1e6
        if self.out.mode == "json":
            self.out.record({"type": "lookup", "pid": e.pid, "tid": e.tid, "comm": comm(e.comm),
                             "function": function, "host": host,
                             "latency_ms": round(latency_ms, 3), "ok": ok, "result": result,
                             "code": code})
        else:
            self.stream.row([clock(), e.pid, comm(e.comm), latency_ms, host or "-", result])

    def histograms(self, hists: dict[str, object], unit: str) -> None:
        from netkit.render.hist import hist_json
        ranked = sorted(hists.items(), key=lambda kv: (-kv[1].count, kv[0]))
        for n, (host, hist) in enumerate(ranked):
            if self.out.mode == "json":
                self.out.record({"type": "hist", "host": host, "unit": unit, "count": hist.count,
                                 "sum": hist.sum, f"latency_{unit}": hist_json(hist.slots)})
                continue
            if n:
                self.out.line()
            self.out.hist(f"{host or '(no name)'}: {hist.count} lookups, mean {hist.mean:.0f} "
                          f"{unit}", hist.slots, f"{unit}ecs")

    def summary(self, lost: int) -> None:
        if self.out.mode == "json":
            self.out.record({"type": "summary", "lost_events": lost})
        self.out.lost("gethostlatency", lost, "lookups")


def functions_of(obj) -> list[str]:
    """The libc functions probed, by their enum lookup_func value; each has its entry program
    enter_<name>."""
    values = obj.enum("lookup_func")
    return sorted(values, key=values.get)


def attach(obj, libcs: list[Libc], pid: int | None, out, verbose: bool) -> list[str]:
    """Entry and return uprobes on each function of each libc; the functions probed. A libc
    without getaddrinfo is an error; a missing gethostbyname* is skipped (said with -v)."""
    probed = []
    for lib in libcs:
        for function in functions_of(obj):
            try:
                # Return first: a call already under way then leaves no entry without a return.
                obj.attach_uprobe(RETURN_PROGRAM, lib.path, function, retprobe=True,
                                  pid=pid or -1)
                obj.attach_uprobe(f"enter_{function}", lib.path, function, pid=pid or -1)
            except NetkitError as exc:
                if function != "getaddrinfo":
                    if verbose:
                        out.note(f"netkit gethostlatency: {function} not probed: {exc}")
                    continue
                if str(exc).endswith(os.strerror(errno.ENOENT)):      # no such symbol
                    raise NetkitError(f"{lib.shown} has no function getaddrinfo (not a shared "
                                      f"glibc?): nothing to probe") from None
                raise NetkitError(f"{lib.shown} cannot be probed: {exc}") from None
            probed.append(function)
    return list(dict.fromkeys(probed))


def command(
    pid: PidOpt = None,
    name: NameOpt = None,
    cgroup: CgroupOpt = None,
    libc: LibcOpt = None,
    hist: HistOpt = False,
    milliseconds: MillisecondsOpt = False,
    duration: DurationOpt = None,
    json: JsonOpt = False,
    no_color: NoColorOpt = False,
    verbose: VerboseOpt = False,
):
    from netkit.engine.bpfobject import BPFObject, Filters
    from netkit.engine.hist import Log2Hist
    from netkit.render.fields import comm

    out = open_output(json, no_color, verbose)
    filters = Filters(pid, name, cgroup)
    libcs = choose_libcs(libc, pid, filters.cgroup_path())
    rodata = {"hist_mode": hist, "hist_ms": hist and milliseconds}
    with BPFObject("gethostlatency", filters, rodata=rodata) as obj:
        probed = attach(obj, libcs, pid, out, verbose)
        if duration == 0:
            return
        view = LookupView(out, functions_of(obj))
        ring = None if hist else obj.ring_buffer("events", "lookup_event", view.event)
        Loop(out, duration=duration, rings=[ring]).run(
            lambda ts, seconds, show: None,
            f"Tracing host name lookups in {', '.join(lib.shown for lib in libcs)} "
            f"({', '.join(probed)}). Hit Ctrl-C to end.")
        if hist:
            view.histograms({comm(key.host): Log2Hist.from_value(value)
                             for key, value in obj.map("host_hist").items()},
                            "ms" if milliseconds else "us")
        view.summary(obj.lost_events())
