"""Reading a child process's output up to a marker, shared by the tests and the benches."""
from __future__ import annotations

import os
import select
import subprocess
import time


def read_until(proc: subprocess.Popen, stream, marker: str, timeout: float) -> tuple[bool, str]:
    """Read `stream` of `proc` until `marker` shows or `timeout` s pass; (found, what was read).
    It reads the pipe itself: readline() after select() would leave a second line that came in
    the same chunk in Python's buffer, where select() cannot see it."""
    fd, seen = stream.fileno(), b""
    deadline = time.monotonic() + timeout
    while marker.encode() not in seen and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    return marker.encode() in seen, seen.decode(errors="replace")
