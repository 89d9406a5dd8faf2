"""The /metrics HTTP endpoint: one thread, one selector, a bounded number of connections.

prometheus_client's start_http_server starts a thread per connection with no cap behind a listen
backlog of 5: 1,000 idle connections made 1,000 threads, doubled netkit's RSS and kept a scrape
waiting in the backlog. Here every connection is a non-blocking socket in one selector:

- at most MAX_CONNECTIONS are open; a new one evicts the oldest, so idle connections can delay
  no scrape (a scrape is the newest connection when it arrives);
- each has EXCHANGE_TIMEOUT seconds from accept to send its request and take the reply, however
  slowly it trickles (slowloris);
- a request head larger than MAX_REQUEST_HEAD is refused with 431;
- one request per connection (Connection: close), as prometheus_client's HTTP/1.0 server did;
  after the reply the connection is half-closed and drained, so the reply is never cut by an RST.

Rendering is the caller's: render(accept, accept_encoding, query) -> (body, headers).
"""
from __future__ import annotations

import collections
import errno
import os
import selectors
import socket
import threading
import time
from typing import Callable
from urllib.parse import urlsplit

MAX_CONNECTIONS = 128
EXCHANGE_TIMEOUT = 10.0         # s; Prometheus' default scrape timeout
DRAIN_TIMEOUT = 1.0             # s to wait for the client's FIN after the reply
MAX_REQUEST_HEAD = 16 * 1024
METRICS_PATHS = ("/metrics", "/")

Render = Callable[[str, str, str], tuple[bytes, list[tuple[str, str]]]]


class _Connection:
    __slots__ = ("sock", "expires", "request", "reply", "sent", "draining")

    def __init__(self, sock: socket.socket, now: float):
        self.sock = sock
        self.expires = now + EXCHANGE_TIMEOUT
        self.request = bytearray()
        self.reply = b""
        self.sent = 0
        self.draining = False


def _status_reply(status: str, text: str, extra: list[tuple[str, str]] = ()) -> bytes:
    return _reply(status, [("Content-Type", "text/plain; charset=utf-8"), *extra],
                  f"{text}\n".encode())


def _reply(status: str, headers: list[tuple[str, str]], body: bytes, head_only=False) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{name}: {value}" for name, value in headers),
             f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + (b"" if head_only else body)


class MetricsEndpoint:
    def __init__(self, host: str, port: int, render: Render):
        """Bind and listen (OSError if that fails), then serve from a daemon thread."""
        family, kind, protocol, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        self._listener = socket.socket(family, kind | socket.SOCK_CLOEXEC, protocol)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(sockaddr)
            # A full accept queue drops SYNs (the client retries after 1 s); the loop accepts
            # in bursts, so the kernel's limit (net.core.somaxconn) is the sensible backlog.
            self._listener.listen(socket.SOMAXCONN)
            self._listener.setblocking(False)
        except BaseException:
            self._listener.close()
            raise
        self.server_address = self._listener.getsockname()
        self._render = render
        self._connections: collections.OrderedDict[int, _Connection] = collections.OrderedDict()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._accept_paused_until = 0.0
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="prometheus-endpoint",
                                        daemon=True)
        self._thread.start()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def close(self, deadline: float | None = None) -> None:
        self._stopping = True
        try:
            os.write(self._wake_write, b"!")
        except BrokenPipeError:
            # The serving thread has already ended and closed its end (an error in it is
            # reported by threading's hook); there is nothing left to wake. Seen once in CI.
            pass
        self._thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if not self._thread.is_alive():
            os.close(self._wake_write)

    # --- the serving thread -----------------------------------------------------------------------
    def _serve(self) -> None:
        try:
            while not self._stopping:
                for key, events in self._selector.select(self._next_timeout()):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj == self._wake_read:
                        _drain(self._wake_read)
                    else:
                        connection = self._connections.get(key.fd)
                        if connection is not None:
                            self._serve_connection(connection, events)
                self._expire()
        finally:
            for connection in list(self._connections.values()):
                self._drop(connection)
            self._selector.close()
            self._listener.close()
            os.close(self._wake_read)

    def _next_timeout(self) -> float | None:
        now = time.monotonic()
        until = [c.expires for c in self._connections.values()]
        if self._accept_paused_until:
            until.append(self._accept_paused_until)
        return max(0.0, min(until) - now) if until else None

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: give up the oldest connection; if there is none,
                    # stop watching the listener a moment instead of spinning on it.
                    if self._connections:
                        self._drop(next(iter(self._connections.values())))
                        continue
                    self._pause_accepting()
                return      # ECONNABORTED and the like: that client is gone
            if len(self._connections) >= MAX_CONNECTIONS:
                self._drop(next(iter(self._connections.values())))
            sock.setblocking(False)
            connection = _Connection(sock, time.monotonic())
            self._connections[sock.fileno()] = connection
            self._selector.register(sock, selectors.EVENT_READ)

    def _pause_accepting(self) -> None:
        self._selector.unregister(self._listener)
        self._accept_paused_until = time.monotonic() + 0.1

    def _expire(self) -> None:
        now = time.monotonic()
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self._selector.register(self._listener, selectors.EVENT_READ)
        for connection in [c for c in self._connections.values() if c.expires <= now]:
            self._drop(connection)

    def _drop(self, connection: _Connection) -> None:
        self._connections.pop(connection.sock.fileno(), None)
        self._selector.unregister(connection.sock)
        connection.sock.close()

    def _serve_connection(self, connection: _Connection, events: int) -> None:
        try:
            if connection.draining:
                if not connection.sock.recv(65536):
                    self._drop(connection)          # the client read the reply and closed
            elif events & selectors.EVENT_READ:
                self._read_request(connection)
            elif events & selectors.EVENT_WRITE:
                self._write_reply(connection)
        except BlockingIOError:
            pass
        except OSError:                             # reset by the client
            self._drop(connection)

    def _read_request(self, connection: _Connection) -> None:
        chunk = connection.sock.recv(65536)
        if not chunk:
            self._drop(connection)                  # closed before asking anything
            return
        connection.request += chunk
        head_end = connection.request.find(b"\r\n\r\n")
        if head_end < 0:
            head_end = connection.request.find(b"\n\n")
        if head_end < 0:
            if len(connection.request) > MAX_REQUEST_HEAD:
                self._start_reply(connection, _status_reply(
                    "431 Request Header Fields Too Large", "request head too large"))
            return
        self._start_reply(connection, self._answer(bytes(connection.request[:head_end])))

    def _answer(self, head: bytes) -> bytes:
        lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
        request_line = lines[0].split()
        if len(request_line) != 3 or not request_line[2].startswith("HTTP/"):
            return _status_reply("400 Bad Request", "bad request line")
        method, target, _ = request_line
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        if method not in ("GET", "HEAD"):
            return _status_reply("405 Method Not Allowed", f"{method}: use GET",
                                 [("Allow", "GET, HEAD")])
        url = urlsplit(target)
        if url.path not in METRICS_PATHS:
            return _status_reply("404 Not Found", "netkit serves /metrics")
        try:
            body, content_headers = self._render(headers.get("accept", ""),
                                                 headers.get("accept-encoding", ""), url.query)
        except Exception as error:          # a bad Snapshot must not end the endpoint
            return _status_reply("500 Internal Server Error", f"cannot render metrics: {error}")
        return _reply("200 OK", content_headers, body, head_only=method == "HEAD")

    def _start_reply(self, connection: _Connection, reply: bytes) -> None:
        connection.reply = reply
        self._selector.modify(connection.sock, selectors.EVENT_WRITE)
        self._write_reply(connection)

    def _write_reply(self, connection: _Connection) -> None:
        connection.sent += connection.sock.send(connection.reply[connection.sent:])
        if connection.sent < len(connection.reply):
            return
        # Half-close and wait for the client's FIN: closing with its unread bytes (a pipelined
        # request, a body) in our buffer would send an RST that can destroy the reply in flight.
        connection.sock.shutdown(socket.SHUT_WR)
        connection.draining = True
        connection.expires = min(connection.expires, time.monotonic() + DRAIN_TIMEOUT)
        self._selector.modify(connection.sock, selectors.EVENT_READ)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
