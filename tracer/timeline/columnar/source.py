"""Where the statistics' input comes from: the events of a trace as Arrow
batches of EVENT_SCHEMA, either a Trace read whole or a file scanned batch
by batch (the records about the events, losses and a cut, are then known
only once the batches are read)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa

from tracer.timeline.columnar.stats import StatsInput
from tracer.tracefile import Source, Trace, TraceScan
from tracer.tracefile.loss_columns import LossColumns


def stats_input_of(trace: Trace) -> StatsInput:
    """A trace's events as the statistics read them: its columns, as the
    reader holds them (both format versions are read into EVENT_SCHEMA)."""
    return StatsInput(path=trace.path, events=trace.table, lost=LossColumns.of_rows(trace.lost),
                      lost_total=trace.lost_total, cut_short=trace.cut_short,
                      sources=trace.header.sources)


class ScannedInput:
    """A scanned trace as the statistics read it: one batch at a time, so
    that no more than a batch of the file's columns is held at once. The
    records (lost, lost_total, cut_short) are read after the events, as
    PreparedStats does."""

    def __init__(self, scan: TraceScan) -> None:
        self._scan = scan
        self.path = scan.path

    @property
    def events(self) -> Iterator[pa.RecordBatch]:
        return iter(self._scan)

    @property
    def lost(self) -> LossColumns:
        return self._scan.loss_columns

    @property
    def lost_total(self) -> int:
        trailer = self._scan.trailer
        # As Trace.lost_total: the trailer's count, else the records' sum.
        return trailer.lost if trailer is not None else self.lost.total

    @property
    def cut_short(self) -> str | None:
        return self._scan.cut_short

    @property
    def sources(self) -> Sequence[Source]:
        return self._scan.header.sources
