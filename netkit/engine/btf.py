"""ctypes types built from BTF, so struct layouts are written once, in C.

A struct shared between a BPF program and Python (an event, a map key or value) is read from the
object's BTF at open time and turned into a ctypes.Structure with the same field offsets.
"""
from __future__ import annotations

import ctypes
import os

from netkit.engine import libbpf as L
from netkit.engine.errors import NetkitError

_INT_TYPES = {(1, False): ctypes.c_uint8, (1, True): ctypes.c_int8,
              (2, False): ctypes.c_uint16, (2, True): ctypes.c_int16,
              (4, False): ctypes.c_uint32, (4, True): ctypes.c_int32,
              (8, False): ctypes.c_uint64, (8, True): ctypes.c_int64}
_QUALIFIERS = {L.BTF_KIND_TYPEDEF, L.BTF_KIND_VOLATILE, L.BTF_KIND_CONST, L.BTF_KIND_RESTRICT,
               L.BTF_KIND_TYPE_TAG}


def kind_of(t) -> int:
    return (t.info >> 24) & 0x1F


def vlen_of(t) -> int:
    return t.info & 0xFFFF


def records(t, record_type, count):
    """The kind-specific records that follow a btf_type in memory."""
    base = ctypes.addressof(t) + ctypes.sizeof(L.BtfType)
    return (record_type * count).from_address(base)


class _Member(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32), ("offset", ctypes.c_uint32)]


class _Array(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("index_type", ctypes.c_uint32), ("nelems", ctypes.c_uint32)]


class _Enum(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("val", ctypes.c_int32)]


class _Enum64(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("lo32", ctypes.c_uint32), ("hi32", ctypes.c_uint32)]


class Param(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32)]


class VarSecinfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("offset", ctypes.c_uint32), ("size", ctypes.c_uint32)]


class BtfTypes:
    """Builds (and caches) ctypes types for the type ids of one BTF object."""

    def __init__(self, btf: int):
        self.btf = btf
        self._cache: dict[int, type] = {}

    def name(self, t) -> str:
        return (L.btf__name_by_offset(self.btf, t.name_off) or b"").decode()

    def type(self, type_id: int):
        return L.btf__type_by_id(self.btf, type_id).contents

    def strip(self, type_id: int) -> int:
        """Follow typedefs and qualifiers to the real type."""
        while kind_of(self.type(type_id)) in _QUALIFIERS:
            type_id = self.type(type_id).size_or_type
        return type_id

    def find_struct(self, name: str) -> type:
        type_id = L.btf__find_by_name_kind(self.btf, name.encode(), L.BTF_KIND_STRUCT)
        if type_id < 0:
            raise NetkitError(f"struct {name} is not in the BPF object's BTF")
        return self.ctype(type_id)

    def constants(self, name: str, where: str = "the BPF object's BTF") -> list[tuple[str, int]]:
        """(name, value) of each constant of `enum <name>`, as C spells them."""
        type_id = L.btf__find_by_name_kind(self.btf, name.encode(), L.BTF_KIND_ENUM)
        if type_id < 0:
            type_id = L.btf__find_by_name_kind(self.btf, name.encode(), L.BTF_KIND_ENUM64)
        if type_id < 0:
            raise NetkitError(f"enum {name} is not in {where}")
        t = self.type(type_id)
        if kind_of(t) == L.BTF_KIND_ENUM:
            return [(self.name(e), e.val) for e in records(t, _Enum, vlen_of(t))]
        return [(self.name(e), e.hi32 << 32 | e.lo32) for e in records(t, _Enum64, vlen_of(t))]

    def enum(self, name: str) -> dict[str, int]:
        """name -> value of each constant of `enum <name>`, in lower case and without the prefix
        all of them share up to an underscore (CAUSE_ of CAUSE_CORK, CAUSE_RWND; RESULT_ of a
        lone RESULT_CLOSED)."""
        pairs = self.constants(name)
        common = os.path.commonprefix([n for n, _ in pairs])
        prefix = common[:common.rfind("_") + 1]
        return {n[len(prefix):].lower(): v for n, v in pairs}

    def variables(self, section: str) -> dict[str, tuple[int, int]]:
        """name -> (offset, size) of the variables of a data section (".rodata", ".bss")."""
        sec_id = L.btf__find_by_name_kind(self.btf, section.encode(), L.BTF_KIND_DATASEC)
        if sec_id < 0:
            return {}
        sec = self.type(sec_id)
        return {self.name(self.type(info.type)): (info.offset, info.size)
                for info in records(sec, VarSecinfo, vlen_of(sec))}

    def ctype(self, type_id: int) -> type:
        type_id = self.strip(type_id)
        if type_id not in self._cache:
            self._cache[type_id] = self._build(type_id)
        return self._cache[type_id]

    def _build(self, type_id: int) -> type:
        t = self.type(type_id)
        kind = kind_of(t)
        if kind == L.BTF_KIND_INT:
            encoding = records(t, ctypes.c_uint32, 1)[0] >> 24
            if t.size_or_type == 1 and (encoding & 2 or self.name(t) == "char"):  # bytes, not ints
                return ctypes.c_char
            if encoding & 4:
                return ctypes.c_bool
            return _INT_TYPES[(t.size_or_type, bool(encoding & 1))]
        if kind in (L.BTF_KIND_ENUM, L.BTF_KIND_ENUM64):
            return _INT_TYPES[(t.size_or_type, False)]
        if kind == L.BTF_KIND_PTR:
            return ctypes.c_uint64
        if kind == L.BTF_KIND_ARRAY:
            arr = records(t, _Array, 1)[0]
            return self.ctype(arr.type) * arr.nelems
        if kind in (L.BTF_KIND_STRUCT, L.BTF_KIND_UNION):
            return self._build_record(t, kind == L.BTF_KIND_UNION)
        if kind == L.BTF_KIND_DATASEC:
            return self._build_datasec(t)
        raise NetkitError(f"BTF type kind {kind} has no ctypes form")

    def _build_record(self, t, is_union: bool) -> type:
        fields, pos, pad = [], 0, 0
        for m in records(t, _Member, vlen_of(t)):
            if t.info >> 31 and m.offset >> 24:
                raise NetkitError(f"bitfield in shared struct {self.name(t)}; use whole integers")
            offset = (m.offset & 0xFFFFFF) // 8
            ctype = self.ctype(m.type)
            if not is_union and offset > pos:
                fields.append((f"_pad{pad}", ctypes.c_uint8 * (offset - pos)))
                pad += 1
            fields.append((self.name(m) or f"_anon{pad}", ctype))
            pos = offset + ctypes.sizeof(ctype)
        if not is_union and t.size_or_type > pos:
            fields.append((f"_pad{pad}", ctypes.c_uint8 * (t.size_or_type - pos)))
        base = ctypes.Union if is_union else ctypes.Structure
        cls = type(self.name(t) or "anon", (base,), {"_pack_": 1, "_fields_": fields})
        assert ctypes.sizeof(cls) == t.size_or_type, (self.name(t), ctypes.sizeof(cls))
        return cls


    def _build_datasec(self, t) -> type:
        """A global data section (.bss, .data, .rodata) as one struct of its variables."""
        fields, pos, pad = [], 0, 0
        for info in records(t, VarSecinfo, vlen_of(t)):
            var = self.type(info.type)
            if info.offset > pos:
                fields.append((f"_pad{pad}", ctypes.c_uint8 * (info.offset - pos)))
                pad += 1
            ctype = self.ctype(var.size_or_type)
            fields.append((self.name(var), ctype))
            pos = info.offset + ctypes.sizeof(ctype)
        if t.size_or_type > pos:
            fields.append((f"_pad{pad}", ctypes.c_uint8 * (t.size_or_type - pos)))
        return type(self.name(t).lstrip("."), (ctypes.Structure,), {"_pack_": 1, "_fields_": fields})


def object_types(path) -> BtfTypes:
    """The BTF of a BPF object file, parsed without opening the object (no privilege needed):
    for checks that Python and C agree."""
    btf = L.btf__parse(str(path).encode(), None)
    if not btf:
        raise NetkitError(f"cannot read the BTF of {path}")
    return BtfTypes(btf)
