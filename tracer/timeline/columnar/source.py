"""Where the statistics' input comes from: the events of a Trace as Arrow
batches of EVENT_SCHEMA."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from tracer.events import Event, events_to_batch
from tracer.timeline.columnar.errors import Irregular
from tracer.timeline.columnar.stats import StatsInput
from tracer.tracefile import Trace

BATCH_EVENTS = 1 << 16


def stats_input_of(trace: Trace) -> StatsInput:
    """A reader that keeps a trace's events as columns (format v2: a
    `table` attribute) hands them over as they are; the v1 reader's Event
    objects are converted a batch at a time as the statistics read them, so
    that the caller may drop the Trace and its objects go once read."""
    table = getattr(trace, "table", None)
    events = table if isinstance(table, pa.Table) else _batches(
        trace.events, [p.name for p in trace.header.probes])
    return StatsInput(path=trace.path, events=events, lost=trace.lost,
                      lost_total=trace.lost_total, cut_short=trace.cut_short)


def _batches(events: list[Event], probe_names: list[str]) -> Iterator[pa.RecordBatch]:
    for at in range(0, len(events), BATCH_EVENTS):
        try:
            yield events_to_batch(events[at:at + BATCH_EVENTS], list(probe_names))
        except ValueError as exc:  # e.g. an IPv6 address: the columns hold IPv4
            raise Irregular(f"an event the columns cannot hold ({exc})") from None
