"""What netkit needs only when it runs as one file (netkit.pyz, made by tools/dist.py).

Python's zipimport reads pure-Python modules from the zip but no extension module: a compiled
dependency (psutil's _psutil_linux.abi3.so, for `netkit top`) would fail to import. The finder
below, consulted after Python's own, takes such a module from the zip into an anonymous memory
file (memfd) and lets the interpreter dlopen it by its /proc/self/fd path, so, as with the BPF
objects, nothing is extracted to disk and nothing is left behind. The extension was built for
the machine that ran `make dist` (its architecture, glibc's manylinux ABI); elsewhere dlopen's
own error is the ImportError.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

EXTENSION = ".abi3.so"      # the stable ABI: one build for every Python 3 the pyz runs under


class ExtensionsInZip:
    """A meta-path finder for the extension modules of one zip archive."""

    def __init__(self, archive: str):
        self.archive = archive
        self._members: dict[str, str] | None = None       # module name -> member, read on need
        self.fds: list[int] = []                          # kept open: the mapping's name

    def members(self) -> dict[str, str]:
        if self._members is None:
            import zipfile              # only when a module no other finder found is asked for
            with zipfile.ZipFile(self.archive) as zf:
                self._members = {name.split(".")[0].replace("/", "."): name
                                 for name in zf.namelist() if name.endswith(EXTENSION)}
        return self._members

    def find_spec(self, fullname: str, path=None, target=None):
        # Only a module inside this archive: a package of the zip asks with its __path__.
        if not path or not any(str(entry).startswith(self.archive + os.sep) for entry in path):
            return None
        member = self.members().get(fullname)
        if member is None:
            return None
        import zipfile
        with zipfile.ZipFile(self.archive) as zf:
            image = zf.read(member)
        fd = os.memfd_create(fullname, os.MFD_CLOEXEC)
        self.fds.append(fd)
        view = memoryview(image)
        while view:
            view = view[os.write(fd, view):]
        location = f"/proc/self/fd/{fd}"
        loader = importlib.machinery.ExtensionFileLoader(fullname, location)
        return importlib.util.spec_from_file_location(fullname, location, loader=loader)


def install(archive: str) -> None:
    """Last on sys.meta_path: asked only for what no other finder found."""
    sys.meta_path.append(ExtensionsInZip(archive))
