"""CLI: `query`, SQL over traces on embedded DuckDB (viz/query.py).
Errors are one line on stderr: exit 2 for a bad invocation, 1 when a trace
or the SQL fails."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from kpath.console import stdout_failed


def _out(text: str) -> None:
    try:
        sys.stdout.write(text)
    except OSError as exc:
        stdout_failed(exc)


def _is_path(text: str) -> bool:
    """Whether the last argument names a file (the SQL was forgotten)."""
    try:
        return "\n" not in text and Path(text).exists()
    except OSError:  # a long SQL text is too long a name
        return False


@click.command("query")
@click.argument("args", nargs=-1, required=True, metavar="TRACE... SQL")
@click.option("--format", "out_format", type=click.Choice(["table", "csv", "json"]),
              default="table", show_default=True,
              help="table: aligned columns; csv: with a header line; json: one array of "
                   "objects.")
def query_cmd(args: tuple[str, ...], out_format: str) -> None:
    """Run SQL (DuckDB's dialect) over one or many traces. The tables are
    those of `kpath export -f parquet` (columns: docs/parquet.md): events,
    packets, hops (per packet and hop, latency_ns), messages, flows; every
    row has `trace` (the file it came from), `source` and `host`. A
    directory written by `kpath export -f parquet` is read as a trace.

    \b
    Examples:
      kpath query chat.kpath "select count(*) from events"
      kpath query a.kpath b.kpath c.kpath \\
        "select trace, hop, median(latency_ns) / 1e3 as median_us
         from hops where not gap group by all order by all"
      kpath query bulk.kpath --format csv \\
        "select step, label, payload from packets where class = 'data'"
      kpath query exports/*/ "select host, count(*) from flows group by host"
    """
    from viz.query import WRITERS, QueryError, prepare, run

    if len(args) < 2:
        click.echo("kpath: error: query wants at least one TRACE and then the SQL "
                   "(kpath query chat.kpath \"select count(*) from events\")", err=True)
        sys.exit(2)
    *traces, sql = args
    if _is_path(sql):
        click.echo(f"kpath: error: the last argument is the SQL, got the file {sql!r}",
                   err=True)
        sys.exit(2)
    try:
        with tempfile.TemporaryDirectory(prefix="kpath-query-") as scratch:
            con = prepare(traces, Path(scratch))
            try:
                WRITERS[out_format](run(con, sql), _out)
            finally:
                con.close()
    except QueryError as exc:
        click.echo(f"kpath: error: {exc}", err=True)
        sys.exit(1)
    try:
        sys.stdout.flush()
    except OSError as exc:
        stdout_failed(exc)
