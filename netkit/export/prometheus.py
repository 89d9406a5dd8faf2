"""Prometheus: an HTTP /metrics endpoint and node_exporter textfiles, built from Snapshots.

Counters become `netkit_<name>_total`; log2 histograms become `netkit_<name>_seconds` histograms
(`_bytes` for sizes) whose buckets are the log2 slots (slot i holds [2^i, 2^(i+1) - 1] units, so
its cumulative bucket is le = (2^(i+1) - 1) x unit), every slot present so series never appear
and vanish, plus +Inf, a _sum from the tool's exact sum and a _count.
"""
from __future__ import annotations

import errno
import gzip
import os
import re
import tempfile
import threading
import time
from typing import Callable, Iterable
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.utils import floatToGoString

from netkit.export import (EXIT_GRACE, ExportError, ExportUsageError, format_host_port,
                           split_host_port)
from netkit.export.endpoint import MetricsEndpoint
from netkit.metrics import Counter, Histogram, Snapshot

NAMESPACE = "netkit"
_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(name: str) -> str:
    return f"{NAMESPACE}_{_INVALID_NAME_CHARS.sub('_', name)}"


def bucket_bounds(slot_count: int, unit_seconds: float) -> list[str]:
    """The `le` of each log2 slot in seconds (bytes for sizes), rounded to 12 digits so 7 us
    reads 7e-06."""
    return [floatToGoString(float(f"{((2 << i) - 1) * unit_seconds:.12g}"))
            for i in range(slot_count)]


def _label_names(series: Iterable[Counter | Histogram]) -> list[str]:
    # One family needs one label set; a series without some label gets it empty.
    return sorted({name for one in series for name in one.labels})


def _group_by_name(series: Iterable[Counter | Histogram]) -> dict[str, list]:
    families: dict[str, list] = {}
    for one in series:
        families.setdefault(one.name, []).append(one)
    return families


def snapshot_families(snapshot: Snapshot) -> list[Metric]:
    """The Prometheus metric families of one Snapshot."""
    families: list[Metric] = []
    for name, counters in _group_by_name(snapshot.counters).items():
        labels = _label_names(counters)
        family = CounterMetricFamily(metric_name(name), counters[0].help, labels=labels)
        for counter in counters:
            family.add_metric([counter.labels.get(k, "") for k in labels], counter.value)
        families.append(family)
    for name, histograms in _group_by_name(snapshot.histograms).items():
        labels = _label_names(histograms)
        family = HistogramMetricFamily(f"{metric_name(name)}_{histograms[0].unit}",
                                       histograms[0].help, labels=labels)
        for histogram in histograms:
            buckets, running = [], 0
            for le, count in zip(bucket_bounds(len(histogram.slots), histogram.unit_seconds),
                                 histogram.slots):
                running += count
                buckets.append((le, running))
            buckets.append(("+Inf", running))
            sum_seconds = float(f"{histogram.sum * histogram.unit_seconds:.15g}")
            family.add_metric([histogram.labels.get(k, "") for k in labels], buckets,
                              sum_value=sum_seconds)
        families.append(family)
    return families


class LatestSnapshots:
    """A prometheus_client collector serving the latest Snapshot of each tool."""

    def __init__(self):
        self._lock = threading.Lock()
        self._latest: dict[str, Snapshot] = {}

    def update(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._latest[snapshot.tool] = snapshot

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            snapshots = list(self._latest.values())
        for snapshot in snapshots:
            yield from snapshot_families(snapshot)


def exposition(snapshots: Iterable[Snapshot]) -> bytes:
    """The text exposition format of some Snapshots (what /metrics and textfiles hold)."""
    registry = CollectorRegistry(auto_describe=False)
    collector = LatestSnapshots()
    for snapshot in snapshots:
        collector.update(snapshot)
    registry.register(collector)
    return generate_latest(registry)


class PrometheusServer:
    """Serves /metrics from one thread (netkit.export.endpoint); publish() only swaps in the new
    Snapshot."""

    @staticmethod
    def parse_listen(listen: str) -> tuple[str, int]:
        """[ADDR:]PORT; port 0 is allowed: the kernel picks a free port, which the notice says."""
        try:
            return split_host_port(listen, default_port=None, default_host="127.0.0.1")
        except ValueError as error:
            raise ExportUsageError(f"--prometheus {listen}: {error}") from None

    def __init__(self, listen: str, notice: Callable[[str], None] | None = None):
        host, port = self.parse_listen(listen)
        self.snapshots = LatestSnapshots()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.snapshots)
        try:
            self._endpoint = MetricsEndpoint(host, port, self._render)
        except (OSError, ValueError) as error:     # ValueError: a name IDNA cannot encode
            reason = ("address already in use" if getattr(error, "errno", None) == errno.EADDRINUSE
                      else getattr(error, "strerror", None) or str(error))
            raise ExportError(f"--prometheus {listen}: {reason.lower()}") from None
        self.host, self.port = host, self._endpoint.server_address[1]
        self.url = f"http://{format_host_port(host, self.port)}/metrics"
        if notice:
            notice(f"serving Prometheus metrics at {self.url}")

    def _render(self, accept: str, accept_encoding: str, query: str):
        """What prometheus_client's own handler sends: the format the scraper prefers
        (OpenMetrics for Prometheus), gzip when accepted, `?name[]=` to choose families."""
        encoder, content_type = choose_encoder(accept)
        registry = self.registry
        names = parse_qs(query).get("name[]")
        if names:
            registry = registry.restricted_registry(names)
        body = encoder(registry)
        headers = [("Content-Type", content_type)]
        if gzip_accepted(accept_encoding):
            body = gzip.compress(body)
            headers.append(("Content-Encoding", "gzip"))
        return body, headers

    @property
    def connection_count(self) -> int:
        return self._endpoint.connection_count

    def publish(self, snapshot: Snapshot) -> None:
        self.snapshots.update(snapshot)

    def close(self, deadline: float | None = None) -> None:
        self._endpoint.close(time.monotonic() + EXIT_GRACE if deadline is None else deadline)


class TextfileWriter:
    """Writes DIR/netkit_<tool>.prom each interval, atomically (temp file + rename).

    node_exporter's textfile collector reads every *.prom in DIR at each scrape; the rename means
    it sees either the previous interval's file or the new one, never half of one. Writing is
    done by a daemon thread, latest Snapshot wins, so a slow disk never holds up a measurement.
    """

    def __init__(self, directory: str, notice: Callable[[str], None] | None = None):
        if not os.path.isdir(directory):
            raise ExportError(f"--textfile {directory}: no such directory")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ExportError(f"--textfile {directory}: not writable")
        self.directory = directory
        self.notice = notice
        self._failing = False   # report a write failure once, not every interval
        self._pending: dict[str, Snapshot] = {}
        self._wakeup = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._write_loop, name="textfile-writer",
                                        daemon=True)
        self._thread.start()

    def path_for(self, tool: str) -> str:
        return os.path.join(self.directory, f"{NAMESPACE}_{tool}.prom")

    def publish(self, snapshot: Snapshot) -> None:
        with self._wakeup:
            self._pending[snapshot.tool] = snapshot
            self._wakeup.notify()

    def close(self, deadline: float | None = None) -> None:
        """Write the last Snapshot unless the disk takes longer than `deadline` (then say so)."""
        with self._wakeup:
            self._closing = True
            self._wakeup.notify()
        if deadline is None:
            deadline = time.monotonic() + EXIT_GRACE
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive() and self.notice:
            self.notice(f"--textfile {self.directory}: the last interval was not written "
                        "by exit (the disk is not answering)")

    def _write_loop(self) -> None:
        while True:
            with self._wakeup:
                while not self._pending and not self._closing:
                    self._wakeup.wait()
                pending, self._pending = self._pending, {}
                closing = self._closing
            for snapshot in pending.values():
                self._write_reporting_failure(snapshot)
            if closing and not pending:
                return

    def _write_reporting_failure(self, snapshot: Snapshot) -> None:
        try:
            self._write(snapshot)
        except OSError as error:
            if not self._failing and self.notice:
                self.notice(f"--textfile {self.directory}: {error.strerror or error}")
            self._failing = True
        else:
            self._failing = False

    def _write(self, snapshot: Snapshot) -> None:
        content = exposition([snapshot])
        # The temp name lacks the .prom suffix, so the collector never reads a partial file.
        fd, temp_path = tempfile.mkstemp(prefix=f".{NAMESPACE}_{snapshot.tool}.",
                                         dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as temp:
                temp.write(content)
            os.chmod(temp_path, 0o644)
            os.replace(temp_path, self.path_for(snapshot.tool))
        except BaseException:
            try:
                os.unlink(temp_path)
            except FileNotFoundError:
                pass
            raise
