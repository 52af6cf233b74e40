"""Differential test: the tables of `kpath export -f parquet` (viz/tables.py)
of a trace rebuilt in parts of independent groups (tracer/timeline/groups.py,
group_table_batches) are the rows, in the order, that the whole trace gives
in one window, on overlapping copies of real recordings (no time window
between them) and on the recordings themselves."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from bench.synth import write_synthetic
from kpath.cli_view import export_cmd
from tests.replay.recordings import DATA, RECORDINGS, needs_recordings
from tracer.timeline.event_rules import recorded_probes
from tracer.timeline.groups import plan_groups
from tracer.timeline.windows import Plan
from tracer.tracefile import probe_specs, read_trace
from tracer.tracefile.convert import convert
from viz.tables import SCHEMAS, TABLES, group_table_batches, table_batches

pytestmark = needs_recordings


def _tables(batches: Iterable[dict[str, pa.RecordBatch]]) -> dict[str, list[dict[str, object]]]:
    made = list(batches)
    return {name: pa.Table.from_batches([b[name] for b in made if name in b],
                                        schema=SCHEMAS[name]).to_pylist()
            for name in TABLES}


def _check(path: Path, target: int) -> int:
    trace = read_trace(path)
    with recorded_probes(probe_specs(trace.header.probes)):
        whole = _tables(table_batches(Plan(trace, 10 ** 9), "t"))
        plan = plan_groups(str(path), target)
        assert plan is not None
        parts = _tables(group_table_batches(plan, "t"))
    for name in TABLES:
        assert parts[name] == whole[name], (path.name, name)
    return plan.parts_made


@pytest.mark.parametrize("name", ["hello_hi", "mixed", "veth_netns", "bulk_lossy"])
def test_grouped_tables_equal_the_whole_tables(name: str, tmp_path: Path) -> None:
    out = tmp_path / "overlap.kpath"
    write_synthetic(DATA / f"{name}.kpath", out, 8, overlap=8)
    v2 = tmp_path / "overlap_v2.kpath"
    convert(out, v2)
    assert _check(v2, 1) >= 2
    assert _check(DATA / f"{name}.kpath", 100) >= 1


def test_export_parquet_of_overlapping_copies(tmp_path: Path) -> None:
    out = tmp_path / "overlap.kpath"
    write_synthetic(DATA / "hello_hi.kpath", out, 6, overlap=8)
    trace = read_trace(out)
    with recorded_probes(probe_specs(trace.header.probes)):
        whole = _tables(table_batches(Plan(trace, 10 ** 9), str(out)))
    res = CliRunner().invoke(export_cmd, [str(out), "-f", "parquet", "-o", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    for name in TABLES:
        got = pq.read_table(tmp_path / "d" / f"{name}.parquet").to_pylist()
        assert got == whole[name], name


def test_every_recording_is_planned_in_groups() -> None:
    # Every recording plans (none has a return of a probe not known to
    # return, nor a context out of order).
    for path in RECORDINGS:
        assert plan_groups(str(path)) is not None, path.name
