"""Graphite: each interval's Snapshot as carbon plaintext lines, `path value unix_ts\\n`, over TCP.

publish() only formats the lines and appends them to a bounded queue; a daemon thread sends them.
While carbon is unreachable the thread reconnects with exponential backoff and the queue keeps
the newest intervals; when it overflows the oldest interval is dropped and its lines are counted
as lost. The count is reported on stderr when carbon comes back and when netkit stops, and it is
itself sent to carbon as <prefix>.netkit.graphite.lost_metrics so the gap shows on the graphs.
"""
from __future__ import annotations

import collections
import re
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

from netkit.export import ExportError, ExportUsageError, format_host_port, split_host_port
from netkit.metrics import Histogram, Snapshot

DEFAULT_PORT = 2003
_UNSAFE_PATH_CHARS = re.compile(r"[^A-Za-z0-9_\-]")


def path_part(text: str) -> str:
    """One dot-free Graphite path component."""
    return _UNSAFE_PATH_CHARS.sub("_", text) or "_"


def default_prefix() -> str:
    return "netkit." + path_part(socket.gethostname().split(".")[0])


def format_value(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.12g}"


def metric_path(prefix: str, tool: str, name: str, labels: dict[str, str]) -> str:
    """<prefix>.<tool>.<name without the tool's prefix>[.<label>.<value>...] (labels sorted)."""
    short = name[len(tool) + 1:] if name.startswith(tool + "_") else name
    parts = [prefix, path_part(tool), path_part(short)]
    for key in sorted(labels):
        parts += [path_part(key), path_part(labels[key])]
    return ".".join(parts)


def histogram_lines(prefix: str, tool: str, histogram: Histogram, ts: int) -> list[str]:
    """count and sum_seconds, cumulative like counters (graph them with perSecond())."""
    base = metric_path(prefix, tool, histogram.name, histogram.labels)
    return [f"{base}.count {sum(histogram.slots)} {ts}",
            f"{base}.sum_seconds {format_value(histogram.sum * histogram.unit_seconds)} {ts}"]


def snapshot_lines(prefix: str, snapshot: Snapshot) -> list[str]:
    ts = int(snapshot.ts)
    lines = [f"{metric_path(prefix, snapshot.tool, c.name, c.labels)} {format_value(c.value)} {ts}"
             for c in snapshot.counters]
    for histogram in snapshot.histograms:
        lines += histogram_lines(prefix, snapshot.tool, histogram, ts)
    return lines


@dataclass
class _Batch:
    lines: list[str]

    def payload(self) -> bytes:
        return ("\n".join(self.lines) + "\n").encode()


class GraphiteSender:
    def __init__(self, target: str, prefix: str | None = None,
                 notice: Callable[[str], None] | None = None, *,
                 queue_intervals: int = 300, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0, send_timeout: float = 5.0,
                 flush_seconds: float = 2.0):
        try:
            self.host, self.port = split_host_port(target, default_port=DEFAULT_PORT,
                                                   default_host="127.0.0.1")
        except ValueError as error:
            raise ExportUsageError(f"--graphite {target}: {error}") from None
        try:
            socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise ExportError(f"--graphite {target}: {error.strerror}") from None
        if prefix is not None and not all(prefix.split(".")):
            raise ExportUsageError(f"--prefix {prefix!r}: empty path component")
        self.prefix = prefix or default_prefix()
        self.address = format_host_port(self.host, self.port)
        self.notice = notice or (lambda message: None)
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.send_timeout, self.flush_seconds = send_timeout, flush_seconds

        self.sent_metrics = 0          # lines handed to the kernel for carbon
        self.lost_metrics = 0          # lines dropped while carbon was unreachable
        self._queue: collections.deque[_Batch] = collections.deque()
        self._queue_intervals = queue_intervals
        self._wakeup = threading.Condition()     # guards the queue and the closing flag
        self._closing = False
        # The sender thread's own state.
        self._socket: socket.socket | None = None
        self._backoff = backoff_initial
        self._next_attempt = 0.0
        self._down_since: float | None = None    # when the current outage began
        self._lost_before_outage = 0
        self._give_up_at: float | None = None    # set by close(): when to stop retrying
        self._thread = threading.Thread(target=self._send_loop, name="graphite-sender",
                                        daemon=True)
        self._thread.start()

    # --- the measurement loop's side: never touches the network -------------------------------
    def publish(self, snapshot: Snapshot) -> None:
        lines = snapshot_lines(self.prefix, snapshot)
        with self._wakeup:
            if len(self._queue) >= self._queue_intervals:
                self.lost_metrics += len(self._queue.popleft().lines)
            lines.append(f"{self.prefix}.netkit.graphite.lost_metrics {self.lost_metrics} "
                         f"{int(snapshot.ts)}")
            self._queue.append(_Batch(lines))
            self._wakeup.notify()

    def close(self) -> None:
        with self._wakeup:
            self._closing = True
            self._wakeup.notify()
        self._thread.join(self.flush_seconds + self.send_timeout + 1)
        if self.lost_metrics:
            self.notice(f"graphite {self.address}: {self.lost_metrics} metrics lost in all "
                        f"while carbon was unreachable")

    # --- the sender thread ------------------------------------------------------------------------
    def _send_loop(self) -> None:
        batch: _Batch | None = None
        while True:
            if batch is None:
                batch = self._take_batch()
                if batch is None:               # closing, and everything was sent
                    break
            if self._socket is None and not self._connect_when_due():
                if self._give_up_at is not None and self._next_attempt > self._give_up_at:
                    break                       # closing, and carbon is still away
                continue
            if self._send(batch):
                batch = None
        # What is still here when closing could not be delivered: count it as lost.
        with self._wakeup:
            unsent = ([batch] if batch else []) + list(self._queue)
            self._queue.clear()
            self.lost_metrics += sum(len(b.lines) for b in unsent)
        self._drop_socket()

    def _take_batch(self) -> _Batch | None:
        with self._wakeup:
            while not self._queue and not self._closing:
                self._wakeup.wait()
            if self._closing and self._give_up_at is None:
                self._give_up_at = time.monotonic() + self.flush_seconds
            return self._queue.popleft() if self._queue else None

    def _connect_when_due(self) -> bool:
        """Connect unless the backoff says wait; a wait ends early when close() is called."""
        delay = self._next_attempt - time.monotonic()
        if delay > 0:
            with self._wakeup:
                if self._closing and self._give_up_at is None:
                    self._give_up_at = time.monotonic() + self.flush_seconds
                if self._give_up_at is None or self._next_attempt <= self._give_up_at:
                    self._wakeup.wait(delay)
            return False
        try:
            self._socket = socket.create_connection((self.host, self.port),
                                                    timeout=self.send_timeout)
        except OSError as error:
            self._outage(error, "retrying with backoff, keeping up to "
                                f"{self._queue_intervals} intervals")
            return False
        if self._down_since is not None:
            self.notice(f"graphite {self.address}: reconnected after "
                        f"{time.monotonic() - self._down_since:.1f} s; "
                        f"{self.lost_metrics - self._lost_before_outage} metrics lost meanwhile")
            self._down_since = None
        return True

    def _send(self, batch: _Batch) -> bool:
        try:
            if _peer_closed(self._socket):
                raise ConnectionResetError("carbon closed the connection")
            self._socket.sendall(batch.payload())
        except OSError as error:
            # The batch stays in hand and goes again after reconnecting; carbon keeps one
            # value per timestamp, so lines sent twice do no harm.
            self._drop_socket()
            self._outage(error, "reconnecting")
            return False
        self.sent_metrics += len(batch.lines)
        self._backoff = self.backoff_initial     # only a delivered batch proves carbon is back
        return True

    def _outage(self, error: OSError, plan: str) -> None:
        if self._down_since is None:
            self._down_since, self._lost_before_outage = time.monotonic(), self.lost_metrics
            self.notice(f"graphite {self.address}: {_reason(error)}; {plan}")
        self._next_attempt = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.backoff_max)

    def _drop_socket(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _peer_closed(sock: socket.socket) -> bool:
    """carbon never writes on this connection, so readable means it closed (or reset) it."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _reason(error: OSError) -> str:
    return (error.strerror or str(error) or type(error).__name__).lower()
