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
from netkit.render.hist import format_linear, format_log2, log2_label
from netkit.render.output import Column, Output, StreamTable
from netkit.tools.common import Ticker


def test_log2_labels_follow_the_slot_definition():
    assert [log2_label(i) for i in range(4)] == ["[0, 2)", "[2, 4)", "[4, 8)", "[8, 16)"]
    assert log2_label(10) == "[1K, 2K)"
    assert log2_label(20) == "[1M, 2M)"


def test_log2_histogram_is_trimmed_and_scaled():
    slots = [0, 0, 4, 0, 8, 0, 0]
    rows = format_log2(slots)
    assert [r[0] for r in rows] == ["[4, 8)", "[8, 16)", "[16, 32)"]
    assert [r[1] for r in rows] == [4, 0, 8]
    assert [len(r[2]) for r in rows] == [26, 0, 52]
    assert format_log2([0] * 8) == []


def test_linear_histogram():
    rows = format_linear([0, 3, 1], low=0, step=10)
    assert rows[0][:2] == ("[10, 20)", 3) and rows[1][:2] == ("[20, 30)", 1)


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


def test_log2hist_arithmetic():
    a = Log2Hist([1, 2] + [0] * 30, count=3, sum=7)
    b = Log2Hist([0, 1] + [0] * 30, count=1, sum=2)
    a.add(b)
    assert a.slots[:2] == [1, 3] and a.count == 4 and a.sum == 9
    delta = a.minus(b)
    assert delta.slots[:2] == [1, 2] and delta.count == 3 and delta.sum == 7
    assert a.mean == pytest.approx(2.25)
