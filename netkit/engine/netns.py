"""Network namespaces as the BPF side names them: by inode number.

A packet event belongs to a network namespace (bpf_programs/netns.h says how a program finds
it); a tool keeps one namespace, by default the one netkit runs in, or all of them and then shows
which one each event came from. The inode is net->ns.inum in the kernel, the st_ino of
/proc/PID/ns/net, and the number `lsns -t net`, `ls -Li /proc/PID/ns/net` and bcc's --netns use.

    filter = netns.resolve(args.netns) if args.netns else netns.current()
    BPFObject("tool", rodata={**netns.rodata(filter), ...})
"""
from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

from netkit.engine.errors import NetkitError

NETNS_RUN_DIR = Path("/run/netns")          # where `ip netns add NAME` bind-mounts a namespace
# The initial namespaces have fixed inodes just below 0xF0000000 (init_net's is 0xEFFFFFF9 on 6.x),
# later ones count up from it: anything far below is no namespace (most likely a PID).
LOWEST_INODE = 0xE0000000
NS_GET_NSTYPE = 0xB703                     # _IO(0xb7, 0x3): the kind of an nsfs file
CLONE_NEWNET = 0x40000000
_KINDS = {0x00020000: "mnt", 0x04000000: "uts", 0x08000000: "ipc", 0x10000000: "user",
          0x20000000: "pid", 0x02000000: "cgroup", 0x00000080: "time", CLONE_NEWNET: "net"}
_READLINK_FORM = re.compile(r"net:\[(\d+)\]")


def current() -> int:
    """The namespace a socket opened now by this thread lands in."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def resolve(spec: str) -> int:
    """The inode of the network namespace `spec` names: an inode number (as lsns shows it, or
    `net:[N]` as readlink shows it), a path to a namespace file (/run/netns/NAME,
    /proc/PID/ns/net) or a bare NAME from `ip netns list`. A bad one is a NetkitError."""
    spec = spec.strip()
    readlink = _READLINK_FORM.fullmatch(spec)
    if spec.isdigit() or readlink:
        inode = int(readlink.group(1) if readlink else spec)
        if not LOWEST_INODE <= inode < 1 << 32:
            raise NetkitError(f"{spec} is not a network namespace inode (those are 10-digit "
                              f"numbers, such as this one's, {current()}); for a process's "
                              f"namespace give /proc/PID/ns/net")
        return inode
    if not spec:
        raise NetkitError("an empty network namespace name")
    named = "/" not in spec
    path = NETNS_RUN_DIR / spec if named else Path(spec)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if named:
            raise NetkitError(f"no network namespace {spec}: there is no {path} "
                              f"(`ip netns list` shows the names)") from None
        raise NetkitError(f"no network namespace {spec}: no such file") from None
    except OSError as exc:
        raise NetkitError(f"cannot open network namespace {path}: {exc.strerror}") from None
    try:
        try:
            kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError:
            raise NetkitError(f"{path} is not a namespace file (give /run/netns/NAME, "
                              f"/proc/PID/ns/net or an inode number)") from None
        if kind != CLONE_NEWNET:
            raise NetkitError(f"{path} is a {_KINDS.get(kind, 'different')} namespace, not a "
                              f"network namespace")
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


def rodata(inode: int | None) -> dict:
    """netns.h's setting: keep the namespace `inode`, or all of them for None."""
    return {"filter_netns": inode or 0}
