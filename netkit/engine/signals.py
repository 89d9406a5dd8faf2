"""Ctrl-C and SIGTERM held while C code may call back into Python.

Python raises a signal's KeyboardInterrupt wherever the main thread happens to be. Inside a
ctypes callback (libbpf's print function during a load, a ring-buffer sample handler) ctypes
prints and drops it, even at the callback's first line before any try: the stop is lost and the
tool runs on. So every libbpf call that can call back runs inside `held()`: a signal then only
records itself (and interrupts a blocking epoll_wait with EINTR), and KeyboardInterrupt is
raised once the C call has returned. Signals a caller ignores stay ignored.
"""
from __future__ import annotations

import contextlib
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def held():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = {}
    for signum in STOP_SIGNALS:
        if callable(signal.getsignal(signum)):
            previous[signum] = signal.signal(signum, lambda num, frame: caught.append(num))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if caught:
        raise KeyboardInterrupt
