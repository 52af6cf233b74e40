"""Where the statistics' input comes from: the events of a Trace as Arrow
batches of EVENT_SCHEMA."""

from __future__ import annotations

from tracer.timeline.columnar.stats import StatsInput
from tracer.tracefile import Trace


def stats_input_of(trace: Trace) -> StatsInput:
    """A trace's events as the statistics read them: its columns, as the
    reader holds them (both format versions are read into EVENT_SCHEMA)."""
    return StatsInput(path=trace.path, events=trace.table, lost=trace.lost,
                      lost_total=trace.lost_total, cut_short=trace.cut_short)
