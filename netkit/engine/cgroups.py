"""cgroup v2 ids as paths. A BPF program records bpf_get_current_cgroup_id(), which is the
inode number of the cgroup's directory in the v2 hierarchy; userspace shows its path relative
to the mount (/system.slice/nginx.service, / for the root), as `systemd-cgls` would."""
from __future__ import annotations

import os
import time
from pathlib import Path

from netkit.engine.bpfobject import CGROUP_ROOTS


class CgroupNames:
    """cgroup id -> path, from a walk of the v2 mount; walked again (at most once a second)
    when an id is not known yet, so cgroups created while tracing get their names."""

    RESCAN_AFTER = 1.0

    def __init__(self, root: Path | None = None):
        self.root = root or next((r for r in reversed(CGROUP_ROOTS)
                                  if (r / "cgroup.controllers").exists()), CGROUP_ROOTS[-1])
        self.paths: dict[int, str] = {}
        self.scanned = -self.RESCAN_AFTER

    def _scan(self) -> None:
        self.scanned = time.monotonic()
        for directory, _subdirs, _files in os.walk(self.root):
            try:
                inode = os.stat(directory).st_ino
            except OSError:
                continue                    # removed while we walked
            relative = os.path.relpath(directory, self.root)
            self.paths[inode] = "/" if relative == "." else "/" + relative

    def path(self, cgroup_id: int) -> str | None:
        """The cgroup's path, or None for a cgroup that is gone (or an id of cgroup v1)."""
        if cgroup_id not in self.paths and time.monotonic() - self.scanned >= self.RESCAN_AFTER:
            self._scan()
        return self.paths.get(cgroup_id)
