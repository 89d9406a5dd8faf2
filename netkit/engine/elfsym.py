"""File offsets of functions in an ELF shared object, for uprobes.

A uprobe is placed at a file offset; the symbol table gives a virtual address, which the
PT_LOAD segment holding it turns into an offset. Only what uprobes need is read: the ELF64
little-endian header, program headers, and the .dynsym/.symtab sections with their strings.
"""
from __future__ import annotations

import struct
from pathlib import Path

from netkit.engine.errors import NetkitError

STT_FUNC, STT_GNU_IFUNC = 2, 10
SHT_SYMTAB, SHT_DYNSYM = 2, 11
PT_LOAD = 1


def function_offsets(path: str, names: list[str]) -> dict[str, int]:
    """name -> file offset for each of `names` defined in the object (missing ones are absent)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise NetkitError(f"cannot read {path}: {exc.strerror}") from None
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise NetkitError(f"{path} is not a 64-bit little-endian ELF object")
    (phoff, shoff, _flags, _ehsize, phentsize, phnum, shentsize, shnum,
     _shstrndx) = struct.unpack_from("<QQIHHHHHH", data, 0x20)
    loads = []
    for i in range(phnum):
        p_type, _pflags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize)
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_filesz, p_offset))
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
                for i in range(shnum)]
    wanted, found = set(names), {}
    for sh_type in (SHT_DYNSYM, SHT_SYMTAB):
        for _name, stype, _f, _addr, offset, size, link, _info, _align, entsize in sections:
            if stype != sh_type or not entsize:
                continue
            strtab = sections[link][4]
            for pos in range(offset, offset + size, entsize):
                st_name, st_info, _other, st_shndx, st_value, _size = struct.unpack_from(
                    "<IBBHQQ", data, pos)
                if not st_value or st_shndx == 0 or (st_info & 0xF) not in (STT_FUNC, STT_GNU_IFUNC):
                    continue
                end = data.index(b"\0", strtab + st_name)
                name = data[strtab + st_name:end].decode(errors="replace")
                if name in wanted and name not in found:
                    found[name] = _file_offset(st_value, loads)
        if len(found) == len(wanted):
            break
    return {name: off for name, off in found.items() if off is not None}


def _file_offset(vaddr: int, loads: list[tuple[int, int, int]]) -> int | None:
    for seg_vaddr, filesz, offset in loads:
        if seg_vaddr <= vaddr < seg_vaddr + filesz:
            return vaddr - seg_vaddr + offset
    return None
