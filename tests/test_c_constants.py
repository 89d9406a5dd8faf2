"""Numbers Python needs before it opens a BPF object are written twice, once in C and once in
Python; each pair is tied here to the object's BTF (no privilege needed), so neither side can
change alone. Names that C defines (hold causes, libc functions) are read from BTF at run time
and need no copy."""
from __future__ import annotations

import ctypes

import pytest

from conftest import object_types


def _array_length(struct: type, field: str) -> int:
    return dict(struct._fields_)[field]._length_


@pytest.mark.parametrize("tool", ["sockstat", "soconnlat", "tcpnagle", "gethostlatency",
                                  "superping", "ieee80211scan", "netsize", "nettxlat",
                                  "qdisclat", "skblife", "sofamily", "soprotocol", "soconnect",
                                  "soaccept", "socketio", "socksize", "sormem", "so1stbyte",
                                  "tcpstates", "tcplife", "tcpconnect", "tcpaccept",
                                  "tcpconnlat", "tcpretrans", "skbdrop", "tcprtt", "tcpwin",
                                  "tcpsynbl", "ipecn"])
def test_common_h_limits_match_python(tool):
    from netkit.cli.options import MAX_PORTS
    from netkit.engine.hist import MAX_SLOTS
    types = object_types(tool)
    rodata = types.variables(".rodata")
    if "filter_dports" in rodata:           # only objects that filter on ports keep the array
        assert rodata["filter_dports"][1] == MAX_PORTS * ctypes.sizeof(ctypes.c_uint16)
        assert rodata["filter_lports"][1] == MAX_PORTS * ctypes.sizeof(ctypes.c_uint16)
    try:
        hist = types.find_struct("log2_hist")
    except Exception:
        return                              # this object keeps no histogram
    assert _array_length(hist, "slots") == MAX_SLOTS


def test_port_filters_are_in_the_objects_that_take_ports():
    for tool in ("soconnlat", "tcpnagle", "soconnect", "socketio", "so1stbyte", "soaccept",
                 "tcpstates", "tcplife", "tcpconnect", "tcpaccept"):
        assert "filter_dports" in object_types(tool).variables(".rodata"), tool


def test_soconnlat_result_closed():
    from netkit.tools.soconnlat import RESULT_CLOSED
    assert object_types("soconnlat").enum("soconnlat_result") == {"closed": RESULT_CLOSED}


def test_gethostlatency_herrno_unknown():
    from netkit.tools.gethostlatency import HERRNO_UNKNOWN
    assert object_types("gethostlatency").enum("herrno_value") == {"unknown": HERRNO_UNKNOWN}


def test_tcpnagle_nonagle_values():
    from netkit.tools.tcpnagle import NONAGLE_VALUES
    counts = object_types("tcpnagle").find_struct("tcpnagle_counts")
    assert _array_length(counts, "sends") == NONAGLE_VALUES


def test_gethostlatency_functions_have_entry_programs():
    """Each libc function of enum lookup_func has its entry program enter_<name>."""
    from netkit.engine import libbpf as L
    types = object_types("gethostlatency")
    functions = types.enum("lookup_func")
    assert list(functions) == ["getaddrinfo", "gethostbyname", "gethostbyname2",
                               "gethostbyname_r", "gethostbyname2_r"]
    btf_kind_func = 12
    for name in functions:
        assert L.btf__find_by_name_kind(types.btf, f"enter_{name}".encode(), btf_kind_func) > 0


def test_qdisclat_kind_length():
    from netkit.tools.qdisclat import KIND_LEN
    assert _array_length(object_types("qdisclat").find_struct("qdisc_key"), "kind") == KIND_LEN


def test_skblife_allocators_fit():
    """allocator_start[0] is __alloc_skb (the cache learner); the list fits the C arrays."""
    from netkit.tools.skblife import ALLOCATORS
    rodata = object_types("skblife").variables(".rodata")
    assert ALLOCATORS[0] == "__alloc_skb"
    assert len(ALLOCATORS) * 8 == rodata["allocator_start"][1] == rodata["allocator_end"][1]


def test_netsize_points_are_the_pythons():
    from netkit.tools.netsize import POINTS
    assert sorted(object_types("netsize").enum("netsize_point")) == sorted(POINTS)


def test_tcp_state_names_follow_the_kernel():
    """render/tcp.py's STATES against the kernel's TCP state enum (vmlinux.h, from BTF)."""
    import re
    from conftest import ROOT
    from netkit.render.tcp import STATES
    header = (ROOT / "build" / "vmlinux.h").read_text()
    body = re.search(r"enum \{\n(\s*TCP_ESTABLISHED = 1,.*?)\};", header, re.S).group(1)
    kernel = dict(re.findall(r"TCP_(\w+) = (\d+)", body))
    assert {name: int(n) for name, n in kernel.items() if name != "MAX_STATES"} == \
        {name: n for n, name in enumerate(STATES) if name}


def test_skbdrop_array_reasons():
    from netkit.tools.skbdrop import ARRAY_REASONS
    assert object_types("skbdrop").constants("skbdrop_limit") == [("ARRAY_REASONS", ARRAY_REASONS)]


def test_tcprtt_key_by():
    from netkit.tools.tcprtt import KEY_LADDR, KEY_NONE, KEY_RADDR
    assert object_types("tcprtt").constants("rtt_key_by") == [
        ("KEY_NONE", KEY_NONE), ("KEY_LADDR", KEY_LADDR), ("KEY_RADDR", KEY_RADDR)]
