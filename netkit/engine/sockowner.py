"""The owner of a TCP socket as bpf_programs/sockowner.h records it (struct sock_owner): the
process that acted on the socket from process context, read back for events that fire in
softirq. pid 0 means nobody was seen owning it (a socket older than the trace); its cgroup and
uid are then the socket's own."""
from __future__ import annotations

from typing import NamedTuple

from netkit.engine.cgroups import CgroupNames


class Owner(NamedTuple):
    pid: int | None             # None: not known
    comm: str | None
    uid: int
    cgroup: str | None          # cgroup v2 path; None when unknown or gone

    @property
    def pid_text(self) -> str:
        return "-" if self.pid is None else str(self.pid)

    @property
    def comm_text(self) -> str:
        return "-" if self.comm is None else self.comm


class Owners:
    """Decodes struct sock_owner values, cgroup ids to paths through one CgroupNames cache."""

    def __init__(self):
        self.cgroups = CgroupNames()

    def __call__(self, raw) -> Owner:
        from netkit.render.fields import comm
        cgroup = self.cgroups.path(raw.cgroup_id) if raw.cgroup_id else None
        if not raw.pid:
            return Owner(None, None, raw.uid, cgroup)
        return Owner(raw.pid, comm(raw.comm), raw.uid, cgroup)
