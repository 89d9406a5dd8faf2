"""Where netkit top's panels get their rows, one source per panel, each read once per interval.

    interfaces   psutil's per-NIC counters (/proc/net/dev of netkit's network namespace)
    tcp          tcptop's BPF object: bytes per flow
    processes    sockstat's object (socket() calls, bytes) and soconnlat's (connects, their
                 results and log2 latency histograms), per process
    drops        the kernel's SNMP counters (/proc/net/snmp, netstat, snmp6): retransmits and
                 drops by counter, system-wide
    listeners    sock_diag (netkit.net.sockdiag): accept queue, backlog and drops per listener

A source has `panel()` (the empty Panel: title, columns, sorts), `open(stack, selection)`
(attach what it needs, its BPF objects entered on the ExitStack) and `read(seconds, text)` (the
rows of the interval that just ended, and a note; `text` is the screen's filter, for a source
that keeps only some of its rows). To show another tool's counts, write a source
and put it in SOURCES (or in DROP_SOURCES: several sources can feed the drops panel, their rows
side by side): the tool's own `_open` and map readers do the work, as TcpFlows does with
tcptop's."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from netkit.top.panels import Col, Panel, si


@dataclass
class Selection:
    """-p/-n/-c: applied in the kernel by the BPF sources, to the owner process by the others."""
    pid: int | None = None
    name: str | None = None
    cgroup: str | None = None

    def process(self, pid: int | None) -> bool:
        """For sources without BPF: does process `pid` pass the filters?"""
        if not (self.pid or self.name or self.cgroup):
            return True
        if pid is None or (self.pid and pid != self.pid):
            return False
        try:
            if self.name and Path(f"/proc/{pid}/comm").read_text().strip() != self.name[:15]:
                return False
            if self.cgroup:
                wanted = self._cgroup_dir()
                own = _cgroup_dir_of(pid, wanted)
                if own is None or not (own == wanted or own.is_relative_to(wanted)):
                    return False
        except OSError:
            return False
        return True

    def _cgroup_dir(self) -> Path:
        from netkit.engine.bpfobject import Filters
        return Filters(cgroup=self.cgroup).cgroup_path()


def _cgroup_dir_of(pid: int, wanted: Path) -> Path | None:
    """The cgroup v2 directory of process `pid`, under the mount `wanted` is in."""
    from netkit.engine.bpfobject import CGROUP_ROOTS
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            root = next((r for r in CGROUP_ROOTS if wanted == r or wanted.is_relative_to(r)),
                        CGROUP_ROOTS[-1])
            return root / line[3:].lstrip("/")
    return None


def per_second(n: float, seconds: float) -> float:
    return n / seconds if seconds > 0 else 0.0


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


# -- interfaces ---------------------------------------------------------------------------------
class Interfaces:
    """Bits and packets per second each way, errors and drops in the interval, per NIC."""

    def panel(self) -> Panel:
        return Panel("interfaces", "Interfaces", [
            Col("dev", "DEV", 12, str, "<"), Col("rx_bits_per_s", "RX bit/s", 9, si),
            Col("tx_bits_per_s", "TX bit/s", 9, si), Col("rx_packets_per_s", "RX pkt/s", 9, si),
            Col("tx_packets_per_s", "TX pkt/s", 9, si), Col("errors", "ERRORS", 7),
            Col("drops", "DROPS", 7)],
            [("bits", "bits_per_s"), ("packets", "packets_per_s"), ("errors", "errors"),
             ("drops", "drops")], filterable=False)

    def open(self, stack, selection: Selection) -> None:
        import psutil
        self.psutil = psutil
        self.last = psutil.net_io_counters(pernic=True)

    def read(self, seconds: float, text: str = "") -> tuple[list[dict], str]:
        now = self.psutil.net_io_counters(pernic=True)
        rows = []
        for dev, c in sorted(now.items()):
            before = self.last.get(dev)
            if before is None:
                continue

            def d(field: str) -> int:
                return max(0, getattr(c, field) - getattr(before, field))
            rx, tx = d("bytes_recv") * 8, d("bytes_sent") * 8
            rows.append({"dev": dev, "rx_bits_per_s": per_second(rx, seconds),
                         "tx_bits_per_s": per_second(tx, seconds),
                         "bits_per_s": per_second(rx + tx, seconds),
                         "rx_packets_per_s": per_second(d("packets_recv"), seconds),
                         "tx_packets_per_s": per_second(d("packets_sent"), seconds),
                         "packets_per_s": per_second(d("packets_recv") + d("packets_sent"),
                                                     seconds),
                         "errors": d("errin") + d("errout"), "drops": d("dropin") + d("dropout")})
        self.last = now
        return rows, ""


# -- TCP flows (tcptop) ---------------------------------------------------------------------------
class TcpFlows:
    def panel(self) -> Panel:
        return Panel("tcp", "TCP flows", [
            Col("pid", "PID", 7), Col("comm", "COMM", 15, str, "<"),
            Col("local", "LOCAL", 22, str, "<"), Col("remote", "REMOTE", 22, str, "<"),
            Col("rx_bits_per_s", "RX bit/s", 9, si), Col("tx_bits_per_s", "TX bit/s", 9, si)],
            [("total", "bits_per_s"), ("rx", "rx_bits_per_s"), ("tx", "tx_bits_per_s")])

    # Flows decoded per sort order: a connect storm that sends data makes thousands a second,
    # of which a screen shows a few (all of them are decoded while a filter is set).
    KEEP = 50

    def open(self, stack, selection: Selection) -> None:
        from netkit.tools import tcptop
        obj = stack.enter_context(tcptop._open(selection.pid, selection.name, selection.cgroup))
        self.table = tcptop.FlowTable(obj.map("flows"))
        self.sorts = list(tcptop.Sort)
        self.json_of = tcptop.flow_json

    def read(self, seconds: float, text: str = "") -> tuple[list[dict], str]:
        changes = self.table.read()
        if text:
            kept = dict(self.table.ranked(changes))
        else:
            kept = {}
            for sort in self.sorts:
                kept.update(self.table.ranked(changes, sort, self.KEEP))
        rows = []
        for flow, c in kept.items():
            rx, tx = c["rx_bytes"] * 8, c["tx_bytes"] * 8
            rows.append({**self.json_of(flow, c), "local": flow.local, "remote": flow.remote,
                         "rx_bits_per_s": per_second(rx, seconds),
                         "tx_bits_per_s": per_second(tx, seconds),
                         "bits_per_s": per_second(rx + tx, seconds)})
        return rows, ""


# -- processes (sockstat + soconnlat) ------------------------------------------------------------
class Processes:
    def panel(self) -> Panel:
        return Panel("processes", "Processes", [
            Col("pid", "PID", 7), Col("comm", "COMM", 15, str, "<"),
            Col("connects_per_s", "CONN/s", 7, si), Col("failed", "FAILED", 6),
            Col("p50_us", "P50(us)", 7, si), Col("p99_us", "P99(us)", 7, si),
            Col("sockets", "SOCKETS", 7), Col("rx_bits_per_s", "RX bit/s", 9, si),
            Col("tx_bits_per_s", "TX bit/s", 9, si)],
            [("connects", "connects_per_s"), ("failed", "failed"), ("p99", "p99_us"),
             ("sockets", "sockets"), ("bytes", "bits_per_s")])

    def open(self, stack, selection: Selection) -> None:
        from netkit.tools import sockstat, soconnlat
        args = (selection.pid, selection.name, selection.cgroup)
        self.calls = sockstat.process_counts(stack.enter_context(sockstat._open(*args))
                                             .map("counts"))
        self.connects = soconnlat.histograms(stack.enter_context(soconnlat._open(*args))
                                             .map("hists"), per_process=True)

    def read(self, seconds: float, text: str = "") -> tuple[list[dict], str]:
        from netkit.engine.hist import Log2Hist
        procs: dict[int, dict] = {}

        def row(pid: int, comm: str) -> dict:
            return procs.setdefault(pid, {"pid": pid, "comm": comm, "connects": 0, "failed": 0,
                                          "latency": Log2Hist(), "sockets": 0, "rx_bytes": 0,
                                          "tx_bytes": 0})
        for proc, c in self.calls.read().items():
            r = row(proc.pid, proc.comm)
            r["sockets"] += c["socket"]
            r["rx_bytes"] += c["rx_bytes"]
            r["tx_bytes"] += c["tx_bytes"]
        for key, stats in self.connects.read().items():
            r = row(key.pid, key.comm)
            r["connects"] += stats.hist.count
            r["latency"] += stats.hist
            if key.result != 0:
                r["failed"] += stats.hist.count
        rows = []
        for r in procs.values():
            latency = r.pop("latency")
            rx, tx = r["rx_bytes"] * 8, r["tx_bytes"] * 8
            rows.append({**r, "connects_per_s": per_second(r["connects"], seconds),
                         "p50_us": latency.quantile_high(0.5), "p99_us": latency.quantile_high(0.99),
                         "rx_bits_per_s": per_second(rx, seconds),
                         "tx_bits_per_s": per_second(tx, seconds),
                         "bits_per_s": per_second(rx + tx, seconds)})
        return rows, ""


# -- retransmits and drops ---------------------------------------------------------------------------
class Snmp:
    """The kernel's SNMP counters as nstat names them (TcpRetransSegs, TcpExtListenOverflows,
    Ip6InDiscards...), and their change since the last read."""
    FILES = ("/proc/net/snmp", "/proc/net/netstat")

    def __init__(self):
        self.last = self.values()

    def values(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for path in self.FILES:
            with contextlib.suppress(OSError):
                lines = Path(path).read_text().splitlines()
                for names, values in zip(lines[::2], lines[1::2]):
                    prefix, *fields = names.split()
                    found.update({prefix.rstrip(":") + f: int(v)
                                  for f, v in zip(fields, values.split()[1:])})
        with contextlib.suppress(OSError):
            for line in Path("/proc/net/snmp6").read_text().splitlines():
                name, value = line.split()
                found[name] = int(value)
        return found

    def changes(self) -> dict[str, int]:
        now = self.values()
        changed = {k: v - self.last.get(k, 0) for k, v in now.items() if v != self.last.get(k, 0)}
        self.last = now
        return changed


RETRANSMITS = ["TcpRetransSegs", "TcpExtTCPSynRetrans", "TcpExtTCPFastRetrans",
               "TcpExtTCPSlowStartRetrans", "TcpExtTCPLossProbes", "TcpExtTCPTimeouts",
               "TcpExtTCPLostRetransmit", "TcpExtTCPRetransFail"]
DROPS = ["TcpExtListenOverflows", "TcpExtListenDrops", "TcpExtTCPBacklogDrop",
         "TcpExtTCPRcvQDrop", "TcpExtTCPZeroWindowDrop", "TcpExtTCPOFODrop",
         "TcpExtTCPReqQFullDrop", "TcpExtPFMemallocDrop", "TcpExtTCPMinTTLDrop",
         "TcpExtTCPDeferAcceptDrop", "TcpExtLockDroppedIcmps", "TcpInErrs", "TcpInCsumErrors",
         "IpInDiscards", "IpOutDiscards", "IpInHdrErrors", "IpInAddrErrors", "IpOutNoRoutes",
         "IpExtInNoRoutes", "UdpInErrors", "UdpRcvbufErrors", "UdpSndbufErrors",
         "UdpInCsumErrors", "Ip6InDiscards", "Ip6OutDiscards", "Ip6InNoRoutes",
         "Udp6InErrors", "Udp6RcvbufErrors", "Udp6SndbufErrors"]


class SnmpDrops:
    """Retransmits and drops from the SNMP counters, system-wide: the causes the kernel counts.
    (skbdrop's per-reason counts from skb:kfree_skb and tcpretrans's per-flow retransmits are
    the finer sources for this panel.)"""

    def open(self, stack, selection: Selection) -> None:
        self.snmp = Snmp()

    def read(self, seconds: float, text: str = "") -> list[dict]:
        changes = self.snmp.changes()
        return [{"kind": kind, "name": name, "count": changes[name],
                 "per_s": per_second(changes[name], seconds)}
                for kind, names in (("retransmit", RETRANSMITS), ("drop", DROPS))
                for name in names if changes.get(name, 0) > 0]


DROP_SOURCES = [SnmpDrops]


class Drops:
    """The drops panel: the rows of every source in DROP_SOURCES."""

    def panel(self) -> Panel:
        return Panel("drops", "Retransmits and drops", [
            Col("kind", "KIND", 10, str, "<"), Col("name", "COUNTER/REASON", 28, str, "<"),
            Col("count", "COUNT", 9), Col("per_s", "/s", 9, si)],
            [("count", "count")], filterable=False)

    def open(self, stack, selection: Selection) -> None:
        self.sources = [source() for source in DROP_SOURCES]
        for source in self.sources:
            source.open(stack, selection)
        self.filtered = bool(selection.pid or selection.name or selection.cgroup)

    def read(self, seconds: float, text: str = "") -> tuple[list[dict], str]:
        rows = [row for source in self.sources for row in source.read(seconds, text)]
        return rows, "system-wide (-p/-n/-c do not apply)" if self.filtered else "system-wide"


# -- listeners -----------------------------------------------------------------------------------
class Listeners:
    def panel(self) -> Panel:
        return Panel("listeners", "Listeners", [
            Col("pid", "PID", 7), Col("comm", "COMM", 15, str, "<"),
            Col("local", "LOCAL", 30, str, "<"), Col("queue", "QUEUE", 6),
            Col("backlog", "BACKLOG", 7), Col("drops", "DROPS", 7),
            Col("drops_total", "DROPS_ALL", 9)],
            [("queue", "queue"), ("drops", "drops"), ("fill", "fill")])

    def open(self, stack, selection: Selection) -> None:
        from netkit.net.sockdiag import SocketOwners
        self.selection = selection
        self.owners = SocketOwners()
        self.snmp = Snmp()
        self.drops_before: dict[int, int] = {}

    def read(self, seconds: float, text: str = "") -> tuple[list[dict], str]:
        from netkit.net.sockdiag import listeners
        from netkit.render.fields import with_port
        now = time.monotonic()
        rows, drops_now = [], {}
        for listener in listeners():
            drops_now[listener.inode] = listener.drops
            pid = self.owners.pid(listener.inode, now)
            if not self.selection.process(pid):
                continue
            rows.append({"pid": pid, "comm": _comm(pid) if pid else "",
                         "family": f"IPv{listener.family}", "address": listener.address,
                         "port": listener.port, "local": with_port(listener.address,
                                                                   listener.port),
                         "queue": listener.accept_queue, "backlog": listener.backlog,
                         "fill": listener.accept_queue / max(1, listener.backlog),
                         "drops": listener.drops - self.drops_before.get(listener.inode,
                                                                         listener.drops),
                         "drops_total": listener.drops})
        self.drops_before = drops_now
        changes = self.snmp.changes()
        note = (f"ListenOverflows +{changes.get('TcpExtListenOverflows', 0)}, ListenDrops "
                f"+{changes.get('TcpExtListenDrops', 0)} (all listeners)")
        return rows, note


SOURCES = [Interfaces, TcpFlows, Processes, Drops, Listeners]
