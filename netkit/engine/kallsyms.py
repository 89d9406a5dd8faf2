"""Where kernel functions lie, from /proc/kallsyms: a BPF program can then tell from a
tracepoint's call_site which function made the call (skblife: which allocations are sk_buffs).
Text symbols only; root reads real addresses (kptr_restrict permitting), others read zeros."""
from __future__ import annotations

import re
from pathlib import Path

from netkit.engine.errors import NetkitError

KALLSYMS = Path("/proc/kallsyms")


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
