"""Ctrl-C and SIGTERM held while C code may call back into Python.

Python raises a signal's KeyboardInterrupt wherever the main thread happens to be. Inside a
ctypes callback (libbpf's print function during a load, a ring-buffer sample handler) ctypes
prints and drops it, even at the callback's first line before any try: the stop is lost and the
tool runs on. So every libbpf call that can call back runs inside `held()`: a signal then only
records itself (and interrupts a blocking epoll_wait with EINTR), and KeyboardInterrupt is
raised once the C call has returned. Signals a caller ignores stay ignored.

The exception is Stop, a KeyboardInterrupt of netkit's own, never KeyboardInterrupt itself:
CPython marks a KeyboardInterrupt of exactly that type that leaves code run by exec() or eval()
of a string (dataclasses and namedtuple build their methods so, while a tool's module is
imported) as unhandled, even when an outer `except` then handles it, and a program run as a
module or zip (netkit.pyz) then ends killed by SIGINT instead of with its exit status. A
subclass is not so marked, and every `except KeyboardInterrupt` still takes it.

A Stop can still be lost where Python cannot raise at all: a signal whose handler runs inside a
weakref callback (importlib frees a module lock so, during any import), a __del__ or a garbage
collector callback is printed as "Exception ignored" and dropped (CI: tcplife, SIGINT 0.17 s
after start, went on tracing). Python hands each such exception to sys.unraisablehook; netkit's
hook keeps a dropped Stop quietly, and the next checkpoint, `raise_if_lost()`, raises it again:
at the end of every `held()` call (loads, attaches, ring polls) and in every tool's wait.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stop(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: the tools' Ctrl-C path (summary, detach, exit 0)."""


def stop(signum, frame):
    """The handler of both STOP_SIGNALS while netkit runs."""
    raise Stop


_lost = False                   # a Stop that Python dropped (see the module doc), not yet raised
_python_unraisablehook = sys.unraisablehook


def _keep_lost_stop(unraisable) -> None:
    global _lost
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        _lost = True            # Ctrl-C, not an error: nothing printed
        return
    _python_unraisablehook(unraisable)


def install() -> None:
    """Take Ctrl-C and SIGTERM: each ends the run through the tools' Ctrl-C path."""
    sys.unraisablehook = _keep_lost_stop
    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)


def raise_if_lost() -> None:
    """A checkpoint: raise the Stop that Python dropped on its way, once."""
    global _lost
    if _lost:
        _lost = False
        raise Stop


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
        raise Stop
    raise_if_lost()
