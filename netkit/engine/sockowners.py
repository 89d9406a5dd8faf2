"""bpf_programs/sockowners.h from userspace: the programs that remember each TCP socket's owner.
They trace every syscall exit, so a tool that needs owners only for -p/-n/-c (tcprtt) or only in
one of its modes (skbdrop's object serves tcpdrop too) loads them but leaves them unattached
otherwise: BPFObject(..., manual=unattached(needed))."""
from __future__ import annotations

PROGRAMS = frozenset({"sockowner_state", "sockowner_accept", "sockowner_send",
                      "sockowner_destroy"})


def unattached(needed: bool) -> frozenset[str]:
    return frozenset() if needed else PROGRAMS


def process_filtered(pid, name, cgroup) -> bool:
    return pid is not None or name is not None or cgroup is not None
