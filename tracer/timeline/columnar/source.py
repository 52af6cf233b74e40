"""Where the statistics' input comes from: the events of a Trace as one
Arrow table of EVENT_SCHEMA."""

from __future__ import annotations

import pyarrow as pa

from tracer.events import events_to_batch
from tracer.timeline.columnar.stats import StatsInput
from tracer.tracefile import Trace


def stats_input_of(trace: Trace) -> StatsInput:
    """A reader that keeps a trace's events as columns (format v2: a
    `table` attribute) hands them over as they are; the v1 reader's Event
    objects are converted once."""
    table = getattr(trace, "table", None)
    if not isinstance(table, pa.Table):
        batch = events_to_batch(trace.events, [p.name for p in trace.header.probes])
        table = pa.Table.from_batches([batch])
    return StatsInput(path=trace.path, events=table, lost=trace.lost,
                      lost_total=trace.lost_total, cut_short=trace.cut_short)
