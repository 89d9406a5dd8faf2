"""Exporters against the real servers: Debian's prometheus and promtool, carbon-cache and whisper.

Every server is started here on a free loopback port with its own temp dir, and stopped here.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from netkit.export import ExportError, ExportHub, split_host_port
from netkit.export.graphite import GraphiteSender, metric_path, snapshot_lines
from netkit.export.prometheus import PrometheusServer, TextfileWriter, bucket_bounds, exposition
from netkit.metrics import Counter, Histogram, Snapshot

from conftest import Traced, assert_one_line_error, require_or_skip, require_root_bpf, run_netkit


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def need_program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        require_or_skip(f"{name} is not installed (tools/bootstrap.sh installs it)")
    return path


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except OSError:                     # refused while starting, or 503 until storage is open
        return False


def stop(process: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sample_snapshot(tool="demo", ts=None, connects=5, slots=(0, 1, 3, 0, 2), latency_sum=41):
    return Snapshot(
        tool=tool, ts=time.time() if ts is None else ts,
        counters=[Counter(f"{tool}_connect_calls", "Calls to connect()", connects,
                          {"comm": "curl"}),
                  Counter(f"{tool}_connect_calls", "Calls to connect()", 2, {"comm": "wget"})],
        histograms=[Histogram(f"{tool}_connect_latency", "Time spent in connect()", slots,
                              latency_sum, 1e-6, {"family": "ipv4"})])


# --- Prometheus -------------------------------------------------------------------------------

def test_histogram_buckets_are_cumulative_log2_bounds_in_seconds():
    text = exposition([sample_snapshot()]).decode()
    assert bucket_bounds(5, 1e-6) == ["1e-06", "3e-06", "7e-06", "1.5e-05", "3.1e-05"]
    buckets = [line for line in text.splitlines() if "_seconds_bucket" in line]
    counts = [float(line.rsplit(" ", 1)[1]) for line in buckets]
    assert counts == [0, 1, 4, 4, 6, 6]                    # every slot, then +Inf
    assert 'le="+Inf"' in buckets[-1]
    assert 'netkit_demo_connect_latency_seconds_sum{family="ipv4"} 4.1e-05' in text
    assert 'netkit_demo_connect_latency_seconds_count{family="ipv4"} 6.0' in text
    assert 'netkit_demo_connect_calls_total{comm="curl"} 5.0' in text


def test_promtool_accepts_the_exposition():
    promtool = need_program("promtool")
    payload = exposition([sample_snapshot("sockstat"), sample_snapshot("soconnlat")])
    check = subprocess.run([promtool, "check", "metrics"], input=payload, capture_output=True,
                           timeout=30)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    assert check.stdout.strip() == b"" and check.stderr.strip() == b""   # no lint warnings


@pytest.fixture
def prometheus_scraping(tmp_path):
    """Start Debian's prometheus scraping netkit endpoints every 200 ms; yields (start, query)."""
    binary = need_program("prometheus")
    processes = []

    def start(*target_ports: int) -> None:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        targets = ", ".join(f"'127.0.0.1:{target}'" for target in target_ports)
        config.write_text(
            "global: {scrape_interval: 200ms, scrape_timeout: 150ms}\n"
            "scrape_configs:\n"
            "  - job_name: netkit\n"
            f"    static_configs: [{{targets: [{targets}]}}]\n")
        log = open(tmp_path / "prometheus.log", "wb")
        processes.append(subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log))
        start.api = f"http://127.0.0.1:{port}/api/v1/query?query="
        ready = f"http://127.0.0.1:{port}/-/ready"
        wait_until(lambda: http_ok(ready), 20, "prometheus to be ready")

    def query(promql: str) -> list[dict]:
        with urllib.request.urlopen(start.api + urllib.parse.quote(promql), timeout=5) as reply:
            answer = json.load(reply)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    yield start, query
    for process in processes:
        stop(process)


def scalar(results: list[dict]) -> float | None:
    return float(results[0]["value"][1]) if len(results) == 1 else None


def test_prometheus_scrapes_netkit_and_answers_promql(prometheus_scraping):
    start, query = prometheus_scraping
    server = PrometheusServer("127.0.0.1:0")
    try:
        start(server.port)
        server.publish(sample_snapshot("sockstat", connects=5))
        counter = 'netkit_sockstat_connect_calls_total{comm="curl"}'
        wait_until(lambda: scalar(query(counter)) == 5, 20, "prometheus to store 5")
        # The endpoint serves the latest Snapshot: a new interval is what the next scrape sees.
        server.publish(sample_snapshot("sockstat", connects=17))
        wait_until(lambda: scalar(query(counter)) == 17, 20, "prometheus to store 17")
        count = 'netkit_sockstat_connect_latency_seconds_count{family="ipv4"}'
        assert scalar(query(count)) == 6
        bucket = 'netkit_sockstat_connect_latency_seconds_bucket{le="7e-06"}'
        assert scalar(query(bucket)) == 4
        assert scalar(query('up{job="netkit"}')) == 1
    finally:
        server.close()


def test_prometheus_port_in_use_is_one_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ExportError, match=f"--prometheus {port}: address already in use"):
            PrometheusServer(str(port))


def test_prometheus_binds_loopback_unless_told(tmp_path):
    server = PrometheusServer("0")
    try:
        assert server.host == "127.0.0.1"
        with urllib.request.urlopen(server.url, timeout=5) as reply:
            assert reply.status == 200
    finally:
        server.close()


def test_prometheus_serves_on_ipv6_loopback():
    server = PrometheusServer("[::1]:0")
    try:
        assert server.url.startswith("http://[::1]:")
        with urllib.request.urlopen(server.url, timeout=5) as reply:
            assert reply.status == 200
    finally:
        server.close()


def test_textfile_is_replaced_atomically_and_passes_promtool(tmp_path):
    promtool = need_program("promtool")
    writer = TextfileWriter(str(tmp_path))
    first = tmp_path / "netkit_sockstat.prom"
    try:
        writer.publish(sample_snapshot("sockstat", connects=3))
        wait_until(lambda: first.exists(), 5, "the first textfile")
        inode = first.stat().st_ino
        writer.publish(sample_snapshot("sockstat", connects=9))
    finally:
        writer.close()                                  # writes what is pending, then stops
    assert first.stat().st_ino != inode                 # a new file renamed over the old one
    assert 'netkit_sockstat_connect_calls_total{comm="curl"} 9.0' in first.read_text()
    assert sorted(os.listdir(tmp_path)) == ["netkit_sockstat.prom"]   # no temp files left
    check = subprocess.run([promtool, "check", "metrics"], input=first.read_bytes(),
                           capture_output=True, timeout=30)
    assert check.returncode == 0, check.stderr.decode()
    with pytest.raises(ExportError, match="no such directory"):
        TextfileWriter(str(tmp_path / "missing"))


@pytest.mark.parametrize("text, expected", [
    ("9100", ("127.0.0.1", 9100)), (":9100", ("127.0.0.1", 9100)),
    ("0.0.0.0:9100", ("0.0.0.0", 9100)), ("[::1]:9100", ("::1", 9100)),
    ("carbon.example", ("carbon.example", 2003)), ("[::1]", ("::1", 2003)),
])
def test_address_forms(text, expected):
    assert split_host_port(text, default_port=2003, default_host="127.0.0.1") == expected


@pytest.mark.parametrize("text", ["", "host:port", "::1:9100", "1.2.3.4:70000", "[::1"])
def test_bad_addresses_are_refused(text):
    with pytest.raises(ValueError):
        split_host_port(text, default_port=2003, default_host="127.0.0.1")


# --- Graphite ---------------------------------------------------------------------------------

def test_graphite_paths_and_lines():
    assert metric_path("netkit.h1", "sockstat", "sockstat_connect_calls",
                       {"family": "ipv4", "comm": "my curl"}) == \
        "netkit.h1.sockstat.connect_calls.comm.my_curl.family.ipv4"
    lines = snapshot_lines("p", sample_snapshot("demo", ts=1700000000.7))
    assert "p.demo.connect_calls.comm.curl 5 1700000000" in lines
    assert "p.demo.connect_latency.family.ipv4.count 6 1700000000" in lines
    assert "p.demo.connect_latency.family.ipv4.sum_seconds 4.1e-05 1700000000" in lines


class Carbon:
    """A carbon-cache on free loopback ports, storing every point at 1 s resolution."""

    def __init__(self, root: Path):
        self.binary = need_program("carbon-cache")
        self.root = root
        self.port = free_port()
        self.whisper_dir = root / "whisper"
        (root / "conf").mkdir()
        (root / "log").mkdir()
        (root / "conf" / "carbon.conf").write_text(
            "[cache]\n"
            f"STORAGE_DIR = {root}/\nLOCAL_DATA_DIR = {self.whisper_dir}/\n"
            f"WHITELISTS_DIR = {root}/lists/\nCONF_DIR = {root}/conf/\n"
            f"LOG_DIR = {root}/log/\nPID_DIR = {root}/\nUSER =\n"
            "ENABLE_TAGS = False\nMAX_CACHE_SIZE = inf\nMAX_UPDATES_PER_SECOND = inf\n"
            "MAX_CREATES_PER_MINUTE = inf\nLINE_RECEIVER_INTERFACE = 127.0.0.1\n"
            f"LINE_RECEIVER_PORT = {self.port}\nPICKLE_RECEIVER_INTERFACE = 127.0.0.1\n"
            f"PICKLE_RECEIVER_PORT = {free_port()}\nCACHE_QUERY_INTERFACE = 127.0.0.1\n"
            f"CACHE_QUERY_PORT = {free_port()}\n")
        (root / "conf" / "storage-schemas.conf").write_text(
            "[everything]\npattern = .*\nretentions = 1s:6h\n")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.root / "log" / "console.log", "ab")
        self.process = subprocess.Popen(
            [self.binary, f"--config={self.root}/conf/carbon.conf",
             f"--pidfile={self.root}/carbon.pid", f"--logdir={self.root}/log",
             "--nodaemon", "start"], stdout=log, stderr=log, cwd=self.root)
        wait_until(lambda: port_open(self.port) or self.process.poll() is not None, 30,
                   "carbon-cache to listen")
        assert self.process.poll() is None, (self.root / "log" / "console.log").read_text()

    def kill(self) -> None:
        stop(self.process, signal.SIGKILL)

    def points(self, path: str, since: float) -> dict[int, float]:
        """{timestamp: value} that the whisper file of `path` holds from `since` on."""
        import whisper
        file = self.whisper_dir / (path.replace(".", "/") + ".wsp")
        if not file.exists():
            return {}
        try:
            (start, _end, step), values = whisper.fetch(str(file), int(since) - 1,
                                                        int(time.time()))
        except whisper.CorruptWhisperFile:       # carbon is still writing its header
            return {}
        return {start + i * step: v for i, v in enumerate(values) if v is not None}


@pytest.fixture
def carbon(tmp_path):
    server = Carbon(tmp_path)
    server.start()
    yield server
    stop(server.process)


def test_carbon_stores_what_netkit_sends(carbon):
    notices = []
    sender = GraphiteSender(f"127.0.0.1:{carbon.port}", prefix="test.e2e", notice=notices.append)
    base = int(time.time()) - 60
    try:
        for i in range(3):
            sender.publish(sample_snapshot("demo", ts=base + i, connects=10 * i + 1,
                                           slots=(0, i, 1), latency_sum=i + 3))
        path = "test.e2e.demo.connect_calls.comm.curl"
        expected = {base: 1.0, base + 1: 11.0, base + 2: 21.0}
        wait_until(lambda: carbon.points(path, base) == expected, 20, "whisper to hold the counter")
        latency = "test.e2e.demo.connect_latency.family.ipv4"
        wait_until(lambda: carbon.points(latency + ".count", base) == {base: 1, base + 1: 2,
                                                                       base + 2: 3}, 20, "counts")
        sums = carbon.points(latency + ".sum_seconds", base)
        assert sums == pytest.approx({base: 3e-6, base + 1: 4e-6, base + 2: 5e-6})
    finally:
        sender.close()
    assert sender.lost_metrics == 0 and notices == []


def test_carbon_restart_mid_run_is_survived_and_the_gap_counted(carbon):
    """Kill carbon while netkit publishes; every point ends in whisper or in the lost count."""
    notices = []
    sender = GraphiteSender(f"127.0.0.1:{carbon.port}", prefix="test.gap", notice=notices.append,
                            queue_intervals=3, backoff_initial=0.1, backoff_max=0.2)
    path = "test.gap.demo.connect_calls.comm.curl"
    base = int(time.time()) - 120
    ts = iter(range(base, base + 100))
    try:
        published = []

        def publish_one():
            now = next(ts)
            published.append(now)
            sender.publish(sample_snapshot("demo", ts=now, connects=now - base))
            time.sleep(0.05)                    # an interval, shortened

        for _ in range(4):
            publish_one()
        # Let carbon write everything to whisper first: its cache dies with it.
        wait_until(lambda: set(carbon.points(path, base)) == set(published), 20, "first points")
        carbon.kill()
        for _ in range(8):                      # more than the queue holds while carbon is down
            publish_one()
        wait_until(lambda: sender.lost_metrics > 0, 10, "the sender to drop the oldest")
        carbon.start()
        for _ in range(4):
            publish_one()
        wait_until(lambda: published[-1] in carbon.points(path, base), 20, "points after restart")
    finally:
        sender.close()
    stored = carbon.points(path, base)
    missing = [t for t in published if t not in stored]
    lines_per_interval = len(snapshot_lines("test.gap", sample_snapshot("demo"))) + 1
    assert missing, "the outage should have cost some intervals"
    assert sender.lost_metrics == len(missing) * lines_per_interval
    assert all(stored[t] == t - base for t in stored)
    assert any("connection refused" in n or "reconnecting" in n for n in notices), notices
    assert any(f"{sender.lost_metrics} metrics lost" in n for n in notices), notices
    lost_series = carbon.points("test.gap.netkit.graphite.lost_metrics", base)
    assert lost_series[published[-1]] == sender.lost_metrics   # the gap is on the graphs too


def test_graphite_with_nobody_listening_never_blocks_publish():
    notices = []
    sender = GraphiteSender(f"127.0.0.1:{free_port()}", notice=notices.append,
                            queue_intervals=2, flush_seconds=0.3)
    started = time.monotonic()
    for i in range(50):
        sender.publish(sample_snapshot("demo", ts=1700000000 + i))
    assert time.monotonic() - started < 0.5
    sender.close()
    lines_per_interval = len(snapshot_lines("x", sample_snapshot("demo"))) + 1
    assert sender.lost_metrics == 50 * lines_per_interval
    assert "connection refused" in notices[0]
    assert notices[-1].endswith(f"{50 * lines_per_interval} metrics lost in all "
                                "while carbon was unreachable")


def test_hub_refuses_prefix_without_graphite():
    with pytest.raises(ExportError, match="--prefix needs --graphite"):
        ExportHub.from_options(["demo"], prefix="x")


# --- the shared options on a real interval tool -----------------------------------------------

def served_port(tool: Traced) -> int:
    line = next(line for line in tool._stderr if "serving Prometheus metrics at" in line)
    return int(line.rsplit(":", 1)[1].split("/")[0])


@pytest.mark.kernel
def test_sockstat_feeds_prometheus_graphite_and_textfile(prometheus_scraping, carbon, tmp_path):
    """The real `netkit sockstat` with all three exporters while a child makes known traffic."""
    require_root_bpf()
    from test_sockstat import EXPECTED, Workload
    start_prometheus, query = prometheus_scraping
    textfile_dir = tmp_path / "textfile"
    textfile_dir.mkdir()
    workload = Workload()
    tool = Traced(["sockstat", "-p", str(workload.pid), "0.2", "--prometheus", "127.0.0.1:0",
                   "--textfile", str(textfile_dir), "--graphite", f"127.0.0.1:{carbon.port}",
                   "--prefix", "test.e2e"])
    try:
        start_prometheus(served_port(tool))
        since = time.time()
        workload.run()
        for counter in ("connect_calls", "send_calls", "tx_bytes"):
            key = counter.removesuffix("_calls")
            wait_until(lambda: scalar(query(f"netkit_sockstat_{counter}_total")) == EXPECTED[key],
                       20, f"prometheus to hold {counter} = {EXPECTED[key]}")
        wait_until(lambda: sorted(carbon.points("test.e2e.sockstat.connect_calls", since)
                                  .values())[-1:] == [EXPECTED["connect"]], 20,
                   "whisper to hold the connect count")
        prom_file = textfile_dir / "netkit_sockstat.prom"
        wait_until(lambda: f"netkit_sockstat_accept_calls_total {EXPECTED['accept']}.0"
                   in prom_file.read_text(), 10, "the textfile to hold the accept count")
    finally:
        out, err = tool.finish()
        workload.release()
    assert tool.proc.returncode == 0, err
    assert "Traceback" not in err


@pytest.mark.parametrize("args, code, message", [
    (["--prometheus", "9100:x"], 2, "--prometheus 9100:x: 'x' is not a port number"),
    (["--graphite", "::1:2003"], 2, "write an IPv6 address in brackets"),
    (["--prefix", "x.y"], 2, "--prefix needs --graphite"),
    (["--textfile", "/nonexistent/netkit"], 1, "--textfile /nonexistent/netkit: no such directory"),
])
def test_bad_export_options_are_one_line_errors(args, code, message):
    line = assert_one_line_error(run_netkit("sockstat", "-d", "0", *args), "sockstat", code)
    assert message in line


def test_prometheus_port_taken_is_exit_1():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_netkit("sockstat", "-d", "0", "--prometheus", f"127.0.0.1:{port}")
    assert "address already in use" in assert_one_line_error(result, "sockstat", 1)


# --- netkit export ----------------------------------------------------------------------------

@pytest.mark.kernel
def test_netkit_export_serves_the_chosen_tools(prometheus_scraping, tmp_path):
    require_root_bpf()
    from test_sockstat import EXPECTED, Workload
    start_prometheus, query = prometheus_scraping
    workload = Workload()
    tool = Traced(["export", "sockstat", "-p", str(workload.pid), "-i", "0.2",
                   "--prometheus", "127.0.0.1:0", "--textfile", str(tmp_path)],
                  banner="Tracing for export: sockstat")
    try:
        start_prometheus(served_port(tool))
        workload.run()
        wait_until(lambda: scalar(query("netkit_sockstat_recv_calls_total")) == EXPECTED["recv"],
                   20, "prometheus to hold the recv count")
        assert scalar(query("netkit_sockstat_rx_bytes_total")) == EXPECTED["rx_bytes"]
    finally:
        out, err = tool.finish()
        workload.release()
    assert tool.proc.returncode == 0, err
    assert out == ""                                   # an agent: nothing on stdout
    assert "Exported" in err and "Traceback" not in err
    assert f"netkit_sockstat_recv_calls_total {EXPECTED['recv']}.0" in \
        (tmp_path / "netkit_sockstat.prom").read_text()


@pytest.mark.parametrize("args, message", [
    ([], "name where to export"),
    (["nosuchtool", "--prometheus", "0"], "cannot export nosuchtool (exportable: sockstat"),
])
def test_netkit_export_usage_errors(args, message):
    assert message in assert_one_line_error(run_netkit("export", *args), "export", 2)


@pytest.mark.kernel
def test_a_fleet_view_histograms_and_several_tools_in_one_prometheus(prometheus_scraping):
    """One Prometheus scrapes two netkit processes watching the same child: soconnlat with its
    latency histogram, and `netkit export` running sockstat and tcpnagle together."""
    require_root_bpf("soconnlat")
    require_root_bpf("tcpnagle")
    from test_sockstat import CONNECTIONS, EXPECTED, MESSAGES, Workload
    start_prometheus, query = prometheus_scraping
    workload = Workload()
    latency = Traced(["soconnlat", "-p", str(workload.pid), "0.2", "--prometheus", "127.0.0.1:0"])
    agent = Traced(["export", "sockstat", "tcpnagle", "-p", str(workload.pid), "-i", "0.2",
                    "--prometheus", "127.0.0.1:0"], banner="Tracing for export")
    try:
        start_prometheus(served_port(latency), served_port(agent))
        workload.run()
        count = 'sum(netkit_soconnlat_latency_seconds_count{result="OK"})'
        wait_until(lambda: scalar(query(count)) == CONNECTIONS, 20, "the latency count")
        assert scalar(query('sum(netkit_soconnlat_connects_total{result="OK"})')) == CONNECTIONS
        median = scalar(query("histogram_quantile(0.5, sum by (le) "
                              "(netkit_soconnlat_latency_seconds_bucket))"))
        assert 0 < median < 1, median           # a loopback connect: microseconds, in seconds
        assert scalar(query("sum(netkit_soconnlat_latency_seconds_sum)")) > 0
        wait_until(lambda: scalar(query("netkit_sockstat_connect_calls_total")) ==
                   EXPECTED["connect"], 20, "sockstat's connect count")
        tcp_sends = 2 * CONNECTIONS * MESSAGES          # the UDP datagram is not TCP
        wait_until(lambda: scalar(query("sum(netkit_tcpnagle_sends_total)")) == tcp_sends, 20,
                   "tcpnagle's send count")
        assert scalar(query('count(up{job="netkit"} == 1)')) == 2
    finally:
        outputs = [latency.finish(), agent.finish()]
        workload.release()
    for tool, (out, err) in zip((latency, agent), outputs):
        assert tool.proc.returncode == 0, err
        assert "Traceback" not in err
