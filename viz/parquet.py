"""`kpath export -f parquet`: a trace's five tables (viz/tables.py) as one
Parquet file each (zstd) in a directory, written window by window (a Plan)
or table by table (a GroupPlan: rebuilt in parts of groups). Columns:
docs/parquet.md."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from tracer.timeline.event_rules import recorded_probes
from tracer.timeline.groups import GroupPlan
from tracer.timeline.windows import Plan
from tracer.tracefile import probe_specs
from viz.tables import SCHEMAS, TABLES, group_table_batches, table_batches

COMPRESSION = "zstd"


@dataclass(frozen=True, slots=True)
class Written:
    directory: Path
    rows: dict[str, int]  # per table


def write_parquet(plan: Plan | GroupPlan, directory: str | os.PathLike[str],
                  trace_name: str) -> Written:
    """DIR/events.parquet, packets, hops, messages, flows. Each file appears
    only once complete (written as a hidden .part, then renamed): a failed
    export leaves none of its files half-written."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    parts = {name: out / f".{name}.parquet.{os.getpid()}.part" for name in TABLES}
    rows = dict.fromkeys(TABLES, 0)
    writers = {}
    try:
        for name in TABLES:
            writers[name] = pq.ParquetWriter(parts[name], SCHEMAS[name],
                                             compression=COMPRESSION)
        # Renderers' probe facts (layers, details) by the trace's own dictionary.
        with recorded_probes(probe_specs(plan.trace.header.probes)):
            made = (group_table_batches(plan, trace_name) if isinstance(plan, GroupPlan)
                    else table_batches(plan, trace_name))
            for batches in made:
                for name, batch in batches.items():
                    if batch.num_rows:
                        writers[name].write_batch(batch)
                        rows[name] += batch.num_rows
        for w in writers.values():
            w.close()
        for name in TABLES:
            os.replace(parts[name], out / f"{name}.parquet")
    finally:
        for w in writers.values():
            w.close()  # a second close is a no-op
        for part in parts.values():
            part.unlink(missing_ok=True)
    return Written(out, rows)
