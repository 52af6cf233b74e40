"""`kpath convert` to version 2 streams: batch by batch, the header first.
Synthetic events (built in code)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_tracefile import bare_event, synthetic_event, synthetic_header, write_v1
from tracer.tracefile import Lost, Trailer, read_trace, scan_trace
from tracer.tracefile import convert as convert_module
from tracer.tracefile.convert import convert


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 5 rows from chunks of 600 bytes (a few lines each)."""
    monkeypatch.setattr(convert_module, "BATCH_ROWS", 5)
    monkeypatch.setattr(convert_module, "scan_trace", lambda p: scan_trace(p, chunk_bytes=600))


def test_streamed_in_many_batches_keeps_every_record(tmp_path: Path, small_batches: None) -> None:
    evs = [synthetic_event(i, comm=f"c{i % 3}") if i % 2 else bare_event(i) for i in range(40)]
    lost = [Lost(ts_ns=12, count=2, probe="tcp_v4_rcv"), Lost(ts_ns=31, count=1)]
    src = write_v1(tmp_path / "v1.kpath", synthetic_header(), evs, lost,
                   Trailer("count", 40, 3, {"tcp_v4_rcv": 2, "(unknown)": 1}))
    done = convert(src, tmp_path / "v2.kpath")
    a, b = read_trace(src), read_trace(tmp_path / "v2.kpath")
    assert done.events == 40 and done.lost == 2 and done.trailer and not done.cut_short
    # Rows compared as values: the dictionaries differ (per chunk, per batch).
    assert b.table.to_pylist() == a.table.to_pylist() and b.events == evs
    assert b.lost == lost and b.trailer == a.trailer
    sizes = [batch.num_rows for batch in scan_trace(tmp_path / "v2.kpath")]
    assert len(sizes) > 8 and max(sizes) < 10


def test_probes_the_header_lacks_are_found_first(tmp_path: Path, small_batches: None) -> None:
    """The header is written before any batch: events naming a probe it does
    not list, late in the file, make convert read the file twice."""
    evs = [bare_event(i) for i in range(30)] + [bare_event(30, probe="tcp_rcv_established")]
    src = write_v1(tmp_path / "v1.kpath", synthetic_header(), evs)
    convert(src, tmp_path / "v2.kpath")
    t = read_trace(tmp_path / "v2.kpath")
    assert t.header.probe_names[-1] == "tcp_rcv_established"
    assert t.events == evs and t.cut_short is not None  # no trailer: still cut short


def test_lost_records_without_events(tmp_path: Path, small_batches: None) -> None:
    lost = [Lost(ts_ns=i, count=1, probe="tcp_v4_rcv") for i in range(12)]
    src = write_v1(tmp_path / "v1.kpath", synthetic_header(), [], lost,
                   Trailer("duration", 0, 12, {"tcp_v4_rcv": 12}))
    convert(src, tmp_path / "v2.kpath")
    t = read_trace(tmp_path / "v2.kpath")
    assert t.lost == lost and t.num_events == 0 and t.trailer is not None
