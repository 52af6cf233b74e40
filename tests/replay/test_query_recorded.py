"""`kpath export -f parquet` and `kpath query` on the recordings: the SQL
medians of the hops table are the medians `kpath replay --stats` prints, a
query spans several traces (with a `trace` column), and the export's
tables hold what the timeline holds."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from kpath.cli import cli
from tests.replay.recordings import DATA, needs_recordings
from tests.synthetic import write_synthetic
from tracer.timeline import build_timeline
from tracer.tracefile import read_trace
from viz.tables import SCHEMAS, TABLES

pytestmark = needs_recordings

# Three recordings: a chat, a 1 MiB transfer, and one with lost events
# (its packets around the losses are gaps, left out of the medians).
THREE = [DATA / name for name in ("hello_hi.kpath", "bulk_1mib.kpath", "bulk_lossy.kpath")]
MEDIANS_SQL = """
    select trace, flow, direction, class, hop, count(*) filter (where not gap) as n,
           median(latency_ns) filter (where not gap) as median_ns,
           -- --stats' p99: the nearest rank
           list_sort(list(latency_ns) filter (where not gap))[
               greatest(ceil(0.99 * count(*) filter (where not gap))::bigint, 1)] as p99_ns,
           count(*) filter (where gap) as gaps
    from hops group by all order by all"""
# A row of --stats' "latency (us)" table: direction, class, hop, n, min, median, p99, max, gaps.
_STATS_ROW = re.compile(r"^  (client -> server|server -> client)  +(\w+) +(\S+) +(\d+) +"
                        r"(\S+) +(\S+) +(\S+) +(\S+) +(\d+)$")


def _kpath(*args: str) -> str:
    res = CliRunner().invoke(cli, list(args))
    assert res.exit_code == 0, res.output
    return res.stdout


Key = tuple[str, int, str, str, str]


def stats_medians(trace: Path) -> dict[Key, tuple[int, str, str, int]]:
    """(trace, flow, direction, class, hop) -> (n, median, p99 as shown, gaps)."""
    out: dict[Key, tuple[int, str, str, int]] = {}
    flow = 0
    for line in _kpath("replay", "--stats", str(trace)).splitlines():
        if m := re.match(r"^flow (\d+): ", line):
            flow = int(m.group(1))
        elif m := _STATS_ROW.match(line):
            direction, klass, hop, n, _, median, p99, _, gaps = m.groups()
            out[(str(trace), flow, direction, klass, hop)] = (int(n), median, p99, int(gaps))
    return out


def sql_medians(text: str) -> dict[Key, tuple[int, str, str, int]]:
    """MEDIANS_SQL's CSV as stats_medians has it: us with one decimal, "-"
    for a hop of gaps only."""
    got = {}
    for row in csv.DictReader(io.StringIO(text)):
        n = int(row["n"])
        shown = [f"{float(row[col]) / 1e3:.1f}" if n else "-" for col in ("median_ns", "p99_ns")]
        key = (row["trace"], int(row["flow"]), row["direction"], row["class"], row["hop"])
        got[key] = (n, shown[0], shown[1], int(row["gaps"]))
    return got


def test_duckdb_medians_over_three_traces_are_the_stats_medians() -> None:
    got = sql_medians(_kpath("query", *map(str, THREE), MEDIANS_SQL, "--format", "csv"))
    want = {}
    for trace in THREE:
        want.update(stats_medians(trace))
    assert {k[0] for k in got} == {str(t) for t in THREE}
    assert len(want) > 40
    # Gap counts are compared too (the lossy recording, re-made with frames,
    # keeps 26 events of ~1,500: none of its packets spans a loss).
    assert got == want


def test_count_of_events_is_the_traces_event_count() -> None:
    text = _kpath("query", *map(str, THREE),
                  "select trace, count(*) as n from events group by trace order by trace",
                  "--format", "json")
    counts = {row["trace"]: row["n"] for row in json.loads(text)}
    assert counts == {str(t): len(read_trace(t).events) for t in THREE}
    one = _kpath("query", str(THREE[0]), "select count(*) from events")
    assert one.splitlines()[1].strip() == str(len(read_trace(THREE[0]).events))


def test_export_tables_hold_the_timeline(tmp_path: Path) -> None:
    trace = DATA / "mixed.kpath"
    res = CliRunner().invoke(cli, ["export", str(trace), "-f", "parquet", "-o",
                                   str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.stderr
    tl = build_timeline(read_trace(trace))
    tables = {name: pq.read_table(tmp_path / "out" / f"{name}.parquet") for name in TABLES}
    for name, table in tables.items():
        assert table.schema == SCHEMAS[name], name
        assert pq.ParquetFile(tmp_path / "out" / f"{name}.parquet").metadata.row_group(0) \
            .column(0).compression == "ZSTD"
        assert set(table.column("trace").to_pylist()) == {str(trace)}
        assert set(table.column("host").to_pylist()) == {tl.trace.header.hostname}
        assert set(table.column("source").to_pylist()) == {0}
    ev = tables["events"]
    assert ev.column("index").to_pylist() == list(range(len(tl.events)))
    assert ev.column("ts_ns").to_pylist() == [te.ev.ts_ns for te in tl.events]
    assert ev.column("step").to_pylist() == [te.step for te in tl.events]
    assert ev.column("probe").to_pylist() == [te.ev.probe for te in tl.events]
    kinds = {st.id: str(st.kind) for st in tl.steps}
    assert sorted(tables["packets"].column("step").to_pylist()) == \
        [i for i, k in kinds.items() if k == "packet"]
    assert sorted(tables["messages"].column("step").to_pylist()) == \
        [i for i, k in kinds.items() if k == "message"]
    assert tables["flows"].column("title").to_pylist() == [fl.title for fl in tl.flows]
    # The export directory is a query input of its own: the same rows.
    sql = "select hop, count(*), sum(latency_ns) from hops group by hop order by hop"
    assert _kpath("query", str(tmp_path / "out"), sql) == _kpath("query", str(trace), sql)


def test_many_flows_number_as_replay(tmp_path: Path) -> None:
    """40 copies of a recording, each a connection of its own (62,440
    events): flows and steps are numbered as replay numbers them, and the
    medians are still those of --stats."""
    path = tmp_path / "many.kpath"
    write_synthetic(str(DATA / "bulk_1mib.kpath"), str(path), 40)
    got = sql_medians(_kpath("query", str(path), MEDIANS_SQL, "--format", "csv"))
    want = stats_medians(path)
    assert len({k[1] for k in want}) == 40
    assert got == want
    counts = _kpath("query", str(path), "select (select count(distinct step) from events), "
                    "(select max(step) + 1 from events), (select count(*) from flows), "
                    "(select count(distinct flow) from packets)", "--format", "csv")
    distinct, top, flows, pflows = counts.splitlines()[1].split(",")
    assert distinct == top and flows == pflows == "40"


@pytest.mark.parametrize(("args", "message"), [
    (["query", str(THREE[0]), "selec count(*) from events"], "Parser Error"),
    (["query", str(THREE[0]), "select nope from events"], "Binder Error"),
    (["query", str(DATA / "no-such.kpath"), "select 1"], "no such file"),
    (["query", str(DATA / "README.md"), "select 1"], "not a kpath trace"),
    (["query", str(DATA), "select 1"], "no parquet export"),
])
def test_query_errors_are_one_line(args: list[str], message: str) -> None:
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kpath: error: ") and message in lines[0]


def test_query_usage_errors() -> None:
    res = CliRunner().invoke(cli, ["query", "select 1"])
    assert res.exit_code == 2 and "at least one TRACE" in res.stderr
    res = CliRunner().invoke(cli, ["query", str(THREE[0]), str(THREE[1])])
    assert res.exit_code == 2 and "the last argument is the SQL" in res.stderr
    res = CliRunner().invoke(cli, ["export", str(THREE[0]), "-f", "parquet", "--flow", "1",
                                   "-o", "x"])
    assert res.exit_code == 2 and "drop --flow" in res.stderr
    helptext = _kpath("query", "--help")
    assert "select count(*) from events" in helptext and "docs/parquet.md" in helptext
