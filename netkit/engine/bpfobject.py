"""One BPF object, from open to detach: the lifecycle every netkit tool goes through.

    with BPFObject("sockstat", filters=Filters(pid=123)) as obj:   # open, configure, load, attach
        counts = obj.map("counts")
        for tgid, per_cpu in counts.items(): ...

Configuration goes into `.rodata` before load (so the verifier prunes disabled filters), every
program whose section names a tracepoint is attached, and everything is detached and freed on
exit, also on Ctrl-C and SIGTERM (netkit.cli turns SIGTERM into KeyboardInterrupt).
"""
from __future__ import annotations

import ctypes
import errno
import os
import pkgutil
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from netkit.engine import checks, signals
from netkit.engine import libbpf as L
from netkit.engine.btf import BtfTypes
from netkit.engine.errors import KernelLacks, NetkitError

# The objects are package data of netkit: files in a source tree or an installed wheel, members
# of the zip when netkit runs as one file (netkit.pyz, where this path names no directory). An
# object under it is read through the package's loader and opened from memory, so there is one
# way to open an object and no file to extract.
OBJECT_DIR = Path(__file__).resolve().parent.parent / "bpf"
CGROUP_ROOTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))
# Programs that only add hints, left out where the kernel lacks their tracepoint: sockowners.h's
# sender (sock_send_length, 6.3+). Without it a TCP socket's owner is learnt at its state
# changes and accept() only, so a socket handed to another process after those is credited to
# the process that opened it.
OPTIONAL_PROGRAMS = frozenset({"sockowner_send"})

# libbpf's messages of the current load, captured so a failure can be told in one line.
_libbpf_log: list[str] = []
_verbose = False


@L.PRINT_FN
def _capture_libbpf_print(level, fmt, args):
    buf = ctypes.create_string_buffer(8192)
    L.vsnprintf(buf, len(buf), fmt, args)
    text = buf.value.decode(errors="replace")
    _libbpf_log.append(text)
    if _verbose:
        os.write(2, buf.value)
    return 0


L.libbpf_set_print(_capture_libbpf_print)


def uprobe_multi_supported() -> bool:
    """uprobe_multi links arrived in Linux 6.6."""
    release = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return bool(release) and (int(release.group(1)), int(release.group(2))) >= (6, 6)


def set_verbose(on: bool) -> None:
    """With --verbose every libbpf message (and any verifier log in full) goes to stderr."""
    global _verbose
    _verbose = on


def verifier_summary(log_lines: list[str]) -> str:
    """The line of a verifier log that says what went wrong (the last one before the statistics)."""
    text = "".join(log_lines)
    block = re.search(r"BEGIN PROG LOAD LOG --\n(.*?)-- END PROG LOAD LOG", text, re.S)
    lines = (block.group(1) if block else text).splitlines()
    noise = re.compile(r"^(processed \d+ insns|verification time|stack depth|libbpf:|\s*$|;)")
    meaningful = [line.strip() for line in lines if not noise.match(line)]
    return meaningful[-1] if meaningful else "(no verifier message; rerun with --verbose)"


@dataclass
class Filters:
    """The filters the kernel applies before anything is counted: -p PID, -n COMM, -c CGROUP
    (every tracing tool) and -D/-L ports (tools that see connections; common.h's MAX_PORTS)."""
    pid: int | None = None
    name: str | None = None
    cgroup: str | None = None
    dports: list[int] = field(default_factory=list)
    lports: list[int] = field(default_factory=list)

    def rodata(self) -> dict:
        values = {}
        if self.pid is not None:
            values["filter_tgid"] = self.pid
        if self.name:
            values["filter_comm"] = self.name.encode()[:15]
        if self.cgroup:
            values["filter_cgroup"] = True
        for side, ports in (("d", self.dports), ("l", self.lports)):
            if ports:
                values[f"filter_{side}ports"] = b"".join(p.to_bytes(2, "little") for p in ports)
                values[f"n_{side}ports"] = len(ports)
        return values

    def cgroup_path(self) -> Path | None:
        if not self.cgroup:
            return None
        given = Path(self.cgroup)
        if given.is_absolute() and not given.is_relative_to("/sys"):
            given = given.relative_to("/")          # "/" and "/system.slice" as systemd writes them
        candidates = [given] if given.is_absolute() else [root / given for root in CGROUP_ROOTS]
        for path in candidates:
            if path.is_dir() and (path / "cgroup.procs").exists():
                if not (path / "cgroup.controllers").exists():
                    raise NetkitError(f"{self.cgroup} is a cgroup v1 directory; -c takes a "
                                      f"cgroup v2 path (under {CGROUP_ROOTS[-1]})")
                return path
        raise NetkitError(f"no cgroup v2 directory {self.cgroup} (give a path under "
                          f"{' or '.join(map(str, CGROUP_ROOTS))})")


def _errno_text(code: int) -> str:
    return os.strerror(code) if code else "unknown error"


class Map:
    """A BPF map with key and value types taken from its BTF definition."""

    def __init__(self, handle: int, types: BtfTypes):
        self.handle = handle
        self.name = L.bpf_map__name(handle).decode()
        self.fd = L.bpf_map__fd(handle)
        self.percpu = L.bpf_map__type(handle) in L.PERCPU_MAP_TYPES
        key_id, value_id = L.bpf_map__btf_key_type_id(handle), L.bpf_map__btf_value_type_id(handle)
        self.key_type = types.ctype(key_id) if key_id else ctypes.c_uint8 * L.bpf_map__key_size(handle)
        self.value_type = (types.ctype(value_id) if value_id
                           else ctypes.c_uint8 * L.bpf_map__value_size(handle))
        self.ncpus = L.libbpf_num_possible_cpus() if self.percpu else 1
        self._stride = (ctypes.sizeof(self.value_type) + 7) // 8 * 8 if self.percpu else 0

    def _value_buffer(self):
        if self.percpu:
            return ctypes.create_string_buffer(self._stride * self.ncpus)
        return self.value_type()

    def _decode(self, buf):
        """A per-CPU map's value comes back as a list, one entry per possible CPU."""
        if not self.percpu:
            return buf
        return [self.value_type.from_buffer_copy(buf, cpu * self._stride) for cpu in range(self.ncpus)]

    def _key(self, key):
        return key if isinstance(key, self.key_type) else self.key_type(key)

    def lookup(self, key):
        buf = self._value_buffer()
        if L.bpf_map_lookup_elem(self.fd, ctypes.byref(self._key(key)), ctypes.byref(buf)) != 0:
            return None
        return self._decode(buf)

    def update(self, key, value, flags: int = 0) -> None:
        if L.bpf_map_update_elem(self.fd, ctypes.byref(self._key(key)), ctypes.byref(value), flags):
            raise NetkitError(f"cannot update map {self.name}: {_errno_text(ctypes.get_errno())}")

    def delete(self, key) -> None:
        L.bpf_map_delete_elem(self.fd, ctypes.byref(self._key(key)))

    def keys(self):
        key, next_key = self.key_type(), self.key_type()
        found = []
        prev = None
        while L.bpf_map_get_next_key(self.fd, prev, ctypes.byref(next_key)) == 0:
            found.append(self.key_type.from_buffer_copy(next_key))
            ctypes.memmove(ctypes.byref(key), ctypes.byref(next_key), ctypes.sizeof(key))
            prev = ctypes.byref(key)
        return found

    def items(self):
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                yield key, value


class RingBuffer:
    """Events from a BPF ring buffer, each handed to `handler` as the BTF-typed struct."""

    def __init__(self, bpf_map: Map, event_type: type, handler):
        self._raised: BaseException | None = None

        def on_sample(_ctx, data, size):
            # ctypes prints and drops an exception raised in a callback: a Ctrl-C (SIGINT's
            # KeyboardInterrupt lands wherever Python is) or a closed pipe would be lost and the
            # tool would go on. Stop the poll instead and raise it from poll().
            try:
                handler(event_type.from_address(data))
            except BaseException as exc:
                self._raised = exc
                return -1
            return 0

        self._callback = L.RINGBUF_SAMPLE_FN(on_sample)   # keep alive as long as the ring
        self.handle = L.ring_buffer__new(bpf_map.fd, self._callback, None, None)
        if not self.handle:
            raise NetkitError(f"cannot open ring buffer {bpf_map.name}: "
                              f"{_errno_text(ctypes.get_errno())}")

    def poll(self, timeout_ms: int) -> int:
        """Consume ready events (waiting up to timeout_ms); returns how many were handled.
        A Ctrl-C or SIGTERM during the poll is raised (as KeyboardInterrupt) after it.

        The ring is read directly first: epoll learns of a submitted event only from a deferred
        irq_work, so a poll alone can miss an event the kernel committed a moment ago (e.g. the
        stamp of a reply that userspace has already received)."""
        with signals.held():
            n = L.ring_buffer__consume(self.handle)
            if n == 0 and timeout_ms != 0 and self._raised is None:
                n = L.ring_buffer__poll(self.handle, timeout_ms)
        if self._raised is not None:
            raised, self._raised = self._raised, None
            raise raised
        if n < 0 and -n != errno.EINTR:
            raise NetkitError(f"ring buffer poll failed: {_errno_text(-n)}")
        return max(n, 0)

    def free(self) -> None:
        if self.handle:
            L.ring_buffer__free(self.handle)
            self.handle = None


class BPFObject:
    """Open, configure, load and attach `netkit/bpf/<tool>.bpf.o`; detach and free on close.

    rodata: values for `const volatile` globals (set before load).
    optional: tracepoint names ("sock:sock_send_length") whose programs are left out, not fatal,
              when the kernel lacks them; `missing` then lists them so the view can say n/a.
    manual: program names the tool attaches itself (uprobes); attach_all() leaves them alone.
    arg_types: {tracepoint: (argument index, type)} for tp_btf arguments that older kernels
              lack or type otherwise ("struct sock *", "int"), checked before load. Where the
              kernel's differs, a program on that tracepoint named <name>_compat (written
              without the argument) is loaded instead of the others; without one the
              tracepoint counts as missing (left out when optional, fatal otherwise). Where
              it matches, the _compat programs are not loaded.
    disabled: program names not loaded at all (a tool with two backends in one object loads
              the programs of one); their tracepoints need not exist here.
    """

    def __init__(self, tool: str, filters: Filters | None = None, rodata: dict | None = None,
                 optional: set[str] = frozenset(), manual: set[str] = frozenset(),
                 path: Path | None = None, arg_types: dict | None = None,
                 disabled: set[str] = frozenset()):
        self.tool = tool
        self.path = path or OBJECT_DIR / f"{tool}.bpf.o"
        self.filters = filters or Filters()
        self.rodata = {**self.filters.rodata(), **(rodata or {})}
        self.optional = optional
        self.manual = manual
        self.arg_types = arg_types or {}
        self.disabled = disabled
        self.missing: list[str] = []
        self.obj = None
        self.links: list[int] = []
        self.link_fds: list[int] = []           # links made with bpf(2) directly (uprobe_multi)
        self.uprobe_multi = False
        self.rings: list[RingBuffer] = []
        self.types: BtfTypes | None = None
        self._maps: dict[str, Map] = {}
        self._image = None

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self):
        try:
            with signals.held():
                self.open()
                self.load()
                self.attach_all()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def open(self) -> None:
        checks.require_bpf_privileges()
        checks.check_pid(self.filters.pid)
        checks.require_kernel_btf()
        name = self.path.name
        # libbpf's libelf reads the image in place until load() ends: a writable buffer of
        # ours, kept as long as the object.
        image = self._read_image(name)
        self._image = ctypes.create_string_buffer(image, len(image))
        opts = L.ObjectOpenOpts(sz=ctypes.sizeof(L.ObjectOpenOpts),
                                object_name=name.split(".")[0].encode())
        _libbpf_log.clear()
        self.obj = L.bpf_object__open_mem(self._image, len(image), ctypes.byref(opts))
        if not self.obj:
            raise NetkitError(f"cannot open {name}: {_errno_text(ctypes.get_errno())}")
        self.types = BtfTypes(L.bpf_object__btf(self.obj))
        self._disable_programs()
        with checks.shared_kernel_btf():
            self._check_tracepoints()
        self._prefer_uprobe_multi()
        self._write_rodata()

    def _read_image(self, name: str) -> bytes:
        try:
            if self.path.parent == OBJECT_DIR:
                return pkgutil.get_data("netkit", f"{OBJECT_DIR.name}/{name}")
            return self.path.read_bytes()
        except OSError:      # FileNotFoundError from a directory, a bare OSError from a zip
            raise NetkitError(f"BPF object {name} is not built; run `make bpf` in the netkit "
                              f"source tree") from None

    def load(self) -> None:
        _libbpf_log.clear()
        err = L.bpf_object__load(self.obj)
        if err:
            log = "".join(_libbpf_log)
            if "PROG LOAD LOG" in log or "verifier" in log:
                raise NetkitError(f"the kernel's verifier rejected {self.path.name}: "
                                  f"{verifier_summary(_libbpf_log)} (--verbose shows the full log)")
            raise NetkitError(f"cannot load {self.path.name}: {L.strerror(-err)}"
                              f"{self._last_libbpf_line()}")
        self._attach_cgroup_filter()

    def attach_all(self) -> None:
        for prog in self.programs():
            name = L.bpf_program__name(prog).decode()
            section = L.bpf_program__section_name(prog).decode()
            if name in self.manual or self._skipped(prog, section):
                continue
            link = L.bpf_program__attach(prog)
            if not link:
                raise NetkitError(f"cannot attach {name} ({section}): "
                                  f"{_errno_text(ctypes.get_errno())}")
            self.links.append(link)

    def attach_uprobe(self, program: str, binary: str, function: str, retprobe: bool = False,
                      pid: int = -1) -> None:
        self.attach_uprobes(program, binary, [function], retprobe, pid)

    def attach_uprobes(self, program: str, binary: str, functions: list[str],
                       retprobe: bool = False, pid: int = -1) -> None:
        """One program on the entries (or returns) of several functions of one binary: a single
        uprobe_multi link where the kernel has them, else one perf-event uprobe per function."""
        with signals.held():
            self._attach_uprobes(program, binary, functions, retprobe, pid)

    def _attach_uprobes(self, program: str, binary: str, functions: list[str], retprobe: bool,
                        pid: int) -> None:
        if not self.uprobe_multi:
            for function in functions:
                self._attach_perf_uprobe(program, binary, function, retprobe, pid)
            return
        from netkit.engine.elfsym import function_offsets
        kind = "uretprobe" if retprobe else "uprobe"
        offsets = function_offsets(binary, functions)
        for function in functions:
            if function not in offsets:
                raise NetkitError(f"cannot attach {kind} to {function} in {binary}: "
                                  f"{os.strerror(errno.ENOENT)}")
        offset_array = (ctypes.c_uint64 * len(functions))(*(offsets[f] for f in functions))
        path = ctypes.create_string_buffer(binary.encode())
        attr = L.UprobeMultiLinkAttr(
            prog_fd=L.bpf_program__fd(self._program(program)),
            attach_type=L.BPF_TRACE_UPROBE_MULTI, path=ctypes.addressof(path),
            offsets=ctypes.addressof(offset_array), cnt=len(functions),
            multi_flags=L.BPF_F_UPROBE_MULTI_RETURN if retprobe else 0, pid=max(pid, 0))
        fd = L.bpf_syscall(L.BPF_LINK_CREATE, attr)
        if fd < 0:
            raise NetkitError(f"cannot attach {kind} to {', '.join(functions)} in {binary}: "
                              f"{_errno_text(-fd)}")
        self.link_fds.append(fd)

    def _attach_perf_uprobe(self, program: str, binary: str, function: str, retprobe: bool,
                            pid: int) -> None:
        prog = self._program(program)
        opts = L.UprobeOpts(sz=ctypes.sizeof(L.UprobeOpts), retprobe=retprobe,
                            func_name=function.encode())
        link = L.bpf_program__attach_uprobe_opts(prog, pid, binary.encode(), 0, ctypes.byref(opts))
        if not link:
            raise NetkitError(f"cannot attach {'uretprobe' if retprobe else 'uprobe'} to "
                              f"{function} in {binary}: {_errno_text(ctypes.get_errno())}")
        self.links.append(link)

    def close(self) -> None:
        with signals.held():       # a second Ctrl-C must not cut the detach short
            self._close()

    def _close(self) -> None:
        for ring in self.rings:
            ring.free()
        self.rings.clear()
        for link in self.links:
            L.bpf_link__destroy(link)
        self.links.clear()
        # Each uprobe_multi link waits for its own grace period on close: wait for them together.
        closers = [threading.Thread(target=os.close, args=(fd,)) for fd in self.link_fds]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join()
        self.link_fds.clear()
        if self.obj:
            L.bpf_object__close(self.obj)
            self.obj = None
        self._image = None

    # -- access ----------------------------------------------------------------------------------
    def map(self, name: str) -> Map:
        if name not in self._maps:
            self._maps[name] = Map(self._map_handle(name), self.types)
        return self._maps[name]

    def enum(self, name: str) -> dict[str, int]:
        """The values of a C enum of the object (names without a prefix they all share)."""
        return self.types.enum(name)

    def struct(self, name: str) -> type:
        return self.types.find_struct(name)

    def ring_buffer(self, map_name: str, event_struct: str, handler) -> RingBuffer:
        with signals.held():
            ring = RingBuffer(self.map(map_name), self.struct(event_struct), handler)
        self.rings.append(ring)
        return ring

    def lost_events(self) -> int:
        """Events the BPF side could not queue (common.h's lost_events counter)."""
        per_cpu = self.map("lost_events").lookup(0)
        return sum(v.value for v in per_cpu) if per_cpu else 0

    def programs(self):
        prog = L.bpf_object__next_program(self.obj, None)
        while prog:
            yield prog
            prog = L.bpf_object__next_program(self.obj, prog)

    # -- internals -------------------------------------------------------------------------------
    def _program(self, name: str) -> int:
        for prog in self.programs():
            if L.bpf_program__name(prog).decode() == name:
                return prog
        raise NetkitError(f"{self.path.name} has no program {name}")

    def _map_handle(self, name: str) -> int:
        handle = L.bpf_object__next_map(self.obj, None)
        while handle:
            if L.bpf_map__name(handle).decode() == name:
                return handle
            handle = L.bpf_object__next_map(self.obj, handle)
        raise NetkitError(f"{self.path.name} has no map {name}")

    def _skipped(self, prog, section: str) -> bool:
        """Uprobes (the tool attaches them) and programs not loaded (left out, or the twin
        this kernel does not need)."""
        return section.startswith(("uprobe", "uretprobe")) or not L.bpf_program__autoload(prog)

    def _prefer_uprobe_multi(self) -> None:
        """Load uprobe programs for uprobe_multi links where the kernel has them: a perf-event
        uprobe costs ~100 ms of RCU grace period to detach, a uprobe_multi link one wait for
        all its probes."""
        uprobes = [prog for prog in self.programs()
                   if L.bpf_program__section_name(prog).startswith((b"uprobe", b"uretprobe"))]
        if not uprobes or not uprobe_multi_supported():
            return
        for prog in uprobes:
            L.bpf_program__set_expected_attach_type(prog, L.BPF_TRACE_UPROBE_MULTI)
        self.uprobe_multi = True

    def _argument_differs(self, target: str) -> str | None:
        """What this kernel lacks of the arguments declared in arg_types for target, if any."""
        if target not in self.arg_types:
            return None
        index, wanted = self.arg_types[target]
        if checks.tracepoint_arg_type(target, index) == wanted:
            return None
        return f"no {wanted} as argument"

    def _disable_programs(self) -> None:
        names = {L.bpf_program__name(prog).decode(): prog for prog in self.programs()}
        for name in self.disabled:
            if name not in names:
                raise NetkitError(f"{self.path.name} has no program {name}")
            L.bpf_program__set_autoload(names[name], False)

    def _check_tracepoints(self) -> None:
        """Fail with the tracepoint's name when this kernel lacks it (or an argument the
        program reads); drop optional ones; choose between a program and its _compat twin."""
        names = {L.bpf_program__name(prog).decode() for prog in self.programs()}
        for prog in self.programs():
            section = L.bpf_program__section_name(prog).decode()
            name = L.bpf_program__name(prog).decode()
            if name in self.disabled:
                continue
            exists, target = checks.kernel_has_section_target(section)
            lacks = None if exists else f"no tracepoint {target}"
            differs = self._argument_differs(target) if exists else None
            if differs:
                index = self.arg_types[target][0]
                lacks = f"{differs} {index + 1} of tracepoint {target}"
            if name.endswith("_compat"):             # the twin for kernels that differ
                if not differs:
                    L.bpf_program__set_autoload(prog, False)
                continue
            if differs and f"{name}_compat" in names:
                L.bpf_program__set_autoload(prog, False)
                continue
            if lacks is None:
                continue
            if target in self.optional or name in OPTIONAL_PROGRAMS:
                L.bpf_program__set_autoload(prog, False)
                if target not in self.missing:
                    self.missing.append(target)
            else:
                raise KernelLacks(f"this kernel has {lacks} (needed by {self.tool})")

    def _write_rodata(self) -> None:
        if not self.rodata:
            return
        handle = next((h for h in self._all_maps() if L.bpf_map__name(h).endswith(b".rodata")), None)
        if handle is None:
            raise NetkitError(f"{self.path.name} has no .rodata to configure")
        size = ctypes.c_size_t()
        base = L.bpf_map__initial_value(handle, ctypes.byref(size))
        layout = self.types.variables(".rodata")
        for name, value in self.rodata.items():
            if name not in layout:
                raise NetkitError(f"{self.path.name} has no setting {name}")
            offset, var_size = layout[name]
            raw = value if isinstance(value, bytes) else int(value).to_bytes(var_size, "little",
                                                                               signed=value < 0)
            ctypes.memmove(base + offset, raw[:var_size], min(len(raw), var_size))

    def _all_maps(self):
        handle = L.bpf_object__next_map(self.obj, None)
        while handle:
            yield handle
            handle = L.bpf_object__next_map(self.obj, handle)

    def _attach_cgroup_filter(self) -> None:
        path = self.filters.cgroup_path()
        if path is None:
            return
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self.map("cgroup_filter").update(0, ctypes.c_uint32(fd))
        finally:
            os.close(fd)

    def _last_libbpf_line(self) -> str:
        lines = [line.strip() for line in "".join(_libbpf_log).splitlines() if line.strip()]
        return f" ({lines[-1]})" if lines else ""
