"""Where kernel functions lie, from /proc/kallsyms: a BPF program can then tell from a
tracepoint's call_site which function made the call (skblife: which allocations are sk_buffs),
and a kernel stack from bpf_get_stackid reads as function names (skbdrop -s).
Text symbols only; root reads real addresses (kptr_restrict permitting), others read zeros."""
from __future__ import annotations

import bisect
import re
from pathlib import Path

from netkit.engine.errors import NetkitError

KALLSYMS = Path("/proc/kallsyms")
TEXT = frozenset("TtWw")
FARTHEST = 1 << 20       # no kernel function is a megabyte long
# What calls a tracepoint's BPF program, by symbol prefix, and how deep it goes at most.
MACHINERY = ("bpf_prog_", "bpf_trace_run", "__bpf_trace_", "__traceiter_")
MACHINERY_DEPTH = 4


def function_ranges(names: list[str], path: Path = KALLSYMS) -> dict[str, tuple[int, int]]:
    """[start, end) of each named function of the kernel image that exists (end: the next
    symbol's address; the image's symbols are listed in address order)."""
    text = path.read_text()
    wanted = "|".join(re.escape(name) for name in names)
    ranges = {}
    for match in re.finditer(rf"^([0-9a-f]+) [tT] ({wanted})$", text, re.M):
        start = int(match.group(1), 16)
        if start == 0:
            raise NetkitError(f"{path} shows no addresses (kernel.kptr_restrict, or not root): "
                              f"the kernel's function addresses are needed")
        end = next((int(address, 16) for address in
                    re.findall(r"^([0-9a-f]+) ", text[match.end():match.end() + 4096], re.M)
                    if int(address, 16) > start), None)
        if end is not None and match.group(2) not in ranges:
            ranges[match.group(2)] = (start, end)
    return ranges


class KernelSymbols:
    """Kernel text addresses as function+offset (a module's with [module] after it)."""

    def __init__(self, path: Path = KALLSYMS):
        entries = []
        with open(path, "rb") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3 or parts[1].decode() not in TEXT:
                    continue
                address = int(parts[0], 16)
                if address:
                    module = " " + parts[3].decode() if len(parts) > 3 else ""
                    entries.append((address, parts[2].decode(), module))
        entries.sort()
        self.addresses = [a for a, _, _ in entries]
        self.names = [(n, m) for _, n, m in entries]

    def __bool__(self) -> bool:
        return bool(self.addresses)

    def name(self, address: int) -> str | None:
        """function+0xoffset, or None when no symbol covers the address (JIT-compiled BPF
        code, when bpf_jit_kallsyms is off, lies past the last symbol)."""
        i = bisect.bisect_right(self.addresses, address) - 1
        if i < 0:
            return None
        offset = address - self.addresses[i]
        if offset >= FARTHEST:
            return None
        name, module = self.names[i]
        return f"{name}+0x{offset:x}{module}" if offset else f"{name}{module}"

    def stack(self, frames) -> list[str]:
        """The frames of a stack map value (zero ends it) from the code that called the
        tracepoint outwards: the tracing machinery on top is left out."""
        addresses = []
        for address in frames:
            if not address:
                break
            addresses.append(address)
        symbols = [self.name(a) for a in addresses]
        # The machinery is the BPF program itself (bpf_prog_*, or unnamed: the kernel lists
        # JIT-compiled code only with bpf_jit_kallsyms, and only what was loaded before
        # /proc/kallsyms was read here, so it may even take an earlier program's name), then
        # bpf_trace_run*, and __traceiter_* when the tracepoint has more than one probe (one
        # probe is called straight through its static call). Everything up to the last of
        # these among the top frames goes, and any unnamed frame left on top.
        top = max((i + 1 for i, symbol in enumerate(symbols[:MACHINERY_DEPTH])
                   if symbol is not None and symbol.startswith(MACHINERY)), default=0)
        while top < len(symbols) and symbols[top] is None:
            top += 1
        return [symbol or f"0x{address:x}"
                for address, symbol in zip(addresses[top:], symbols[top:])]


class StackNames:
    """The stacks a BPF stack-trace map holds, by id, as lists of function names (each read
    once)."""

    def __init__(self, stack_map, symbols: KernelSymbols):
        self.map, self.symbols = stack_map, symbols
        self.named: dict[int, list[str]] = {}

    def __call__(self, stack_id: int) -> list[str]:
        if stack_id < 0:
            return ["[stack not recorded]"]
        if stack_id not in self.named:
            import struct
            # A stack map has no BTF types: its key and value are plain bytes.
            raw = self.map.lookup(self.map.key_type.from_buffer_copy(struct.pack("I", stack_id)))
            frames = struct.unpack(f"{len(bytes(raw)) // 8}Q", bytes(raw)) if raw else ()
            self.named[stack_id] = self.symbols.stack(frames) or ["[stack gone]"]
        return self.named[stack_id]
