"""ctypes declarations for the parts of libbpf 1.x (libbpf.so.1) that netkit uses.

Only prototypes live here; netkit.engine.bpfobject wraps them in Python objects. Every pointer
returned by libbpf is kept as a plain int (c_void_p) so nothing here owns memory.
"""
from __future__ import annotations

import ctypes
from ctypes import (CFUNCTYPE, POINTER, c_bool, c_char_p, c_int, c_size_t, c_uint,
                    c_uint32, c_uint64, c_void_p)

from netkit.engine.errors import NetkitError

try:
    lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
except OSError as exc:
    raise NetkitError(f"cannot load libbpf.so.1 ({exc}): install libbpf1 (Debian, Ubuntu) or "
                      f"libbpf (Fedora, RHEL, Alpine, Arch)") from None
# The C library the interpreter already runs on, by no file name: glibc's libc.so.6 does not
# exist on musl (Alpine).
libc = ctypes.CDLL(None, use_errno=True)

# libbpf's print callback receives a va_list; on x86-64 and arm64 it arrives as a pointer that
# vsnprintf can consume directly.
PRINT_FN = CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
RINGBUF_SAMPLE_FN = CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)


class UprobeOpts(ctypes.Structure):
    """struct bpf_uprobe_opts as of libbpf 1.1 (sz first, so newer libbpf accepts it too)."""
    _fields_ = [("sz", c_size_t), ("ref_ctr_offset", c_size_t), ("bpf_cookie", c_uint64),
                ("retprobe", c_bool), ("func_name", c_char_p)]


class ObjectOpenOpts(ctypes.Structure):
    """The head of struct bpf_object_open_opts: libbpf reads only the fields `sz` covers."""
    _fields_ = [("sz", c_size_t), ("object_name", c_char_p)]


class BtfType(ctypes.Structure):
    """struct btf_type: kind-specific records follow it in memory."""
    _fields_ = [("name_off", c_uint32), ("info", c_uint32), ("size_or_type", c_uint32)]


def _proto(name, restype, *argtypes):
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


libbpf_set_print = _proto("libbpf_set_print", c_void_p, PRINT_FN)
libbpf_num_possible_cpus = _proto("libbpf_num_possible_cpus", c_int)

bpf_object__open_file = _proto("bpf_object__open_file", c_void_p, c_char_p, c_void_p)
bpf_object__open_mem = _proto("bpf_object__open_mem", c_void_p, c_void_p, c_size_t,
                              POINTER(ObjectOpenOpts))
bpf_object__load = _proto("bpf_object__load", c_int, c_void_p)
bpf_object__close = _proto("bpf_object__close", None, c_void_p)
bpf_object__btf = _proto("bpf_object__btf", c_void_p, c_void_p)
bpf_object__next_program = _proto("bpf_object__next_program", c_void_p, c_void_p, c_void_p)
bpf_object__next_map = _proto("bpf_object__next_map", c_void_p, c_void_p, c_void_p)

bpf_program__name = _proto("bpf_program__name", c_char_p, c_void_p)
bpf_program__section_name = _proto("bpf_program__section_name", c_char_p, c_void_p)
bpf_program__set_autoload = _proto("bpf_program__set_autoload", c_int, c_void_p, c_bool)
bpf_program__autoload = _proto("bpf_program__autoload", c_bool, c_void_p)
bpf_program__fd = _proto("bpf_program__fd", c_int, c_void_p)
bpf_program__set_expected_attach_type = _proto("bpf_program__set_expected_attach_type", c_int,
                                               c_void_p, c_uint)
bpf_program__attach = _proto("bpf_program__attach", c_void_p, c_void_p)
bpf_program__attach_uprobe_opts = _proto("bpf_program__attach_uprobe_opts", c_void_p, c_void_p,
                                         c_int, c_char_p, c_size_t, POINTER(UprobeOpts))
bpf_link__destroy = _proto("bpf_link__destroy", c_int, c_void_p)

bpf_map__name = _proto("bpf_map__name", c_char_p, c_void_p)
bpf_map__fd = _proto("bpf_map__fd", c_int, c_void_p)
bpf_map__type = _proto("bpf_map__type", c_int, c_void_p)
bpf_map__key_size = _proto("bpf_map__key_size", c_uint32, c_void_p)
bpf_map__value_size = _proto("bpf_map__value_size", c_uint32, c_void_p)
bpf_map__btf_key_type_id = _proto("bpf_map__btf_key_type_id", c_uint32, c_void_p)
bpf_map__btf_value_type_id = _proto("bpf_map__btf_value_type_id", c_uint32, c_void_p)
bpf_map__initial_value = _proto("bpf_map__initial_value", c_void_p, c_void_p, POINTER(c_size_t))

bpf_map_lookup_elem = _proto("bpf_map_lookup_elem", c_int, c_int, c_void_p, c_void_p)
bpf_map_update_elem = _proto("bpf_map_update_elem", c_int, c_int, c_void_p, c_void_p, c_uint64)
bpf_map_delete_elem = _proto("bpf_map_delete_elem", c_int, c_int, c_void_p)
bpf_map_get_next_key = _proto("bpf_map_get_next_key", c_int, c_int, c_void_p, c_void_p)

btf__find_by_name_kind = _proto("btf__find_by_name_kind", c_int, c_void_p, c_char_p, c_uint)
btf__type_by_id = _proto("btf__type_by_id", POINTER(BtfType), c_void_p, c_uint32)
btf__name_by_offset = _proto("btf__name_by_offset", c_char_p, c_void_p, c_uint32)
btf__load_vmlinux_btf = _proto("btf__load_vmlinux_btf", c_void_p)
btf__parse = _proto("btf__parse", c_void_p, c_char_p, c_void_p)
btf__free = _proto("btf__free", None, c_void_p)

ring_buffer__new = _proto("ring_buffer__new", c_void_p, c_int, RINGBUF_SAMPLE_FN, c_void_p, c_void_p)
ring_buffer__poll = _proto("ring_buffer__poll", c_int, c_void_p, c_int)
ring_buffer__consume = _proto("ring_buffer__consume", c_int, c_void_p)
ring_buffer__free = _proto("ring_buffer__free", None, c_void_p)

libbpf_strerror = _proto("libbpf_strerror", c_int, c_int, c_char_p, c_size_t)
vsnprintf = libc.vsnprintf
vsnprintf.restype = c_int
vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]

class UprobeMultiLinkAttr(ctypes.Structure):
    """The BPF_LINK_CREATE part of union bpf_attr for uprobe_multi links (kernel >= 6.6), which
    libbpf 1.1 cannot make: one link, many offsets, and one RCU wait to detach instead of one
    per probe."""
    _fields_ = [("prog_fd", c_uint32), ("target_fd", c_uint32), ("attach_type", c_uint32),
                ("flags", c_uint32), ("path", c_uint64), ("offsets", c_uint64),
                ("ref_ctr_offsets", c_uint64), ("cookies", c_uint64), ("cnt", c_uint32),
                ("multi_flags", c_uint32), ("pid", c_uint32), ("_pad", c_uint32)]


BPF_LINK_CREATE = 28
BPF_TRACE_UPROBE_MULTI = 48
BPF_F_UPROBE_MULTI_RETURN = 1
NR_BPF = {"x86_64": 321, "aarch64": 280}


def bpf_syscall(cmd: int, attr) -> int:
    """The bpf(2) system call; returns its result or -errno."""
    import os
    res = libc.syscall(ctypes.c_long(NR_BPF[os.uname().machine]), c_int(cmd),
                       ctypes.byref(attr), c_uint(ctypes.sizeof(attr)))
    return res if res >= 0 else -ctypes.get_errno()


# BTF kinds (linux/btf.h)
BTF_KIND_INT, BTF_KIND_PTR, BTF_KIND_ARRAY, BTF_KIND_STRUCT, BTF_KIND_UNION = 1, 2, 3, 4, 5
BTF_KIND_ENUM, BTF_KIND_FWD, BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST = 6, 7, 8, 9, 10
BTF_KIND_RESTRICT, BTF_KIND_VAR, BTF_KIND_DATASEC, BTF_KIND_FLOAT = 11, 14, 15, 16
BTF_KIND_TYPE_TAG, BTF_KIND_ENUM64 = 18, 19

# Map types whose values come once per possible CPU.
PERCPU_MAP_TYPES = {5, 6, 10}  # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH


def strerror(err: int) -> str:
    buf = ctypes.create_string_buffer(256)
    libbpf_strerror(err, buf, len(buf))
    return buf.value.decode(errors="replace")
