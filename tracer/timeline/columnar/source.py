"""Where the statistics' input comes from: a Trace read as objects (the v1
reader), converted once into one Arrow table of EVENT_SCHEMA."""

from __future__ import annotations

import pyarrow as pa

from tracer.events import events_to_batch
from tracer.timeline.columnar.stats import StatsInput
from tracer.tracefile import Trace


def stats_input_of(trace: Trace) -> StatsInput:
    batch = events_to_batch(trace.events, [p.name for p in trace.header.probes])
    return StatsInput(path=trace.path, events=pa.Table.from_batches([batch]), lost=trace.lost,
                      lost_total=trace.lost_total, cut_short=trace.cut_short)
