"""The engine's failure paths against the real kernel: a verifier rejection becomes one line that
quotes the verifier, a missing tracepoint is named, an optional one is dropped, and .rodata
settings reach the program."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, require_or_skip, require_root_bpf
from netkit.engine.bpfobject import BPFObject, verifier_summary
from netkit.engine.errors import NetkitError


def build_case(tmp_path: Path, case: str) -> Path:
    """tests/bpf/engine_cases.bpf.c with one case, built with the Makefile's own flags."""
    vmlinux = ROOT / "build" / "vmlinux.h"
    if not vmlinux.exists():
        require_or_skip("build/vmlinux.h is missing (make bpf)")
    flags = subprocess.run(["make", "-s", "-C", str(ROOT), "bpf-cflags"], capture_output=True,
                           text=True, check=True).stdout.split()
    out = tmp_path / f"{case.lower()}.bpf.o"
    subprocess.run(["clang", *flags, f"-DCASE_{case}", "-c",
                    str(ROOT / "tests" / "bpf" / "engine_cases.bpf.c"), "-o", str(out)],
                   check=True, cwd=ROOT)
    return out


@pytest.fixture(autouse=True)
def _root(request):
    if request.node.get_closest_marker("kernel"):
        require_root_bpf()


@pytest.mark.kernel
def test_verifier_rejection_is_one_line_quoting_the_verifier(tmp_path):
    path = build_case(tmp_path, "BAD_ACCESS")
    with pytest.raises(NetkitError) as caught:
        with BPFObject("case", path=path):
            pass
    message = str(caught.value)
    assert "\n" not in message
    assert "verifier rejected" in message
    assert "invalid mem access" in message or "scalar" in message, message


@pytest.mark.kernel
def test_missing_tracepoint_is_named(tmp_path):
    path = build_case(tmp_path, "MISSING_TRACEPOINT")
    with pytest.raises(NetkitError, match="no tracepoint sock:netkit_no_such_event"):
        with BPFObject("case", path=path):
            pass


@pytest.mark.kernel
def test_optional_tracepoint_is_dropped_and_rodata_reaches_the_program(tmp_path):
    path = build_case(tmp_path, "MISSING_TRACEPOINT")
    with BPFObject("case", path=path, optional={"sock:netkit_no_such_event"},
                   rodata={"answer": 42, "slot_input": 1000}) as obj:
        assert obj.missing == ["sock:netkit_no_such_event"]
        os.getpid()                             # a syscall, so sys_enter runs
        seen = obj.map("results").lookup(0)
    assert (seen.answer, seen.slot_of_input) == (42, 9)   # 512 <= 1000 < 1024


@pytest.mark.kernel
def test_missing_object_says_how_to_build(tmp_path):
    with pytest.raises(NetkitError, match="make bpf"):
        BPFObject("nosuchtool").open()


def test_verifier_summary_picks_the_error_line():
    log = ["libbpf: prog 'p': -- BEGIN PROG LOAD LOG --\n",
           "0: R1=ctx() R10=fp0\n; return *(int *)id;\n1: (61) r0 = *(u32 *)(r2 +0)\n",
           "R2 invalid mem access 'scalar'\n",
           "processed 2 insns (limit 1000000) max_states_per_insn 0\n",
           "-- END PROG LOAD LOG --\n"]
    assert verifier_summary(log) == "R2 invalid mem access 'scalar'"


def _this_libc() -> str:
    """The libc this test process runs on, from its own maps."""
    for line in open("/proc/self/maps"):
        path = line.split()[-1]
        if "/libc.so" in path or "/libc-" in path:
            return path
    raise AssertionError("no libc in /proc/self/maps")


def test_function_offsets_match_nm():
    from netkit.engine.elfsym import function_offsets
    if not shutil.which("nm"):
        require_or_skip("nm (binutils) is not installed")
    libc = _this_libc()
    listed = {}
    for line in subprocess.run(["nm", "-D", "--defined-only", libc], capture_output=True,
                               text=True, check=True).stdout.splitlines():
        value, kind, name = line.split()
        if kind in "TtiWw" and "@@" in name:      # weak (W) and IFUNC (i) symbols are functions too
            listed[name.split("@")[0]] = int(value, 16)
    names = ["getaddrinfo", "gethostbyname", "connect", "malloc", "strlen"]
    offsets = function_offsets(libc, names + ["netkit_no_such_function"])
    # glibc's text segment is mapped at the same file offset as its address, so nm's value is
    # the file offset too; a missing name is simply absent
    assert offsets == {name: listed[name] for name in names}


@pytest.mark.parametrize("multi", [True, False], ids=["uprobe_multi", "perf_uprobe"])
@pytest.mark.kernel
def test_uprobes_fire_through_either_attach_path(monkeypatch, multi):
    """gethostlatency's object on this process's libc: one getaddrinfo call gives one event,
    whether the probes are uprobe_multi links or perf-event uprobes (kernels before 6.6)."""
    import socket
    from netkit.engine import bpfobject
    require_root_bpf("gethostlatency")
    monkeypatch.setattr(bpfobject, "uprobe_multi_supported", lambda: multi)
    libc = _this_libc()
    seen = []
    with BPFObject("gethostlatency", manual={"enter_getaddrinfo", "lookup_return"}) as obj:
        assert obj.uprobe_multi is multi
        obj.attach_uprobes("lookup_return", libc, ["getaddrinfo"], retprobe=True, pid=os.getpid())
        obj.attach_uprobe("enter_getaddrinfo", libc, "getaddrinfo", pid=os.getpid())
        ring = obj.ring_buffer("events", "lookup_event", lambda e: seen.append(e.host))
        socket.getaddrinfo("127.0.0.1", 80)
        ring.poll(200)
    assert [bytes(h).split(b"\0")[0] for h in seen] == [b"127.0.0.1"]


@pytest.mark.kernel
def test_ring_poll_reads_events_that_epoll_was_not_told_of(tmp_path):
    """The kernel tells epoll of a ring event through a deferred irq_work, so a reply can reach
    userspace before its BPF event looks ready. Events here are committed with no wake-up at
    all: poll(0) still sees each one at once, in order."""
    path = build_case(tmp_path, "QUIET_RING")
    seen = []
    with BPFObject("case", path=path, rodata={"test_tgid": os.getpid()}) as obj:
        ring = obj.ring_buffer("events", "quiet_event", lambda e: seen.append(e.n))
        for n in range(1, 51):
            os.getppid()
            assert ring.poll(0) == 1 and seen[-1] == n
    assert seen == list(range(1, 51))


def resolved(dump: str, name: str) -> str:
    """A plain typedef's name (gfp_t) as what it stands for in bpftool's dump."""
    import re
    m = re.search(rf"^typedef ([\w ]+) {re.escape(name)};$", dump, re.M)
    return resolved(dump, m.group(1)) if m else name


def test_tracepoint_argument_types_agree_with_bpftool():
    """checks.tracepoint_arg_type reads the kernel's BTF itself; bpftool's C dump of the same
    BTF is the outside reference. One parse serves a shared block and is freed at its end."""
    from netkit.engine import checks
    dump = subprocess.run(["bpftool", "btf", "dump", "file", str(checks.KERNEL_BTF), "format",
                           "c"], capture_output=True, text=True, check=True).stdout
    cases = ["kfree_skb", "tcp_retransmit_skb", "kmem_cache_alloc", "inet_sock_set_state"]
    with checks.shared_kernel_btf():
        for name in cases:
            line = next(l for l in dump.splitlines()
                        if l.startswith(f"typedef void (*btf_trace_{name})("))
            params = line.split(")(", 1)[1].rsplit(");", 1)[0].split(", ")[1:]
            # netkit's checks name the type without qualifiers and through typedefs
            wanted = [resolved(dump, p.replace("const ", "")) for p in params]
            checks.tracepoint_arg_type.cache_clear()
            got = [checks.tracepoint_arg_type(name, i) for i in range(len(params) + 1)]
            assert got == wanted + [None], (name, line)
        assert checks._shared_btf[0]
    assert checks._shared_btf is None
