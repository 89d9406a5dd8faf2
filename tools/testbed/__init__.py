"""Network test bed: network namespaces chained as routers, links optionally emulated.

    with TestBed([Link(rate_bps=100e6, delay_s=0.001), Link(rate_bps=10e6, delay_s=0.005)]) as bed:
        bed.run(bed.host, ["ping", "-c1", bed.hop_addrs(4)[-1]])

builds  host -> r1 -> target  (one namespace per node, names unique per bed: nk<pid>x<n>-h, -r1,
..., -t). Link i joins node i and node i+1. A Link without rate or delay is a veth pair; an
emulated Link is a pair of TUN devices joined by build/linkemu (tools/testbed/linkemu.c), which
holds each packet for FIFO serialisation (size*8/rate) plus the delay, each direction alone.

Addresses (all inside the bed's namespaces): link i is 198.18.i.0/24 and fd00:6e6b:0:i::/64;
node i is .1 / ::1 on it, node i+1 is .2 / ::2. Routers forward and have ICMP rate limits lifted
(unless lift_icmp_limits=False), so they answer every probe. Teardown stops the emulators and
deletes only this bed's namespaces, on normal exit, on exceptions and on SIGTERM.
Needs root, iproute2 and a C compiler (linkemu is built on demand when missing or stale).

The emulator's own error (`python -m tools.testbed measure 100e6:1ms 10e6:5ms 50e6:2ms`: one-way
delays of UDP datagrams of 100 and 1500 bytes between kernel stamps, the 10th percentile of each
size, see measure_link; 2 shared cores, vCPUs kept from halting, see _hold_cpu_awake): achieved
rate 0.8-1.0% below the setting at 100 and 50 Mbit/s, 0.2% at 10 Mbit/s (its copies, below);
one-way latency -1..+6 us off the setting, up to +13 us beside processes copying memory.
linkemu's own lateness at the deadline (printed at exit): mean 0.04-8 us on a quiet machine, up to
80 us with spikes of 5-35 ms while other work loads it (the VM loses its CPUs); a pchar estimate
then needs many more probes. linkemu times arrivals by the kernel's stamp except for the direction
the host sends in (see linkemu.c): 4 links of 500 us add 28 us of interquartile range to an RTT (85
us with every arrival timed by its reader thread). Seen by kernel-stamped probes at 36 and 1500
bytes (pchar's lowmean, thousands of probes) an emulated link is slower than set by 0.07-0.25 ns
per byte at 100 Mbit/s-1 Gbit/s (its copies: 0.1-0.3% at 100 Mbit/s, 1-3% at 1 Gbit/s) and by 1-2.5
ns at 10 Mbit/s (0.1-0.3%), the most on a busy machine. On a busier one (load average 3.6-4.3 with
other work running), a 100 Mbit/s link probed alone from the router before it (python -m
tools.pchar_samples --direct) read 0.5-1.5 ns per byte slower than set (0.6-1.9%).
"""
from __future__ import annotations

import ctypes
import ipaddress
import fcntl
import itertools
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from netkit.net import timestamps

ROOT = Path(__file__).resolve().parents[2]
LINKEMU_SRC = ROOT / "tools" / "testbed" / "linkemu.c"
LINKEMU_BIN = ROOT / "build" / "linkemu"
PREFIX = "nk"
_NAME_RE = re.compile(rf"^{PREFIX}(\d+)x\d+-")
_counter = itertools.count()

# Spins on one CPU at the lowest priority there is, and dies with the process that started it.
_SPINNER = """
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGKILL)            # PR_SET_PDEATHSIG
os.sched_setaffinity(0, {int(sys.argv[1])})
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
while True:
    pass
"""


class TestBedError(RuntimeError):
    """The test bed could not be built (not root, no iproute2, compiler missing...)."""
    __test__ = False


@dataclass(frozen=True)
class Link:
    """One link of the chain. rate_bps=None and delay_s=0 give a plain veth pair."""
    rate_bps: float | None = None
    delay_s: float = 0.0
    queue_packets: int = 1000

    @property
    def emulated(self) -> bool:
        return self.rate_bps is not None or self.delay_s > 0


def ensure_linkemu() -> Path:
    """Return build/linkemu, compiling it first if it is missing or older than its source."""
    if LINKEMU_BIN.exists() and LINKEMU_BIN.stat().st_mtime >= LINKEMU_SRC.stat().st_mtime:
        return LINKEMU_BIN
    LINKEMU_BIN.parent.mkdir(exist_ok=True)
    with open(LINKEMU_BIN.parent / ".linkemu.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent test processes build it once
        if LINKEMU_BIN.exists() and LINKEMU_BIN.stat().st_mtime >= LINKEMU_SRC.stat().st_mtime:
            return LINKEMU_BIN
        tmp = LINKEMU_BIN.with_suffix(f".tmp{os.getpid()}")
        cc = os.environ.get("CC", "cc")
        try:
            res = subprocess.run([cc, "-O2", "-Wall", "-o", str(tmp), str(LINKEMU_SRC), "-lm"],
                                 capture_output=True, text=True)
        except FileNotFoundError:
            raise TestBedError(f"cannot build linkemu: compiler {cc!r} not found (run `make all`)")
        if res.returncode != 0:
            raise TestBedError(f"cannot build linkemu: {res.stderr.strip()}")
        os.replace(tmp, LINKEMU_BIN)
    return LINKEMU_BIN


def _ip(args: list[str], stdin: str | None = None) -> None:
    res = subprocess.run(["ip", *args], input=stdin, capture_output=True, text=True)
    if res.returncode != 0:
        raise TestBedError(f"ip {' '.join(args)}: {res.stderr.strip()}")


def v4(link: int, side: int) -> str:
    """IPv4 address of the node on `side` (1: nearer the host, 2: nearer the target) of link i."""
    return f"198.18.{link}.{side}"


def v6(link: int, side: int) -> str:
    return str(ipaddress.IPv6Address(f"fd00:6e6b:0:{link:x}::{side}"))  # canonical, as tools print it


_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


class TestBed:
    """A chain of namespaces host -> r1 -> ... -> target joined by `links` (see module doc)."""
    __test__ = False  # not a pytest class, despite the name

    def __init__(self, links: list[Link], *, lift_icmp_limits: bool = True,
                 low_latency: bool = True):
        if not links:
            raise ValueError("a test bed needs at least one link")
        self.links = list(links)
        self.lift_icmp_limits = lift_icmp_limits
        self.low_latency = low_latency
        self._qos_fd: int | None = None
        self._spinners: list[subprocess.Popen] = []
        self.name = f"{PREFIX}{os.getpid()}x{next(_counter)}"
        n = len(self.links)
        self.nodes = ([f"{self.name}-h"] + [f"{self.name}-r{i}" for i in range(1, n)]
                      + [f"{self.name}-t"])
        self._created: list[str] = []
        self._emulators: list[subprocess.Popen] = []
        self.emulator_stats: list[str] = []  # linkemu's own lateness figures, filled at teardown
        self._old_sigterm = None

    # -- what tests need ---------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self.nodes[0]

    @property
    def target(self) -> str:
        return self.nodes[-1]

    @property
    def routers(self) -> list[str]:
        return self.nodes[1:-1]

    def host_addr(self, family: int = 4) -> str:
        return v4(0, 1) if family == 4 else v6(0, 1)

    def hop_addrs(self, family: int = 4) -> list[str]:
        """Addresses that answer at TTL 1, 2, ...: each router's, then the target's.

        A Linux router sends time-exceeded from the interface that leads back to the sender,
        which here is the one it received the probe on (side 2 of the link before it)."""
        addr = v4 if family == 4 else v6
        return [addr(i, 2) for i in range(len(self.links))]

    def target_addr(self, family: int = 4) -> str:
        return self.hop_addrs(family)[-1]

    def run(self, ns: str, argv: list[str], check: bool = True, timeout: float | None = 60,
            **kw) -> subprocess.CompletedProcess:
        """Run argv inside namespace ns; text output captured unless told otherwise."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        res = subprocess.run(["ip", "netns", "exec", ns, *argv], timeout=timeout, **kw)
        if check and res.returncode != 0:
            raise TestBedError(f"{' '.join(argv)} in {ns} exited {res.returncode}: "
                               f"{(res.stderr or '').strip()}")
        return res

    def popen(self, ns: str, argv: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kw)

    @contextmanager
    def inside(self, ns: str):
        """Move the calling thread into namespace ns for the block (sockets made there stay
        there). Python 3.11 has no os.setns, hence libc."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if _libc.setns(target, _CLONE_NEWNET) != 0:
                raise TestBedError(f"setns {ns}: {os.strerror(ctypes.get_errno())}")
            yield
        finally:
            _libc.setns(own, _CLONE_NEWNET)
            os.close(own)
            os.close(target)

    # -- life cycle --------------------------------------------------------------------------
    def __enter__(self) -> "TestBed":
        if threading.current_thread() is threading.main_thread():
            self._old_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            self.up()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    def _on_sigterm(self, signum, frame):
        raise SystemExit(128 + signum)  # unwinds through __exit__, which tears down

    def up(self) -> None:
        if os.geteuid() != 0:
            raise TestBedError("the test bed needs root (network namespaces, TUN devices)")
        emu = ensure_linkemu() if any(l.emulated for l in self.links) else None
        if emu and self.low_latency:
            self._hold_cpu_awake()
        for ns in self.nodes:
            _ip(["netns", "add", ns])
            self._created.append(ns)
        last = len(self.nodes) - 1
        for j, ns in enumerate(self.nodes):
            self.run(ns, ["sysctl", "-q", "-w", *self._sysctls(router=0 < j < last)])
        for i, link in enumerate(self.links):
            a, b = self.nodes[i], self.nodes[i + 1]
            if link.emulated:
                self._start_emulator(emu, i, link)
            else:
                _ip(["link", "add", f"l{i}t", "netns", a, "type", "veth",
                     "peer", "name", f"l{i}h", "netns", b])
        for j, ns in enumerate(self.nodes):
            _ip(["-n", ns, "-batch", "-"], stdin=self._node_config(j))

    def _hold_cpu_awake(self) -> None:
        """Keep every vCPU out of halt while the bed is up: on a VM, waking a halted vCPU costs
        10-30 us per packet and varies, which blurs every emulated hop. PM QoS (a zero
        cpu_dma_latency request) makes a cpuidle driver such as haltpoll poll instead; where there
        is none (cpuidle driver "none": idle is always HLT) only a runnable task keeps the vCPU
        awake, so one SCHED_IDLE spinner per CPU does: any other task preempts it at once.
        Measured with pchar on the 3-hop bed on such a VM: the 50 Mbit/s hop's 95% interval went
        from +-15-50% to +-2-5%. Both end with the bed (the spinners also die with us)."""
        try:
            self._qos_fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
            os.write(self._qos_fd, (0).to_bytes(4, "little", signed=True))
        except OSError:
            self._qos_fd = None  # not fatal: only precision suffers
        for cpu in sorted(os.sched_getaffinity(0)):
            self._spinners.append(subprocess.Popen(
                [sys.executable, "-c", _SPINNER, str(cpu)], stdin=subprocess.DEVNULL))

    def _sysctls(self, router: bool) -> list[str]:
        s = ["net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
             # no DAD, router solicitations or RAs: addresses usable at once, links quiet
             "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
             "net.ipv6.conf.default.router_solicitations=0", "net.ipv6.conf.default.accept_ra=0",
             "net.ipv4.ping_group_range=0 2147483647"]
        if router:
            s += ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]
        if self.lift_icmp_limits:
            s += ["net.ipv4.icmp_ratelimit=0", "net.ipv4.icmp_msgs_per_sec=1000000",
                  "net.ipv4.icmp_msgs_burst=1000000", "net.ipv6.icmp.ratelimit=0"]
        return s

    def _start_emulator(self, emu: Path, i: int, link: Link) -> None:
        # Arrivals timed by the kernel's stamp except where the host sends: a tool there times
        # its own probes by their TX stamps, which come after that stamp (see linkemu.c)
        taps = [way for way, sender in (("ab", i), ("ba", i + 1)) if sender != 0]
        argv = [str(emu), self.nodes[i], f"l{i}t", self.nodes[i + 1], f"l{i}h",
                repr(float(link.rate_bps or 0)), repr(float(link.delay_s)), str(link.queue_packets),
                ",".join(taps) or "none"]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._emulators.append(p)
        ready, _, _ = select.select([p.stdout], [], [], 10)
        line = p.stdout.readline() if ready else ""
        if line.strip() != "ready":
            p.kill()
            err = p.stderr.read().strip()
            raise TestBedError(f"linkemu for link {i} did not start: {err or 'timeout'}")

    def _node_config(self, j: int) -> str:
        """ip -batch commands for node j: devices up, addresses, routes both ways."""
        n = len(self.links)
        cmds = ["link set dev lo up"]
        devs = []
        if j > 0:
            devs.append((f"l{j - 1}h", j - 1, 2))
        if j < n:
            devs.append((f"l{j}t", j, 1))
        for dev, link, side in devs:
            cmds += [f"link set dev {dev} up",
                     f"addr add {v4(link, side)}/24 dev {dev}",
                     f"addr add {v6(link, side)}/64 dev {dev} nodad"]
        for i in range(n):
            if i in (j - 1, j):
                continue
            if i < j:  # behind us: via the previous node
                gw4, gw6 = v4(j - 1, 1), v6(j - 1, 1)
            else:
                gw4, gw6 = v4(j, 2), v6(j, 2)
            cmds += [f"route add 198.18.{i}.0/24 via {gw4}",
                     f"route add {v6(i, 0)}/64 via {gw6}"]
        if j == 0:
            cmds += [f"route add default via {v4(0, 2)}", f"route add ::/0 via {v6(0, 2)}"]
        if j == n:
            cmds += [f"route add default via {v4(n - 1, 1)}",
                     f"route add ::/0 via {v6(n - 1, 1)}"]
        return "\n".join(cmds) + "\n"

    def down(self) -> None:
        for p in self._emulators:
            if p.poll() is None:
                p.terminate()
            try:
                _, err = p.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                _, err = p.communicate()
            self.emulator_stats += [l for l in (err or "").splitlines() if l.startswith("linkemu")]
        self._emulators.clear()
        for ns in reversed(self._created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._created.clear()
        if self._qos_fd is not None:
            os.close(self._qos_fd)
            self._qos_fd = None
        for p in self._spinners:
            p.kill()
            p.wait()
        self._spinners.clear()


def fixture_bed(links: list[Link], require_or_skip, **kw):
    """The body of a pytest fixture: `yield from fixture_bed(LINKS, require_or_skip)` gives a
    bed for the fixture's scope, or hands the reason it cannot be built to require_or_skip
    (conftest's: a failure under CI, a skip elsewhere)."""
    if os.geteuid() != 0:
        require_or_skip("the test bed needs root")
    try:
        with TestBed(links, **kw) as bed:
            yield bed
    except TestBedError as e:
        require_or_skip(f"test bed unavailable: {e}")


def remove_stale() -> list[str]:
    """Delete test-bed namespaces whose creating process is gone (e.g. after a SIGKILL)."""
    res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    removed = []
    for line in res.stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        m = _NAME_RE.match(name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            removed.append(name)
    return removed


def one_way_delays(bed: TestBed, i: int, family: int, sizes: tuple[int, ...], count: int
                   ) -> list[list[float]]:
    """One-way delays in seconds across link i, node i+1 to node i, of `count` UDP datagrams of
    each IP size in `sizes`, sizes taken in turn (a slow spell of the machine touches each
    alike) and one datagram in flight at a time (none queues behind another): the receiver's
    kernel RX stamp less the sender's kernel TX stamp, both on this host's clock.

    Kernel stamps, not ping's RTT: ping stamps its send in user space and sees every copy of
    the packet on the way there and back (sendmsg, both emulator threads, the echo reply, the
    receive), and those copies slow down with the machine: with two memory-copying processes
    at nice 19 beside it, ping read a 10 Mbit/s link 1.1-2.2% slow (1500-byte RTTs 24-50 us
    late); CI once read it 2.35% slow. Between these two stamps lie only the emulator's reader
    and writer and the receive path's one copy.

    Node i+1 to node i: in that direction the emulator times every link's arrivals by the
    sending device's tap. The other way, link 0's arrivals are its reader thread's wake-up
    (the host's direction, see linkemu.c), 10-60 us after the TX stamp at the 10th percentile,
    all of it in a one-way delay (ping's RTT halved it)."""
    hdr = 28 if family == 4 else 48
    fam = socket.AF_INET if family == 4 else socket.AF_INET6
    src, dst = (v4(i, 2), v4(i, 1)) if family == 4 else (v6(i, 2), v6(i, 1))
    with bed.inside(bed.nodes[i]):
        rx = socket.socket(fam, socket.SOCK_DGRAM)
    with bed.inside(bed.nodes[i + 1]):
        tx = socket.socket(fam, socket.SOCK_DGRAM)
    delays: list[list[float]] = [[] for _ in sizes]
    with rx, tx:
        rx.bind((dst, 0))
        timestamps.enable(rx, timestamps.RX_SOFTWARE | timestamps.SOFTWARE)
        rx.settimeout(2.0)
        tx.bind((src, 0))
        timestamps.enable(tx, timestamps.TX_SOFTWARE | timestamps.SOFTWARE | timestamps.OPT_ID
                          | timestamps.OPT_TSONLY, wait_rx=False)
        tx.connect((dst, rx.getsockname()[1]))
        seq = 0                     # OPT_ID numbers the sends from 0, as the payload does
        for _ in range(count):
            for k, size in enumerate(sizes):
                tx.send(struct.pack("=I", seq).ljust(size - hdr, b"\0"))
                sent = [r.ns for r in timestamps.wait_error_queue(tx, 2.0)
                        if r.is_tx_stamp and r.key == seq]
                got = timestamps.recv(rx, 2048)     # one in flight: it is this one
                if struct.unpack_from("=I", got.data)[0] != seq:
                    raise TestBedError(f"link {i}: datagram {seq} overtaken or lost")
                if sent and sent[0] and got.rx_ns:
                    delays[k].append((got.rx_ns - sent[0]) / 1e9)
                seq += 1
    if not all(delays):
        raise TestBedError(f"link {i}: no kernel-stamped datagram of some size came through")
    return delays


def measure_link(bed: TestBed, i: int, family: int = 4, count: int = 150,
                 sizes: tuple[int, int] = (100, 1500)) -> dict:
    """Measure link i at two IP packet sizes, node i+1 to node i (one_way_delays).

    rate = bytes difference * 8 / difference of the sizes' 10th-percentile one-way delays; the
    small size's, less its serialisation time, is the latency. The 10th percentile, not the
    minimum: the emulator times an arrival by the sending device's tap, which precedes the TX
    stamp by a microsecond, or by tens when the vCPU stalls in between, so the few smallest
    delays read short (down to 60 us below the set delay on an idle machine)."""
    delays = one_way_delays(bed, i, family, sizes, count)
    small, large = (sorted(d)[len(d) // 10] for d in delays)
    rate = (sizes[1] - sizes[0]) * 8 / (large - small)
    latency = small - sizes[0] * 8 / rate
    return {"link": i, "family": family, "rate_bps": rate, "latency_s": latency,
            "one_way_small_s": small, "one_way_large_s": large}
