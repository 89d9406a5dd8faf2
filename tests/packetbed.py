"""A quiet veth pair between two network namespaces, for the packet tools' tests (netsize,
nettxlat, qdisclat, skblife): the test bed's host and target joined by l0t (host side,
198.18.0.1) and l0h (target side, 198.18.0.2).

Quiet means that nothing but the test's own packets crosses it: IPv6 is off in both namespaces
(no neighbour discovery, MLD or router solicitations) and each side knows the other's MAC (no
ARP), so a tool's counts can be compared with what the test sent, exactly. The test sends from
its own process, its sockets opened inside the namespaces (TestBed.inside); netkit runs inside
the host namespace, so by default it traces the host's side only.

    @pytest.fixture(scope="module")
    def bed():
        yield from packet_bed("netsize")
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import time

from conftest import NETKIT, read_until, require_or_skip, require_root_bpf
from tools.testbed import Link, TestBed, TestBedError

HOST_DEV, TARGET_DEV = "l0t", "l0h"
HOST_ADDR, TARGET_ADDR = "198.18.0.1", "198.18.0.2"
UDP_PORT = 9
UDP_SEGMENT, UDP_GRO = 103, 104         # linux/udp.h socket options
ETH, IP, UDP_HDR, ICMP_HDR = 14, 20, 8, 8


def packet_bed(tool: str):
    """The body of a module-scoped fixture (see the module doc)."""
    require_root_bpf(tool)
    try:
        with TestBed([Link()]) as bed:
            quiet = PacketBed(bed)
            try:
                yield quiet
            finally:
                quiet.kill_tracers()
    except TestBedError as e:
        require_or_skip(f"test bed unavailable: {e}")


class PacketBed:
    def __init__(self, bed: TestBed):
        self.bed = bed
        self.tracers: list[Tracer] = []
        self.host, self.target = bed.host, bed.target
        for ns in (self.host, self.target):
            bed.run(ns, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                         "net.ipv6.conf.default.disable_ipv6=1"])
        macs = {ns: json.loads(bed.run(ns, ["ip", "-j", "link", "show", dev]).stdout)[0]["address"]
                for ns, dev in ((self.host, HOST_DEV), (self.target, TARGET_DEV))}
        for ns, dev, peer, peer_ns in ((self.host, HOST_DEV, TARGET_ADDR, self.target),
                                       (self.target, TARGET_DEV, HOST_ADDR, self.host)):
            bed.run(ns, ["ip", "neigh", "replace", peer, "lladdr", macs[peer_ns], "dev", dev,
                         "nud", "permanent"])

    def inode(self, ns: str) -> int:
        return os.stat(f"/run/netns/{ns}").st_ino

    def counters(self, ns: str) -> dict[str, int]:
        """/proc/net/snmp and /proc/net/netstat of namespace ns, read by cat inside it (not by
        netkit's reader), named as nstat names them: UdpNoPorts, TcpExtListenOverflows."""
        counters = {}
        for name in ("snmp", "netstat"):
            lines = self.bed.run(ns, ["cat", f"/proc/net/{name}"]).stdout.splitlines()
            for header, values in zip(lines[::2], lines[1::2]):
                group = header.split(":")[0]
                counters.update({group + k: int(v) for k, v in zip(header.split()[1:],
                                                                    values.split()[1:])})
        return counters

    # -- netkit inside the host namespace ------------------------------------------------------
    def trace(self, *args: str, ns: str | None = None, json: bool = True) -> "Tracer":
        tracer = Tracer(self.bed, ns or self.host, list(args) + (["--json"] if json else []))
        self.tracers.append(tracer)
        return tracer

    def kill_tracers(self) -> None:
        """Those a failed test left running."""
        for tracer in self.tracers:
            if tracer.proc.poll() is None:
                tracer.proc.kill()
                tracer.proc.communicate()

    # -- the link's settings -------------------------------------------------------------------
    @contextlib.contextmanager
    def features(self, ns: str, dev: str, **on: bool):
        """ethtool -K for the block (tso=True, gro=False, ...), put back afterwards."""
        def set_all(values: dict[str, bool]):
            args = [x for k, v in values.items() for x in (k.replace("_", "-"),
                                                           "on" if v else "off")]
            self.bed.run(ns, ["ethtool", "-K", dev, *args])
        before = self._features(ns, dev, on)
        set_all(on)
        try:
            yield
        finally:
            set_all(before)

    def _features(self, ns: str, dev: str, names) -> dict[str, bool]:
        text = self.bed.run(ns, ["ethtool", "-k", dev]).stdout
        long_names = {"tso": "tcp-segmentation-offload", "gro": "generic-receive-offload",
                      "gso": "generic-segmentation-offload"}
        state = {}
        for name in names:
            wanted = long_names.get(name, name.replace("_", "-"))
            line = next(l for l in text.splitlines() if l.strip().startswith(wanted + ":"))
            state[name] = line.split(":")[1].split()[0] == "on"
        return state

    @contextlib.contextmanager
    def qdisc(self, ns: str, dev: str, *spec: str):
        """tc qdisc replace dev DEV root SPEC... for the block; the default comes back after."""
        self.bed.run(ns, ["tc", "qdisc", "replace", "dev", dev, "root", *spec])
        try:
            yield
        finally:
            self.bed.run(ns, ["tc", "qdisc", "del", "dev", dev, "root"], check=False)

    def tc(self, ns: str, *args: str) -> None:
        self.bed.run(ns, ["tc", *args])

    # -- traffic from this process -----------------------------------------------------------
    def receiver(self, gro: bool = False) -> socket.socket:
        """A UDP socket in the target that takes what the tests send (no ICMP comes back)."""
        with self.bed.inside(self.target):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((TARGET_ADDR, UDP_PORT))
        if gro:
            sock.setsockopt(socket.IPPROTO_UDP, UDP_GRO, 1)
        sock.setblocking(False)
        return sock

    def sender(self) -> socket.socket:
        with self.bed.inside(self.host):
            return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def echo(self, count: int, hold_s: float) -> tuple[float, float]:
        """`count` ICMP echoes host -> target on a datagram ICMP socket, whose replies are
        read only after `hold_s`; the monotonic times of the first send and the last read."""
        with self.bed.inside(self.host):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
        with sock:
            sock.settimeout(5)
            started = time.monotonic()
            for seq in range(count):
                sock.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, seq) + b"e" * 56, (TARGET_ADDR, 0))
            time.sleep(hold_s)
            for _ in range(count):
                sock.recv(2048)
            return started, time.monotonic()


def drain(sock: socket.socket) -> list[int]:
    """The sizes of the datagrams waiting on a non-blocking socket."""
    sizes = []
    with contextlib.suppress(BlockingIOError):
        while True:
            sizes.append(len(sock.recv(65536)))
    return sizes


class Tracer:
    """netkit TOOL ARGS in a namespace, from its banner to Ctrl-C."""

    def __init__(self, bed: TestBed, ns: str, args: list[str]):
        self.args = args
        self.proc = bed.popen(ns, [str(NETKIT), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        started, self.banner = read_until(self.proc, self.proc.stderr, "Hit Ctrl-C", 15)
        if not started:
            self.proc.kill()
            raise AssertionError(f"netkit {' '.join(args)} did not start: {self.banner}"
                                 f"{self.proc.stderr.read()}")

    def stop_text(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=20)
        assert self.proc.returncode == 0 and "Traceback" not in err, (self.args, err)
        return out

    def stop(self) -> "Records":
        """Ctrl-C; the NDJSON records of a --json run."""
        return Records([json.loads(line) for line in self.stop_text().splitlines()])


class Records(list):
    """A tool's NDJSON output."""

    @property
    def summary(self) -> dict:
        assert self[-1]["type"] == "summary", self[-1]
        return self[-1]

    def run(self, **match) -> list[dict]:
        """The run's histograms whose keys have these values."""
        return [r for r in self if r["type"] == "hist" and r["scope"] == "run" and
                all(r.get(k) == v for k, v in match.items())]

    def one(self, **match) -> dict:
        found = self.run(**match)
        assert len(found) == 1, (match, found)
        return found[0]


def buckets(hist: dict, key: str) -> dict[int, int]:
    """A JSON histogram as {low: count}."""
    return {b["low"]: b["count"] for b in hist[key]}
