"""Pure parts of the view layer: histogram text, output modes, plain tables, the interval clock,
and Log2Hist arithmetic."""
from __future__ import annotations

import io
import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netkit.engine.hist import Log2Hist
from netkit.render.hist import format_log2, hist_json, log2_label
from netkit.render.output import Column, Output, StreamTable
from netkit.cli.loop import Ticker


def test_log2_labels_follow_the_slot_definition():
    assert [log2_label(i) for i in range(4)] == ["[0, 2)", "[2, 4)", "[4, 8)", "[8, 16)"]
    assert log2_label(10) == "[1K, 2K)"
    assert log2_label(20) == "[1M, 2M)"


def test_quantiles_are_the_upper_end_of_the_bucket_that_holds_them():
    hist = Log2Hist.of_values([1] * 50 + [100] * 49 + [5000])
    assert [hist.quantile_high(q) for q in (0.5, 0.51, 0.99, 0.995, 1.0)] == \
        [2, 128, 128, 8192, 8192]
    assert Log2Hist().quantile_high(0.5) is None


def test_log2_histogram_is_trimmed_and_scaled():
    slots = [0, 0, 4, 0, 8, 0, 0]
    rows = format_log2(slots)
    assert [r[0] for r in rows] == ["[4, 8)", "[8, 16)", "[16, 32)"]
    assert [r[1] for r in rows] == [4, 0, 8]
    assert [len(r[2]) for r in rows] == [26, 0, 52]
    assert format_log2([0] * 8) == []


def test_histogram_json_buckets_are_half_open_log2_ranges():
    slots = [2, 3, 1] + [0] * 6 + [1, 1] + [0] * 21
    assert hist_json(slots) == [{"low": 0, "high": 2, "count": 2}, {"low": 2, "high": 4, "count": 3},
                                {"low": 4, "high": 8, "count": 1},
                                {"low": 512, "high": 1024, "count": 1},
                                {"low": 1024, "high": 2048, "count": 1}]


def test_log2_slots_in_python_follow_common_h():
    hist = Log2Hist.of_values([0, 1, 2, 3, 4, 1023, 1024, 2])
    assert hist.slots[:3] == [2, 3, 1] and hist.slots[9] == 1 and hist.slots[10] == 1
    assert (hist.count, hist.sum) == (8, 2059)
    assert hist_json(hist.slots) == hist_json([2, 3, 1] + [0] * 6 + [1, 1] + [0] * 21)


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=32))
def test_histogram_counts_are_preserved(slots):
    rows = format_log2(slots)
    assert sum(r[1] for r in rows) == sum(slots)
    assert all(len(r[2]) <= 52 for r in rows)


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_output_mode_selection(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert Output(stream=io.StringIO()).mode == "plain"
    assert Output(stream=_Tty()).mode == "rich"
    assert Output(stream=_Tty(), no_color=True).mode == "plain"
    assert Output(stream=_Tty(), json_mode=True).mode == "json"
    monkeypatch.setenv("NO_COLOR", "1")
    assert Output(stream=_Tty()).mode == "plain"


def test_json_records_carry_an_iso_timestamp_first():
    stream = io.StringIO()
    Output(json_mode=True, stream=stream).record({"latency_us": 5})
    record = json.loads(stream.getvalue())
    assert list(record) == ["ts", "latency_us"]
    assert "T" in record["ts"] and record["ts"][-6] in "+-"


def test_plain_table_aligns_columns():
    stream = io.StringIO()
    out = Output(stream=stream)
    out.table([Column("PID", 5), Column("COMM", 4, "<")], [[1, "a"], [12345, "longname"]])
    lines = stream.getvalue().splitlines()
    assert lines == ["  PID COMM", "    1 a", "12345 longname"]


def test_stream_table_prints_header_once():
    stream = io.StringIO()
    table = StreamTable(Output(stream=stream), [Column("A", 3), Column("B", 3)])
    table.row([1, 2])
    table.row([3, 4])
    assert stream.getvalue().splitlines() == ["  A   B", "  1   2", "  3   4"]


def test_ticker_counts_and_duration():
    start = time.monotonic()
    assert len(list(Ticker(0.01, count=3))) == 3
    ticks = list(Ticker(0.05, duration=0.12))
    assert 2 <= len(ticks) <= 3
    assert time.monotonic() - start < 1.0
    assert list(Ticker(1, duration=0)) == []


def test_ticker_waits_with_the_given_poll_until_each_tick():
    """A poll that returns early (an event came) is called again until the tick is due; without
    an interval the ticker yields nothing and ends with the duration."""
    waits = []

    def early_poll(seconds):
        waits.append(seconds)
        time.sleep(min(seconds, 0.01))

    start = time.monotonic()
    assert len(list(Ticker(0.05, count=2, wait=early_poll))) == 2
    assert time.monotonic() - start >= 0.1 and len(waits) >= 10
    assert max(waits) <= 0.05
    waits.clear()
    start = time.monotonic()
    Ticker(None, duration=0.3, wait=early_poll).run_out()
    assert 0.3 <= time.monotonic() - start < 0.5
    assert max(waits) <= Ticker.LONGEST_WAIT and len(waits) >= 20


def test_ticker_skips_the_ticks_a_stopped_process_missed():
    """After a stop longer than the interval (SIGSTOP, here a wait that oversleeps once) the
    late tick comes once, and the clock starts afresh: no burst of catch-up ticks."""
    slept = []

    def stopped_once(seconds):
        time.sleep(0.35 if not slept else seconds)
        slept.append(seconds)

    stamps = [time.monotonic() for _ in Ticker(0.05, count=4, wait=stopped_once)]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert len(stamps) == 4 and min(gaps) >= 0.045, gaps


def test_log2hist_arithmetic():
    a = Log2Hist([1, 2] + [0] * 30, count=3, sum=7)
    b = Log2Hist([0, 1] + [0] * 30, count=1, sum=2)
    total = a + b
    assert total.slots[:2] == [1, 3] and total.count == 4 and total.sum == 9
    delta = total - b
    assert delta.slots[:2] == [1, 2] and delta.count == 3 and delta.sum == 7
    assert total.mean == pytest.approx(2.25)
    assert not Log2Hist() and delta


class _Map:
    """A BPF hash map as CumulativeMap sees it: items() and delete()."""

    def __init__(self, entries):
        self.entries = entries

    def items(self):
        return list(self.entries.items())

    def delete(self, key):
        del self.entries[key]


def test_cumulative_map_gives_changes_and_totals_and_retires_the_gone():
    from netkit.engine.counters import Counts, CumulativeMap
    gone = set()
    bpf_map = _Map({1: 5, 2: 7})
    reader = CumulativeMap(bpf_map, lambda k, v: (k, Counts({"n": v})),
                           retire=lambda k, v: k in gone)
    assert {k: v["n"] for k, v in reader.read().items()} == {1: 5, 2: 7}
    bpf_map.entries.update({1: 9, 3: 1})       # 1 grew by 4, 2 did not move, 3 is new
    gone.add(2)
    assert {k: v["n"] for k, v in reader.read().items()} == {1: 4, 3: 1}
    assert 2 not in bpf_map.entries             # retired: its last values were taken
    assert {k: v["n"] for k, v in reader.totals().items()} == {1: 9, 2: 7, 3: 1}
    bpf_map.entries[2] = 3                      # the key came back (a reused PID)
    gone.clear()
    assert {k: v["n"] for k, v in reader.read().items()} == {2: 3}
    assert reader.totals()[2]["n"] == 10


def test_an_ipv4_mapped_address_is_shown_as_ipv4_unless_asked_not_to():
    import socket
    from netkit.render.fields import ip_address
    mapped = bytes(10) + b"\xff\xff" + bytes([127, 0, 0, 9])
    assert ip_address(socket.AF_INET6, mapped) == "127.0.0.9"
    assert ip_address(socket.AF_INET6, mapped, unmap=False) == "::ffff:127.0.0.9"
    assert ip_address(socket.AF_INET6, bytes(15) + b"\x01") == "::1"
