"""How the socket tools write what they share: address families and protocols by name, the
result of a socket syscall, an IP endpoint (bpf_programs/sockaddr.h's struct ip_endpoint) and
the process a socket event belongs to (bpf_programs/owner.h's struct owner, or the struct
sock_owner kept with a TCP socket), its cgroup as a path."""
from __future__ import annotations

import socket
from typing import NamedTuple

from netkit.render.fields import comm, errno_name, ip_address, ip_version

# Codes a syscall returns inside the kernel when a signal interrupted it; the process sees
# EINTR, or the call is restarted (include/linux/errno.h). The sys_exit tracepoint sees these.
RESTART_CODES = {512: "ERESTARTSYS", 513: "ERESTARTNOINTR", 514: "ERESTARTNOHAND",
                 516: "ERESTART_RESTARTBLOCK"}

# Where several IPPROTO_* names share a number, the one a socket's protocol means.
_PREFERRED = {0: "IPPROTO_IP"}
_IPPROTO = {**{getattr(socket, name): name for name in sorted(dir(socket), reverse=True)
               if name.startswith("IPPROTO_")}, **_PREFERRED}


def family_name(af: int) -> str:
    """AF_INET for 2, AF_UNIX for 1; AF_<n> for a family Python does not know."""
    try:
        return socket.AddressFamily(af).name
    except ValueError:
        return f"AF_{af}"


def is_ip_family(af: int) -> bool:
    return af in (socket.AF_INET, socket.AF_INET6)


def ipproto_name(protocol: int, af: int) -> str:
    """IPPROTO_TCP for 6 on an IP socket; "-" for other families, whose protocol numbers are
    their own (AF_UNIX sockets have 0)."""
    if not is_ip_family(af):
        return "-"
    return _IPPROTO.get(protocol, f"IPPROTO_{protocol}")


def totals_by_call(totals: dict) -> dict[str, int]:
    """New connections counted by keys that carry `call`, summed into connect and accept."""
    return {call: sum(n for key, n in totals.items() if key.call == call)
            for call in ("connect", "accept")}


def result(code: int) -> str:
    """A syscall's result by name: OK for 0 (or a returned descriptor: give 0), else the errno
    name of -code or code (ECONNREFUSED, EINPROGRESS, ERESTARTSYS...)."""
    code = abs(code)
    if code == 0:
        return "OK"
    return RESTART_CODES.get(code) or errno_name(code)


class Endpoint:
    """A struct ip_endpoint as text: the address as the socket holds it (an IPv4-mapped
    address stays IPv6, as the process saw it), its port, and its family as IPv4/IPv6."""
    __slots__ = ("family", "address", "port")

    def __init__(self, raw):
        self.family = raw.family
        self.address = ip_address(raw.family, raw.addr, unmap=False) if raw.family else ""
        self.port = raw.port

    @property
    def version(self) -> str:
        return ip_version(self.family) if self.family else "-"

    def __bool__(self) -> bool:
        return bool(self.family)


class Owners:
    """Turns struct owner values into the fields every socket event shows: pid, tid, comm and
    cgroup (the v2 path, as systemd-cgls shows it; None when the cgroup is gone)."""

    def __init__(self):
        from netkit.engine.cgroups import CgroupNames
        self.cgroups = CgroupNames()

    def fields(self, owner) -> dict:
        return {"pid": owner.pid, "tid": owner.tid, "comm": comm(owner.comm),
                "cgroup": self.cgroups.path(owner.cgroup_id)}

    def of_socket(self, kept) -> SocketOwner:
        """A struct sock_owner decoded."""
        task = kept.task
        cgroup = self.cgroups.path(task.cgroup_id) if task.cgroup_id else None
        if not task.pid:
            return SocketOwner(None, None, kept.uid, cgroup)
        return SocketOwner(task.pid, comm(task.comm), kept.uid, cgroup)


class SocketOwner(NamedTuple):
    """A struct sock_owner: the process that owned a socket when one of its events happened
    (maybe in softirq, on another task). pid and comm are None when nobody was seen owning it
    (a socket older than the trace); uid and cgroup are then the socket's own."""
    pid: int | None
    comm: str | None
    uid: int
    cgroup: str | None

    @property
    def cells(self) -> list:
        """PID and COMM as table cells ("-" when not known)."""
        return ["-" if self.pid is None else self.pid, self.comm or "-"]
