"""`kpath query`: SQL on embedded DuckDB over one or many traces, with the
tables of the Parquet export (viz/tables.py; columns in docs/parquet.md).

Each trace is exported to Parquet in a scratch directory (the same files
`kpath export -f parquet` writes, so a query sees exactly what an engine
reading the export sees) and each table becomes a view over every trace's
file; a directory already holding an export is read as it is. DuckDB reads
the files as it needs them: the traces are never all in memory at once, and
each trace is rebuilt in parts of independent groups of events as the
export does (windows of the whole trace where it cannot be split).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from tracer.timeline.groups import GroupPlan, plan_groups
from tracer.timeline.windows import Plan
from tracer.tracefile import TraceFormatError, read_trace
from viz.escape import json_safe, printable
from viz.parquet import write_parquet
from viz.tables import TABLES

OUTPUT_FORMATS = ("table", "csv", "json")
_FETCH_ROWS = 10_000


class QueryError(Exception):
    """One line: what went wrong with a trace or the SQL."""


@dataclass(frozen=True, slots=True)
class Result:
    columns: list[str]
    batches: Iterator[list[tuple[Any, ...]]]  # rows, a batch at a time


def is_export(path: Path) -> bool:
    """A directory written by `kpath export -f parquet`."""
    return path.is_dir() and all((path / f"{name}.parquet").is_file() for name in TABLES)


def prepare(inputs: Sequence[str], scratch: Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the views events, packets, hops, messages,
    flows over every input (a trace file or an export directory)."""
    dirs = []
    for i, name in enumerate(inputs):
        path = Path(name)
        if not path.exists():
            raise QueryError(f"no such file: {name}")
        if is_export(path):
            dirs.append(path)
            continue
        if path.is_dir():
            raise QueryError(f"{name} is a directory but no parquet export "
                             f"(no {', '.join(t + '.parquet' for t in TABLES)})")
        try:
            plan: Plan | GroupPlan | None = plan_groups(name)
            if plan is None:
                plan = Plan(read_trace(name))
        except TraceFormatError as exc:
            raise QueryError(str(exc)) from None
        out = scratch / str(i)
        write_parquet(plan, out, name)
        del plan
        dirs.append(out)
    con = duckdb.connect()
    for table in TABLES:
        con.read_parquet([str(d / f"{table}.parquet") for d in dirs]).create_view(table)
    return con


def run(con: duckdb.DuckDBPyConnection, sql: str) -> Result:
    try:
        con.execute(sql)
    except duckdb.Error as exc:
        raise QueryError(_one_line(exc)) from None
    columns = [d[0] for d in con.description] if con.description else []

    def batches() -> Iterator[list[tuple[Any, ...]]]:
        while True:
            try:
                rows = con.fetchmany(_FETCH_ROWS)
            except duckdb.Error as exc:
                raise QueryError(_one_line(exc)) from None
            if not rows:
                return
            yield rows
    return Result(columns, batches())


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return repr(value)
    return printable(str(value), None)


def write_table(result: Result, write: Callable[[str], object]) -> None:
    """Columns aligned, numbers to the right (the whole result is held to
    size the columns)."""
    rows = [r for batch in result.batches for r in batch]
    cells = [[_cell(v) for v in row] for row in rows]
    heads = [printable(c, None) for c in result.columns]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(heads)]
    numeric = [bool(rows) and all(isinstance(r[i], int | float) or r[i] is None for r in rows)
               for i in range(len(heads))]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    write(line(heads) + "\n")
    for r in cells:
        write(line(r) + "\n")
    write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")


def write_csv(result: Result, write: Callable[[str], object]) -> None:
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(result.columns)
    for batch in result.batches:
        out.writerows(["" if v is None else v for v in row] for row in batch)
        write(buf.getvalue())
        buf.seek(0)
        buf.truncate()
    write(buf.getvalue())


def write_json(result: Result, write: Callable[[str], object]) -> None:
    """One JSON array of objects, one per row (key order: the columns')."""
    first = True
    write("[")
    for batch in result.batches:
        for row in batch:
            obj = json_safe(dict(zip(result.columns, row, strict=True)))
            write(("\n " if first else ",\n ") + json.dumps(obj, default=_json_default))
            first = False
    write("\n]\n" if not first else "]\n")


def _json_default(value: Any) -> Any:
    """DuckDB's DECIMAL (a literal 1.5, avg of integers) as a JSON number;
    dates, times, UUIDs, blobs as text."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


WRITERS: dict[str, Callable[[Result, Callable[[str], object]], None]] = {
    "table": write_table, "csv": write_csv, "json": write_json}
