"""Drop reasons as the running kernel names them.

skb:kfree_skb carries an `enum skb_drop_reason`, whose numbers change from one kernel to the
next as reasons are added in the middle (SOCKET_RCVBUFF is 6 on 6.18; QUEUE_PURGE moved by
dozens). The names come from the kernel's own BTF, never from a table here: SKB_DROP_REASON_X
shows as X, as the kernel's tracefs format prints it. A reason of a subsystem (the upper 16 bits:
mac80211, openvswitch) is named from enum skb_drop_reason_subsys, its code as a number (the
subsystems' own enums live in their modules' BTF).
"""
from __future__ import annotations

import functools

from netkit.engine import libbpf as L
from netkit.engine.btf import BtfTypes
from netkit.engine.errors import NetkitError

PREFIX = "SKB_DROP_REASON_"
SUBSYS_SHIFT = 16


@functools.cache
def kernel_drop_reasons() -> "DropReasons":
    from netkit.engine import signals
    with signals.held():                # libbpf prints (calls back into Python) as it loads
        btf = L.btf__load_vmlinux_btf()
    if not btf:
        raise NetkitError("cannot read kernel BTF (/sys/kernel/btf/vmlinux): drop reasons are "
                          "named from it; a kernel with CONFIG_DEBUG_INFO_BTF is needed")
    try:
        types = BtfTypes(btf)
        where = "this kernel's BTF (drop reasons arrived in 5.17)"
        reasons = types.constants("skb_drop_reason", where)
        try:
            subsystems = types.constants("skb_drop_reason_subsys", where)
        except NetkitError:
            subsystems = []
        return DropReasons(reasons, subsystems)
    finally:
        L.btf__free(btf)


class DropReasons:
    """value <-> name of the kernel's drop reasons (NO_SOCKET, SOCKET_RCVBUFF, ...)."""

    def __init__(self, constants: list[tuple[str, int]], subsystems: list[tuple[str, int]]):
        self.names: dict[int, str] = {}
        for name, value in constants:
            if name.endswith(("_MAX", "_SUBSYS_MASK")) or value < 0:
                continue
            # SKB_DROP_REASON_SKB_CSUM is SKB_CSUM; SKB_CONSUMED (no drop) is CONSUMED
            self.names[value] = (name.removeprefix(PREFIX) if name.startswith(PREFIX)
                                 else name.removeprefix("SKB_"))
        self.subsystems = {value: name.removeprefix(PREFIX + "SUBSYS_")
                           for name, value in subsystems if not name.endswith("_NUM")}

    def name(self, value: int) -> str:
        if value in self.names:
            return self.names[value]
        subsystem, code = value >> SUBSYS_SHIFT, value & ((1 << SUBSYS_SHIFT) - 1)
        if subsystem:
            return f"{self.subsystems.get(subsystem, f'SUBSYS_{subsystem}')}:{code}"
        return f"REASON_{value}"

    def value(self, name: str) -> int:
        for value, known in self.names.items():
            if known == name:
                return value
        raise KeyError(name)
