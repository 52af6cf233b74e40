"""Loss records read as columns (tracer/tracefile/loss_columns.py) from
recorded traces: the same records as the Lost objects a scan keeps by
default, in both format versions, with blind windows and probe losses."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.replay.recordings import DATA
from tracer.tracefile import scan_trace
from tracer.tracefile.loss_columns import LossColumns

# recordings with probe losses (v1 and v2) and with blind windows (v2)
LOSSY = [DATA / "bulk_lossy.kpath", DATA / "bulk_lossy_v2.kpath",
         DATA / "two_hosts_rx_blind" / "two_hosts_a.kpath"]


@pytest.mark.parametrize("path", LOSSY, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_columns_hold_the_records_a_scan_keeps(path: Path) -> None:
    records = scan_trace(path)
    want = list(records)
    assert records.lost, "a lossy recording"
    scan = scan_trace(path)
    scan.select_losses("columns")
    got = list(scan)
    assert all(a.equals(b) for a, b in zip(got, want, strict=True))
    cols = scan.loss_columns
    assert isinstance(cols, LossColumns) and len(cols) == len(records.lost)
    assert cols.records() == records.lost == scan.lost
    assert cols.total == sum(rec.count for rec in records.lost)
    # handed over: the scan no longer holds them, and says so when asked
    assert scan.take_losses().records() == records.lost
    with pytest.raises(RuntimeError, match="not kept"):
        scan.loss_columns  # noqa: B018


@pytest.mark.parametrize("path", LOSSY[1:], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_second_pass_reads_no_records(path: Path) -> None:
    scan = scan_trace(path)
    scan.select_losses("none")
    for _batch, lost in scan.chunks():
        assert lost == []
    with pytest.raises(RuntimeError, match="not kept"):
        scan.lost  # noqa: B018
    assert scan.trailer is not None  # the trailer is read all the same
    with pytest.raises(RuntimeError, match="before reading"):
        scan.select_losses("records")
