"""Up-front checks that turn the usual reasons a BPF tool cannot start into one clear line."""
from __future__ import annotations

import contextlib
import functools
import os
import subprocess
from pathlib import Path

from netkit.engine.errors import NetkitError

TRACEFS = Path("/sys/kernel/tracing")
KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")
NO_KERNEL_BTF = (f"this kernel has no BTF ({KERNEL_BTF}), which netkit's CO-RE programs are "
                 f"relocated against: boot a kernel built with CONFIG_DEBUG_INFO_BTF=y (the "
                 f"distribution kernels of Debian 11+, Ubuntu 20.10+, Fedora 31+, RHEL 8.2+ and "
                 f"Arch are)")
CAP_PERFMON, CAP_BPF, CAP_SYS_ADMIN = 38, 39, 21


def effective_caps() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def can_load_bpf() -> bool:
    caps = effective_caps()
    if caps & (1 << CAP_SYS_ADMIN):
        return True
    return bool(caps & (1 << CAP_BPF)) and bool(caps & (1 << CAP_PERFMON))


def require_bpf_privileges() -> None:
    if not can_load_bpf():
        raise NetkitError("must run as root (or with CAP_BPF and CAP_PERFMON) to load BPF programs")


def _readable_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except PermissionError:
        raise NetkitError(f"cannot read {path}: permission denied (tracing needs root)") from None


def ensure_tracefs() -> Path:
    """Classic tracepoints are found through tracefs; mount it when it is missing and we may."""
    if _readable_dir(TRACEFS / "events"):
        return TRACEFS
    legacy = Path("/sys/kernel/debug/tracing")
    if _readable_dir(legacy / "events"):
        return legacy
    if os.geteuid() == 0:
        result = subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)],
                                capture_output=True, text=True)
        if result.returncode == 0 and (TRACEFS / "events").is_dir():
            return TRACEFS
    raise NetkitError(f"tracefs is not mounted at {TRACEFS}; mount it: mount -t tracefs nodev {TRACEFS}")


def tracepoint_exists(category: str, event: str) -> bool:
    return (ensure_tracefs() / "events" / category / event).is_dir()


@functools.cache
def _trace_categories() -> tuple[str, ...]:
    events = ensure_tracefs() / "events"
    return tuple(str(entry) for entry in events.iterdir() if entry.is_dir())


def _is_trace_event(name: str) -> bool:
    """Whether some category of tracefs has the event: one stat per category (about 100),
    where listing every event costs 2,600 (15-20 ms of every tool's start-up)."""
    return any(os.path.isdir(os.path.join(category, name)) for category in _trace_categories())


def raw_tracepoint_exists(name: str) -> bool:
    """tp_btf and raw_tp programs name the kernel's btf_trace_<event> typedef. Nearly every such
    tracepoint is also a trace event in tracefs, which is cheap to look up; the kernel's BTF
    (about 10 MB of memory to parse) is read only for the few bare tracepoints that are not."""
    if _is_trace_event(name):
        return True
    from netkit.engine import libbpf as L
    with kernel_btf() as btf:
        return L.btf__find_by_name_kind(btf, f"btf_trace_{name}".encode(), L.BTF_KIND_TYPEDEF) >= 0


_shared_btf: list | None = None     # [the parse or None] inside a shared_kernel_btf() block


@contextlib.contextmanager
def shared_kernel_btf():
    """One parse of the kernel's BTF (~35 ms) for every check in the block that needs one (a
    tool's checks before load), freed at its end: never held for a long run's lifetime."""
    global _shared_btf
    if _shared_btf is not None:             # nested: the outer block frees it
        yield
        return
    _shared_btf = [None]
    try:
        yield
    finally:
        parsed, _shared_btf = _shared_btf[0], None
        if parsed:
            from netkit.engine import libbpf as L
            L.btf__free(parsed)


@contextlib.contextmanager
def kernel_btf():
    """The kernel's parsed BTF: the block's shared one inside shared_kernel_btf(), else parsed
    here and freed after use."""
    from netkit.engine import libbpf as L
    if _shared_btf is not None and _shared_btf[0]:
        yield _shared_btf[0]
        return
    btf = L.btf__load_vmlinux_btf()
    if not btf:
        raise NetkitError(NO_KERNEL_BTF)
    if _shared_btf is not None:
        _shared_btf[0] = btf                # freed at the end of the shared block
        yield btf
        return
    try:
        yield btf
    finally:
        L.btf__free(btf)


def kernel_has_section_target(section: str) -> tuple[bool, str]:
    """Whether the tracepoint a program's ELF section names exists here, and its display name."""
    kind, _, rest = section.partition("/")
    if kind in ("tracepoint", "tp"):
        category, _, event = rest.partition("/")
        return tracepoint_exists(category, event), f"{category}:{event}"
    if kind in ("tp_btf", "raw_tp", "raw_tracepoint"):
        return raw_tracepoint_exists(rest), rest
    return True, section


@functools.lru_cache(maxsize=None)
def tracepoint_arg_type(name: str, index: int) -> str | None:
    """The type of argument `index` (from 0) of raw tracepoint `name` in this kernel's BTF, as
    "struct sock *", "int" or "enum skb_drop_reason" (other kinds by their BTF kind number),
    or None when the tracepoint has no such argument. A tp_btf program reads its arguments by
    position, so a tracepoint whose arguments changed between kernels (kmem_cache_alloc took
    its kmem_cache from 6.2, kfree_skb the receiving socket and tcp_retransmit_skb an error
    later still) is checked before load, to be named rather than rejected by the verifier.
    Reads the kernel's BTF: only tools that declare such arguments pay for it."""
    from netkit.engine import btf as B
    from netkit.engine import libbpf as L
    with kernel_btf() as btf:
        types = B.BtfTypes(btf)
        typedef = L.btf__find_by_name_kind(btf, f"btf_trace_{name}".encode(), L.BTF_KIND_TYPEDEF)
        if typedef < 0:
            return None
        proto = types.type(types.strip(types.type(types.strip(typedef)).size_or_type))
        params = B.records(proto, B.Param, B.vlen_of(proto))
        if index + 1 >= len(params):             # the first parameter is the tracepoint's data
            return None
        arg = types.type(types.strip(params[index + 1].type))
        pointer = B.kind_of(arg) == L.BTF_KIND_PTR
        if pointer:
            arg = types.type(types.strip(arg.size_or_type))
        kind = {0: "", L.BTF_KIND_STRUCT: "struct ", L.BTF_KIND_UNION: "union ",      # 0: void
                L.BTF_KIND_ENUM: "enum ", L.BTF_KIND_ENUM64: "enum ",
                L.BTF_KIND_INT: ""}.get(B.kind_of(arg))
        name_of = types.name(arg) if kind is not None else f"kind{B.kind_of(arg)}"
        return (kind or "") + (name_of or "void") + (" *" if pointer else "")


def require_kernel_btf() -> None:
    """Without the kernel's BTF every load would fail on a CO-RE relocation, in libbpf's words.
    libbpf also finds BTF in a vmlinux under /boot or /lib/modules: it is asked (a ~10 MB
    parse) only when sysfs has none."""
    if KERNEL_BTF.exists():
        return
    from netkit.engine import libbpf as L
    btf = L.btf__load_vmlinux_btf()
    if not btf:
        raise NetkitError(NO_KERNEL_BTF)
    L.btf__free(btf)


def check_pid(pid: int | None) -> None:
    if pid is not None and (pid <= 0 or not Path(f"/proc/{pid}").is_dir()):
        raise NetkitError(f"no process with PID {pid}")
