"""The tables of the Parquet export and `kpath query` (viz/tables.py,
viz/parquet.py, viz/query.py) on synthetic traces: numbering across
windows, the host of each row in a multi-host trace, the output formats."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import statistics
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.synthetic import synthetic_trace
from tests.unit.synthetic_traces import CLIENT_TID, synthetic_chat
from tracer.timeline.columnar import stats_input_of, trace_stats
from tracer.timeline.windows import Plan
from tracer.tracefile import Source, Trace
from viz.parquet import write_parquet
from viz.query import QueryError, prepare, run, write_csv, write_json, write_table
from viz.tables import SCHEMAS, TABLES, table_batches


def _tables(plan: Plan) -> dict[str, pa.Table]:
    batches = list(table_batches(plan, "synthetic.kpath"))
    return {name: pa.Table.from_batches([b[name] for b in batches], schema=SCHEMAS[name])
            for name in TABLES}


def test_windows_number_rows_as_one_window() -> None:
    """Three independent copies of the chat cut into windows give the rows
    the whole trace gives in one window."""
    trace = synthetic_trace(synthetic_chat().trace(), 3)
    cut = Plan(trace, target=1)
    whole = Plan(trace, target=10 ** 9)
    assert len(cut.bounds) == 3 and len(whole.bounds) == 1
    a, b = _tables(cut), _tables(whole)
    for name in TABLES:
        assert a[name].to_pylist() == b[name].to_pylist(), name
    assert a["flows"].column("flow").to_pylist() == [1, 2, 3]
    assert a["events"].column("index").to_pylist() == list(range(trace.num_events))
    # step ids run on across windows: 0..N-1, each window's after the last
    steps = set(a["events"].column("step").to_pylist())
    assert sorted(steps) == list(range(len(steps)))
    per_flow = {f: {s for s, g in zip(a["packets"].column("step").to_pylist(),
                                     a["packets"].column("flow").to_pylist(), strict=True)
                    if g == f} for f in (1, 2, 3)}
    assert max(per_flow[1]) < min(per_flow[2]) and max(per_flow[2]) < min(per_flow[3])


def test_medians_across_windows_are_the_stats_medians() -> None:
    """The hops of a trace rebuilt window by window give, per flow,
    direction, class and hop, the medians of the columnar --stats."""
    trace = synthetic_trace(synthetic_chat().trace(), 4)
    plan = Plan(trace, target=1)
    assert len(plan.bounds) == 4
    hops = _tables(plan)["hops"].to_pylist()
    groups: dict[tuple[int, str, str, str], list[int]] = {}
    for h in hops:
        if not h["gap"]:
            key = (h["flow"], h["sender"], h["class"], h["hop"])
            groups.setdefault(key, []).append(h["latency_ns"])
    stats = trace_stats(stats_input_of(trace))
    want = {(fl.number, str(r.sender), str(r.klass), str(r.hop)): (r.measured, r.median_ns)
            for fl in stats.flows for r in fl.hop_stats}
    got = {k: (len(v), round(statistics.median(v))) for k, v in groups.items()}
    assert len(want) > 20 and {k[0] for k in want} == {1, 2, 3, 4}
    assert got == want


def test_host_of_each_row_in_a_two_host_trace() -> None:
    """A merged trace's events carry a `source` column (header `sources`):
    each row's host is its first event's."""
    chat = synthetic_chat().trace()
    table = chat.table
    source = pa.array([1 if tid != CLIENT_TID else 0 for tid in table.column("tid").to_pylist()],
                      pa.int32())
    header = dataclasses.replace(chat.header,
                                 sources=[Source(hostname="alpha"), Source(hostname="beta")])
    # (A trace format with its own `source` column has it replaced here.)
    at = table.schema.get_field_index("source")
    table = (table.set_column(at, "source", source) if at >= 0
             else table.append_column("source", source))
    trace = Trace.from_table(header, table, path="ab.kpath")
    t = _tables(Plan(trace))
    ev = t["events"]
    assert ev.column("host").to_pylist() == [
        "beta" if s else "alpha" for s in ev.column("source").to_pylist()]
    assert set(ev.column("host").to_pylist()) == {"alpha", "beta"}
    by_index = dict(zip(ev.column("index").to_pylist(), ev.column("host").to_pylist(),
                        strict=True))
    hops = t["hops"]
    assert hops.num_rows
    assert hops.column("host").to_pylist() == [by_index[i] for i in
                                                hops.column("from_event").to_pylist()]


def test_single_host_trace_is_source_zero_with_its_hostname() -> None:
    t = _tables(Plan(synthetic_chat().trace()))
    for name in TABLES:
        assert set(t[name].column("source").to_pylist()) == {0}, name
        assert set(t[name].column("host").to_pylist()) == {"synthetic-host"}, name


def test_write_parquet_leaves_only_the_five_files(tmp_path: Path) -> None:
    written = write_parquet(Plan(synthetic_chat().trace()), tmp_path / "out", "chat.kpath")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{name}.parquet" for name in TABLES)
    for name in TABLES:
        assert pq.read_table(tmp_path / "out" / f"{name}.parquet").num_rows == written.rows[name]
    assert written.rows["flows"] == 1 and written.rows["events"] > 20


@pytest.fixture
def chat_file(tmp_path: Path) -> Path:
    return synthetic_chat().write(tmp_path / "chat.kpath")


def _out(fn: object, con: object, sql: str) -> str:
    parts: list[str] = []
    fn(run(con, sql), parts.append)  # type: ignore[operator, arg-type]
    return "".join(parts)


def test_output_formats(chat_file: Path, tmp_path: Path) -> None:
    con = prepare([str(chat_file), str(chat_file)], tmp_path / "scratch")
    sql = ("select trace, step, label, payload, read_by, null as nothing, 1.5 as half "
           "from packets order by step limit 2")
    table = _out(write_table, con, sql).splitlines()
    assert table[0].split() == ["trace", "step", "label", "payload", "read_by", "nothing", "half"]
    assert table[-1] == "(2 rows)"
    assert "NULL" in table[1] and table[1].rstrip().endswith("1.5")
    rows = list(csv.DictReader(io.StringIO(_out(write_csv, con, sql))))
    assert [r["step"] for r in rows] == ["0", "0"]  # the same trace twice
    assert rows[0]["nothing"] == "" and rows[0]["trace"] == str(chat_file)
    doc = json.loads(_out(write_json, con, sql))
    assert doc[0]["nothing"] is None and doc[0]["half"] == 1.5 and doc[0]["read_by"] == []
    assert json.loads(_out(write_json, con, "select 1 as x where false")) == []
    assert _out(write_table, con, "select 1 as x where false").splitlines() == ["x", "(0 rows)"]
    count = _out(write_csv, con, "select count(*) as n from events").splitlines()
    assert count == ["n", str(2 * len(synthetic_chat().events))]


def test_sql_errors_are_one_line(chat_file: Path, tmp_path: Path) -> None:
    con = prepare([str(chat_file)], tmp_path / "scratch")
    for sql in ("selec 1", "select * from nope", "select 1 +"):
        with pytest.raises(QueryError) as err:
            run(con, sql)
        assert "\n" not in str(err.value) and str(err.value)
