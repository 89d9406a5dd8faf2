"""A scripted TCP peer for the tcp* tools' tests: `python tcppeer.py COMM` names itself COMM
(prctl), then runs one JSON command per line of stdin and answers with one JSON line, so a test
knows exactly which process did what, and when. Sockets are kept by id until closed.

    {"op": "listen", "family": 4, "addr": "127.0.0.1", "backlog": 8}  -> {"id", "port"}
    {"op": "adopt", "fd": 5}                    a listening socket inherited from the test
    {"op": "accept", "id": L, "n": 3}           -> [{"id", "laddr", "lport", "raddr", "rport"}]
    {"op": "connect", "family": 4, "addr", "port", "n": 2, "nonblocking": false,
     "user_timeout_ms": 0, "wait": true}        -> [{"id", "lport", "error", "seconds"}]
    {"op": "send", "id": C, "n": 1000}          {"op": "recv", "id": C, "n": 1000}
    {"op": "recv_eof", "id": C}                 -> {"got": bytes before EOF}
    {"op": "close", "id": C}                    {"op": "shutdown", "id": C}
    {"op": "pid"}                               -> {"pid"}
"""
import ctypes
import errno
import itertools
import json
import resource
import select
import socket
import sys
import time

TCP_USER_TIMEOUT = 18

ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)        # PR_SET_NAME
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks: dict[int, socket.socket] = {}
ids = itertools.count(1)


def keep(s: socket.socket) -> int:
    n = next(ids)
    socks[n] = s
    return n


def family_of(n: int) -> int:
    return socket.AF_INET6 if n == 6 else socket.AF_INET


def listen(c):
    s = socket.socket(family_of(c["family"]))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((c["addr"], c.get("port", 0)))
    s.listen(c.get("backlog", 128))
    return {"id": keep(s), "port": s.getsockname()[1]}


def accept(c):
    done = []
    for _ in range(c.get("n", 1)):
        conn, _ = socks[c["id"]].accept()
        local, remote = conn.getsockname(), conn.getpeername()
        done.append({"id": keep(conn), "laddr": local[0], "lport": local[1],
                     "raddr": remote[0], "rport": remote[1]})
    return done


def connect(c):
    """n sockets connect; all at once when non-blocking (then waited for if `wait`)."""
    made = []
    for _ in range(c.get("n", 1)):
        s = socket.socket(family_of(c["family"]))
        if c.get("user_timeout_ms"):
            s.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, c["user_timeout_ms"])
        start, error = time.monotonic(), 0
        if c.get("nonblocking"):
            s.setblocking(False)
            error = s.connect_ex((c["addr"], c["port"]))
            error = 0 if error == errno.EINPROGRESS else error
        else:
            error = s.connect_ex((c["addr"], c["port"]))
        made.append([s, start, error, time.monotonic() - start])
    if c.get("nonblocking") and c.get("wait", True):
        for entry in made:
            s, start = entry[0], entry[1]
            select.select([], [s], [], 30)
            entry[2] = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            entry[3] = time.monotonic() - start
    out = []
    for s, _, error, seconds in made:
        out.append({"id": keep(s), "lport": s.getsockname()[1],
                    "error": errno.errorcode.get(error, "OK") if error else "OK",
                    "seconds": seconds})
    return out


def recv_exactly(s, n):
    got = 0
    while got < n:
        chunk = s.recv(min(65536, n - got))
        if not chunk:
            break
        got += len(chunk)
    return got


def recv_eof(s):
    got = 0
    while chunk := s.recv(65536):
        got += len(chunk)
    return got


def run(c):
    op = c["op"]
    if op == "listen":
        return listen(c)
    if op == "adopt":
        return {"id": keep(socket.socket(fileno=c["fd"]))}
    if op == "accept":
        return accept(c)
    if op == "connect":
        return connect(c)
    if op == "send":
        socks[c["id"]].sendall(b"x" * c["n"])
        return {}
    if op == "recv":
        return {"got": recv_exactly(socks[c["id"]], c["n"])}
    if op == "recv_eof":
        return {"got": recv_eof(socks[c["id"]])}
    if op == "shutdown":
        socks[c["id"]].shutdown(socket.SHUT_WR)
        return {}
    if op == "close":
        socks.pop(c["id"]).close()
        return {}
    if op == "pid":
        import os
        return {"pid": os.getpid()}
    raise ValueError(f"unknown op {op}")


for line in sys.stdin:
    try:
        answer = run(json.loads(line))
    except OSError as exc:
        answer = {"oserror": errno.errorcode.get(exc.errno, str(exc.errno))}
    print(json.dumps(answer), flush=True)
