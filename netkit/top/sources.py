"""Where netkit top's panels get their rows, one source per panel, each read once per interval.

    interfaces   psutil's per-NIC counters (/proc/net/dev of netkit's network namespace)
    tcp          tcptop's BPF object: bytes per flow
    processes    sockstat's object (socket() calls, bytes) and soconnlat's (connects, their
                 results and log2 latency histograms), per process
    drops        tcpretrans's object (segments retransmitted per flow) and skbdrop's (packets
                 dropped by the kernel's reason and protocol, netkit's network namespace)
    listeners    sock_diag (netkit.net.sockdiag): accept queue, backlog and drops per listener

A source has `panel()` (the empty Panel: title, columns, sorts), `open(stack, selection)`
(attach what it needs, its BPF objects entered on the ExitStack) and `read(seconds, text)` (the
rows of the interval that just ended, and a note; `text` is the screen's filter, for a source
that keeps only some of its rows). To show another tool's counts, write a source
and put it in SOURCES (or in DROP_SOURCES: several sources feed the drops panel, their rows side
by side): the tool's own `_open` and map readers do the work, as TcpFlows does with tcptop's
and DropReasons with skbdrop's."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from netkit.top.panels import Col, Panel, si


class Unavailable:
    """A source this kernel cannot feed (it lacks a tracepoint the tool needs, as 6.1 lacks
    sock_send_length for tcptop): its panel stays, empty, and says why; the others run."""

    def __init__(self, reason: str):
        self.reason = reason

    def read(self, seconds: float, text: str = ""):
        return [], f"n/a: {self.reason}"


def open_or_explain(source, stack, selection):
    """source, opened; or an Unavailable in its place when this kernel cannot run it."""
    from netkit.engine.errors import KernelLacks
    try:
        source.open(stack, selection)
        return source
    except KernelLacks as exc:
        return Unavailable(str(exc))


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
class TcpRetransmits:
    """Segments retransmitted per TCP flow (tcpretrans's object, counting in the kernel)."""

    def open(self, stack, selection: Selection) -> None:
        from netkit.tools import tcpretrans
        obj = stack.enter_context(tcpretrans._open(selection.pid, selection.name,
                                                   selection.cgroup, count=True))
        self.counts = tcpretrans.flow_counts(obj, tcpretrans.kinds_of(obj))
        self.text = tcpretrans.flow_text

    def read(self, seconds: float, text: str = "") -> list[dict]:
        from netkit.render.fields import with_port
        rows = []
        for flow, c in self.counts.read().items():
            rows.append({**flow.fields(),
                         "kind": "retransmit" if flow.kind == "retrans" else flow.kind,
                         "name": f"{flow.comm} {with_port(flow.laddr, flow.lport)} > "
                                 f"{with_port(flow.raddr, flow.rport)}",
                         "count": c["segs"], "per_s": per_second(c["segs"], seconds)})
        return rows


class DropReasons:
    """Packets dropped in netkit's network namespace by the kernel's drop reason and protocol
    (skbdrop's object: skb:kfree_skb). Drops belong to packets, most of them in softirq: the
    process filters do not apply."""

    def open(self, stack, selection: Selection) -> None:
        from netkit.engine import netns
        from netkit.engine.dropreasons import kernel_drop_reasons
        from netkit.tools import skbdrop
        obj = stack.enter_context(skbdrop.open_drops(None, None, None, netns.current()))
        self.counts = skbdrop.DropCounts(obj, kernel_drop_reasons())

    def read(self, seconds: float, text: str = "") -> list[dict]:
        merged: dict[tuple[str, str], int] = {}
        for drop, n in self.counts.read().items():
            key = (drop.reason, drop.protocol)
            merged[key] = merged.get(key, 0) + n
        return [{"kind": "drop", "name": f"{reason} ({protocol})", "reason": reason,
                 "protocol": protocol, "count": n, "per_s": per_second(n, seconds)}
                for (reason, protocol), n in merged.items() if n]


DROP_SOURCES = [TcpRetransmits, DropReasons]


class Drops:
    """The drops panel: the rows of every source in DROP_SOURCES."""

    def panel(self) -> Panel:
        return Panel("drops", "Retransmits and drops", [
            Col("kind", "KIND", 10, str, "<"), Col("name", "FLOW / REASON", 52, str, "<"),
            Col("count", "COUNT", 9), Col("per_s", "/s", 9, si)],
            [("count", "count")], filterable=False)

    def open(self, stack, selection: Selection) -> None:
        self.sources = [open_or_explain(source(), stack, selection) for source in DROP_SOURCES]
        self.filtered = bool(selection.pid or selection.name or selection.cgroup)

    def read(self, seconds: float, text: str = "") -> tuple[list[dict], str]:
        rows = [row for source in self.sources for row in source.read(seconds, text)]
        return rows, ("drops: all processes (-p/-n/-c select retransmits only)"
                      if self.filtered else "")


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
        from netkit.engine import snmp
        self.snmp = snmp.Counters(names=LISTEN_COUNTERS)
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
        changes = self.snmp.interval()
        note = (f"ListenOverflows +{changes.get('TcpExtListenOverflows', 0)}, ListenDrops "
                f"+{changes.get('TcpExtListenDrops', 0)} (all listeners)")
        return rows, note


LISTEN_COUNTERS = ("TcpExtListenOverflows", "TcpExtListenDrops")
SOURCES = [Interfaces, TcpFlows, Processes, Drops, Listeners]
