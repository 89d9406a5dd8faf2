"""Graphite: each interval's Snapshot as carbon plaintext lines, `path value unix_ts\\n`, over TCP.

publish() only formats the lines and appends them to a bounded queue; a daemon thread sends them.
While carbon is unreachable the thread reconnects with exponential backoff and the queue keeps
the newest intervals; when it overflows the oldest interval is dropped and its lines are counted
as lost. The count is reported on stderr when carbon comes back and when netkit stops, and it is
itself sent to carbon as <prefix>.netkit.graphite.lost_metrics so the gap shows on the graphs.

The sender never blocks in the kernel: connect, send and name lookups are waited for with poll()
beside a wake-up pipe, so close() can end it at a deadline whatever carbon does (drops SYNs,
accepts and never reads, resolves slowly). A line counts as sent once carbon's TCP acknowledged
it (SIOCOUTQ gives what is not yet acknowledged); what is not, when netkit stops, is counted lost.
"""
from __future__ import annotations

import bisect
import collections
import errno
import fcntl
import ipaddress
import itertools
import math
import os
import re
import select
import socket
import struct
import termios
import threading
import time
from typing import Callable

from netkit.export import (EXIT_GRACE, ExportError, ExportUsageError, format_host_port,
                           split_host_port)
from netkit.metrics import Snapshot

DEFAULT_PORT = 2003
CONNECT_TIMEOUT = 5.0      # s for a name lookup or a TCP handshake
STALL_TIMEOUT = 5.0        # s that a send may make no progress before the connection is dropped

# carbon splits a line at whitespace, reads ';' as the start of tags and '{...}' as OpenMetrics
# labels, turns every '.' into a directory and a '/' into one more; Graphite's queries read
# * ? [ ] { } , as patterns. So every path component is limited to these characters, and kept
# short enough to be a file name with ".wsp" appended.
_PATH_COMPONENT = re.compile(r"[A-Za-z0-9_-]+")
_NOT_PATH_CHARS = re.compile(r"[^A-Za-z0-9_-]")
MAX_COMPONENT = 200


def path_part(text: str) -> str:
    """One Graphite path component made from a name or a label (a comm, a destination)."""
    return _NOT_PATH_CHARS.sub("_", text)[:MAX_COMPONENT] or "_"


def default_prefix() -> str:
    return "netkit." + path_part(socket.gethostname().split(".")[0])


def format_value(value: float) -> str:
    if math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return f"{value:.12g}"          # nan and inf are words carbon's float() reads


def metric_path(prefix: str, tool: str, name: str, labels: dict[str, str]) -> str:
    """<prefix>.<tool>.<name without the tool's prefix>[.<label>.<value>...] (labels sorted)."""
    short = name[len(tool) + 1:] if name.startswith(tool + "_") else name
    parts = [prefix, path_part(tool), path_part(short)]
    for key in sorted(labels):
        parts += [path_part(key), path_part(labels[key])]
    return ".".join(parts)


def snapshot_lines(prefix: str, snapshot: Snapshot) -> list[str]:
    """Counters, and each histogram's count and sum_seconds (sum_bytes for sizes), cumulative
    (graph with perSecond()).

    Labels that differ only in characters a path cannot hold ("python3.11", "python3 11") make
    the same path; their values are summed into one line, as a query summing the two series
    would, rather than sent as two lines with one timestamp, where carbon would keep only one."""
    values: dict[str, float] = {}

    def add(path: str, value: float) -> None:
        values[path] = values.get(path, 0) + value

    for counter in snapshot.counters:
        add(metric_path(prefix, snapshot.tool, counter.name, counter.labels), counter.value)
    for histogram in snapshot.histograms:
        base = metric_path(prefix, snapshot.tool, histogram.name, histogram.labels)
        add(f"{base}.count", sum(histogram.slots))
        add(f"{base}.sum_{histogram.unit}", histogram.sum * histogram.unit_seconds)
    ts = int(snapshot.ts)
    return [f"{path} {format_value(value)} {ts}" for path, value in values.items()]


class _Batch:
    """One interval's lines, as bytes, with where each line ends (for partial acknowledgement)."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        encoded = [(line + "\n").encode() for line in lines]
        self.payload = b"".join(encoded)
        self.line_ends = list(itertools.accumulate(len(line) for line in encoded))

    def lines_through(self, offset: int) -> int:
        """How many lines lie wholly within the first `offset` bytes."""
        return bisect.bisect_right(self.line_ends, offset)

    def rest(self, offset: int) -> _Batch:
        """The lines not wholly within the first `offset` bytes."""
        return _Batch(self.lines[self.lines_through(offset):])


def _unacknowledged_bytes(sock: socket.socket) -> int:
    # SIOCOUTQ (= TIOCOUTQ) on TCP: bytes written that the peer has not acknowledged yet.
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]


def resolve(host: str, port: int, timeout: float, *, wait: Callable[[float], None] | None = None,
            wake: Callable[[], None] | None = None,
            give_up: Callable[[], bool] = lambda: False) -> list[tuple]:
    """getaddrinfo in a daemon thread, so that a DNS server that does not answer holds up neither
    Ctrl-C nor exit. `wait(seconds)` passes the time until `wake()` is called (an Event's wait
    by default); `give_up()` ends the wait early. Raises OSError, TimeoutError on no answer."""
    result: dict = {}
    finished = threading.Event()

    def lookup() -> None:
        try:
            result["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, ValueError) as error:     # ValueError: a name IDNA cannot encode
            result["error"] = error if isinstance(error, OSError) else \
                OSError(errno.EINVAL, str(error))
        finished.set()
        if wake:
            wake()

    threading.Thread(target=lookup, name="graphite-resolver", daemon=True).start()
    until = time.monotonic() + timeout
    while not finished.is_set() and not give_up() and (left := until - time.monotonic()) > 0:
        (wait or finished.wait)(left)
    if "error" in result:
        raise result["error"]
    if "addresses" not in result:
        raise TimeoutError(errno.ETIMEDOUT, f"no answer from DNS within {timeout:g} s")
    return result["addresses"]


class GraphiteSender:
    @staticmethod
    def parse_target(target: str) -> tuple[str, int]:
        try:
            host, port = split_host_port(target, default_port=DEFAULT_PORT,
                                         default_host="127.0.0.1")
        except ValueError as error:
            raise ExportUsageError(f"--graphite {target}: {error}") from None
        if port == 0:
            raise ExportUsageError(f"--graphite {target}: port 0 cannot be connected to "
                                   f"(carbon's plaintext port is {DEFAULT_PORT})")
        return host, port

    @staticmethod
    def check_prefix(prefix: str | None) -> None:
        if prefix is None:
            return
        for part in prefix.split("."):
            if not part:
                raise ExportUsageError(f"--prefix {prefix!r}: empty path component")
            if not _PATH_COMPONENT.fullmatch(part):
                bad = _NOT_PATH_CHARS.search(part).group()
                raise ExportUsageError(
                    f"--prefix {prefix!r}: {bad!r} cannot be in a Graphite path "
                    "(use letters, digits, '_' and '-', with dots between names)")
            if len(part) > MAX_COMPONENT:
                raise ExportUsageError(f"--prefix {prefix!r}: a name longer than "
                                       f"{MAX_COMPONENT} characters")

    def __init__(self, target: str, prefix: str | None = None,
                 notice: Callable[[str], None] | None = None, *,
                 queue_intervals: int = 300, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0, connect_timeout: float = CONNECT_TIMEOUT,
                 stall_timeout: float = STALL_TIMEOUT):
        self.host, self.port = self.parse_target(target)
        self.check_prefix(prefix)
        try:
            self._addresses = resolve(self.host, self.port, connect_timeout)
        except OSError as error:
            raise ExportError(f"--graphite {target}: {_reason(error)}") from None
        self._literal_host = _is_address(self.host)
        self.prefix = prefix or default_prefix()
        self.address = format_host_port(self.host, self.port)
        self.notice = notice or (lambda message: None)
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.connect_timeout, self.stall_timeout = connect_timeout, stall_timeout

        self.sent_metrics = 0          # lines carbon's TCP acknowledged
        self.lost_metrics = 0          # lines dropped: queue overflow, or still here at exit
        self.lost_at_exit = 0          # the part of lost_metrics that close() gave up on
        self.exit_reason = ""          # why they could not go
        # Shared with the sender thread, under _lock.
        self._lock = threading.Lock()
        self._queue: collections.deque[_Batch] = collections.deque()
        self._queue_intervals = queue_intervals
        self._closing = False
        self._deadline = math.inf      # set by close(): when the sender must give up
        self._finished = False         # the sender has counted what it could not send
        # A byte in this pipe wakes the sender from whatever it waits for.
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # The sender thread's own state.
        self._socket: socket.socket | None = None
        self._written = 0              # bytes written on this connection
        self._in_flight: collections.deque[tuple[int, _Batch]] = collections.deque()
        self._current: _Batch | None = None   # taken from the queue, not yet all written
        self._backoff = backoff_initial
        self._next_attempt = 0.0
        self._last_error = ""
        self._down_since: float | None = None    # when the current outage began
        self._lost_before_outage = 0
        self._thread = threading.Thread(target=self._run, name="graphite-sender", daemon=True)
        self._thread.start()

    # --- the measurement loop's side: never touches the network -------------------------------
    def publish(self, snapshot: Snapshot) -> None:
        lines = snapshot_lines(self.prefix, snapshot)
        with self._lock:
            self._drop_oldest_beyond(self._queue_intervals - 1)
            lines.append(f"{self.prefix}.netkit.graphite.lost_metrics {self.lost_metrics} "
                         f"{int(snapshot.ts)}")
            self._queue.append(_Batch(lines))
        self._wake()

    def close(self, deadline: float | None = None) -> None:
        """Send what is queued if carbon takes it by `deadline`; count the rest as lost."""
        if deadline is None:
            deadline = time.monotonic() + EXIT_GRACE
        with self._lock:
            self._closing, self._deadline = True, deadline
        self._wake()
        # The sender wakes at the deadline and only counts and closes after it.
        self._thread.join(max(0.0, deadline - time.monotonic()) + 0.25)
        with self._lock:
            if not self._finished:      # cannot happen while the sender only waits in poll()
                self._finished = True
                self._count_lost_at_exit(self._queue, "the sender did not stop in time")
            if not self._thread.is_alive():
                os.close(self._wake_write)
                self._wake_write = None
        if self.lost_metrics:
            if self.lost_at_exit:
                self.notice(f"graphite {self.address}: {self.lost_metrics} metrics not sent in "
                            f"all, {self.lost_at_exit} of them at exit ({self.exit_reason})")
            else:
                self.notice(f"graphite {self.address}: {self.lost_metrics} metrics not sent in "
                            "all, dropped while carbon was unreachable")

    def _wake(self) -> None:
        # Under the lock, so a late wake-up (a name lookup ending after close) never writes to a
        # closed descriptor's number, reused by then.
        with self._lock:
            if self._wake_write is not None:
                try:
                    os.write(self._wake_write, b"!")
                except BlockingIOError:         # full: a wake-up is pending anyway
                    pass

    def _drop_oldest_beyond(self, limit: int) -> None:
        """Keep at most `limit` intervals queued, counting the dropped lines lost (under _lock)."""
        while len(self._queue) > max(limit, 0):
            self.lost_metrics += len(self._queue.popleft().lines)

    # --- the sender thread ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._send_loop()
        finally:
            self._finish()

    def _send_loop(self) -> None:
        while True:
            if self._current is None:
                self._current = self._take()
                if self._current is None:       # closing, and everything was written
                    self._wait_for_acknowledgement()
                    return
            if self._past_deadline():
                return
            if self._socket is None and not self._connect():
                continue
            if self._socket is not None:
                self._write_current()

    def _take(self) -> _Batch | None:
        while True:
            with self._lock:
                if self._queue:
                    return self._queue.popleft()
                if self._closing:
                    return None
            # Acknowledgements wake nothing: while some are due, look again now and then so
            # that sent_metrics keeps up.
            self._wait(None, 0.05 if self._in_flight else math.inf)
            if self._in_flight:
                self._forget_acknowledged()

    def _past_deadline(self) -> bool:
        with self._lock:
            return time.monotonic() >= self._deadline

    def _wait(self, sock: socket.socket | None, seconds: float) -> bool:
        """Wait until `sock` is writable (True), or for a wake-up or `seconds` or the deadline,
        whichever comes first (False)."""
        with self._lock:
            seconds = min(seconds, self._deadline - time.monotonic())
        poller = select.poll()
        poller.register(self._wake_read, select.POLLIN)
        if sock is not None:
            poller.register(sock, select.POLLOUT)
        timeout_ms = None if seconds == math.inf else max(0, math.ceil(seconds * 1000))
        ready = dict(poller.poll(timeout_ms))
        if self._wake_read in ready:
            try:
                while os.read(self._wake_read, 4096):
                    pass
            except BlockingIOError:
                pass
        return sock is not None and sock.fileno() in ready

    def _connect(self) -> bool:
        """Connect unless the backoff says wait; every wait ends early when close() is called."""
        with self._lock:
            closing = self._closing
        now = time.monotonic()
        if now < self._next_attempt and not (closing and self._next_attempt < math.inf):
            self._wait(None, self._next_attempt - now)
            return False
        if closing:
            # One last attempt at exit, whatever the backoff; after it only the deadline counts.
            self._next_attempt = math.inf
        try:
            addresses = self._addresses if self._literal_host else \
                resolve(self.host, self.port, self.connect_timeout,
                        wait=lambda seconds: self._wait(None, seconds), wake=self._wake,
                        give_up=self._past_deadline)
        except OSError as error:
            if self._past_deadline():
                self._last_error = f"no answer from DNS for {self.host} by exit"
            else:
                self._requeue([])
                self._outage(_reason(error), "retrying with backoff")
            return False
        self._addresses = addresses
        failure = "no address"
        for family, kind, protocol, _, sockaddr in addresses:
            sock = socket.socket(family, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                 protocol)
            code = sock.connect_ex(sockaddr)
            until = time.monotonic() + self.connect_timeout
            while code == errno.EINPROGRESS:
                if self._wait(sock, until - time.monotonic()):
                    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                elif time.monotonic() >= until:
                    code = errno.ETIMEDOUT
                elif self._past_deadline():
                    sock.close()
                    self._last_error = "carbon did not answer the connection by exit"
                    return False
            if code == 0:
                self._socket, self._written = sock, 0
                break
            sock.close()
            failure = os.strerror(code).lower()
        else:
            # The batch in hand waits in the queue like the others, so the queue's bound is
            # all that an outage keeps.
            self._requeue([])
            self._outage(failure, "retrying with backoff, keeping up to "
                                  f"{self._queue_intervals} intervals")
            return False
        if self._down_since is not None:
            self.notice(f"graphite {self.address}: reconnected after "
                        f"{time.monotonic() - self._down_since:.1f} s; "
                        f"{self.lost_metrics - self._lost_before_outage} metrics lost meanwhile")
            self._down_since = None
        return True

    def _write_current(self) -> None:
        batch = self._current
        if not self._current_in_flight():
            if _peer_closed(self._socket):
                self._connection_failed("carbon closed the connection")
                return
            self._in_flight.append((self._written, batch))
        start = self._in_flight[-1][0]
        while (offset := self._written - start) < len(batch.payload):
            try:
                self._written += self._socket.send(batch.payload[offset:])
                continue
            except BlockingIOError:
                pass
            except OSError as error:
                self._connection_failed(_reason(error))
                return
            give_up_at = time.monotonic() + self.stall_timeout
            while not self._wait(self._socket, give_up_at - time.monotonic()):
                if self._past_deadline():
                    self._last_error = "carbon was not reading by exit"
                    return
                if time.monotonic() >= give_up_at:
                    self._connection_stalled()
                    return
        self._current = None
        self._backoff = self.backoff_initial     # only a delivered batch proves carbon is back
        self._forget_acknowledged()

    def _current_in_flight(self) -> bool:
        return bool(self._in_flight) and self._in_flight[-1][1] is self._current

    def _acknowledged(self) -> int:
        """Bytes of this connection that carbon's TCP acknowledged."""
        try:
            return self._written - _unacknowledged_bytes(self._socket)
        except OSError:
            return 0

    def _forget_acknowledged(self) -> None:
        acknowledged = self._acknowledged()
        while self._in_flight:
            start, batch = self._in_flight[0]
            if start + len(batch.payload) > acknowledged:
                break
            self.sent_metrics += len(batch.lines)
            self._in_flight.popleft()

    def _wait_for_acknowledgement(self) -> None:
        """At exit, with everything written: wait (to the deadline) until carbon has it all."""
        while self._socket is not None and self._in_flight:
            self._forget_acknowledged()
            if not self._in_flight:
                break
            if self._past_deadline():
                self._last_error = "carbon was not reading by exit"
                return
            self._wait(None, 0.01)      # acknowledgements wake nothing: look again shortly

    def _connection_failed(self, reason: str) -> None:
        # Carbon reset or closed the connection. What its TCP acknowledged counts as delivered
        # (the kernel still knows how much that was); the rest goes again after reconnecting.
        self._give_back_unacknowledged(reset=False)
        self._outage(reason, "reconnecting")

    def _connection_stalled(self) -> None:
        self._give_back_unacknowledged(reset=True)
        self._outage(f"carbon read nothing for {self.stall_timeout:g} s", "reconnecting")

    def _give_back_unacknowledged(self, reset: bool) -> None:
        acknowledged = self._acknowledged()
        rests = []
        for start, batch in self._in_flight:
            self.sent_metrics += batch.lines_through(acknowledged - start)
            rests.append(batch.rest(acknowledged - start))
        self._requeue(rests)
        self._close_socket(reset=reset)

    def _requeue(self, rests: list[_Batch]) -> None:
        """Put back at the head of the queue what is in hand: the unacknowledged rests of the
        batches in flight, and the batch not yet started."""
        in_hand = [rest for rest in rests if rest.lines]
        if self._current is not None and not self._current_in_flight():
            in_hand.append(self._current)
        self._in_flight.clear()
        self._current = None
        with self._lock:
            self._queue.extendleft(reversed(in_hand))
            self._drop_oldest_beyond(self._queue_intervals)

    def _outage(self, reason: str, plan: str) -> None:
        self._last_error = reason
        if self._down_since is None:
            self._down_since, self._lost_before_outage = time.monotonic(), self.lost_metrics
            self.notice(f"graphite {self.address}: {reason}; {plan}")
        if self._next_attempt < math.inf:
            self._next_attempt = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.backoff_max)

    def _close_socket(self, reset: bool) -> None:
        if self._socket is not None:
            if reset:
                # RST: the kernel drops what carbon has not acknowledged instead of sending it
                # after netkit is gone, so what was counted lost is really lost.
                self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
            self._socket.close()
            self._socket = None

    def _finish(self) -> None:
        """Count what could not be delivered, and close the connection."""
        unsent: list[_Batch] = []
        acknowledged = self._acknowledged() if self._socket is not None else 0
        for start, batch in self._in_flight:
            self.sent_metrics += batch.lines_through(acknowledged - start)
            unsent.append(batch.rest(acknowledged - start))
        if self._current is not None and not self._current_in_flight():
            unsent.append(self._current)
        self._in_flight.clear()
        self._current = None
        self._close_socket(reset=any(batch.lines for batch in unsent))
        with self._lock:
            if not self._finished:
                self._finished = True
                self._count_lost_at_exit(unsent + list(self._queue), self._last_error)
        os.close(self._wake_read)

    def _count_lost_at_exit(self, batches, reason: str) -> None:
        lost = sum(len(batch.lines) for batch in batches)
        self._queue.clear()
        self.lost_metrics += lost
        self.lost_at_exit = lost
        self.exit_reason = reason or "carbon unreachable"


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _peer_closed(sock: socket.socket) -> bool:
    """carbon never writes on this connection, so readable means it closed (or reset) it."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if not poller.poll(0):
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _reason(error: OSError) -> str:
    return (error.strerror or str(error) or type(error).__name__).lower()
