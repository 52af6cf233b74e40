"""A capture backend that replays a recorded trace instead of a kernel: the
test double of tracer/capture/base.py's Backend. It drives the session's
streaming loop (command gate, polling, losses, stop conditions, the trace
file) exactly as a kernel backend would, with recorded events, delivered
as batches like the kernel backends deliver them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from probes.catalog import ProbeSpec
from tracer.capture.base import Status
from tracer.capture.record import BlindWindow
from tracer.events import EVENT_SCHEMA, ProbeStatus, dict_column
from tracer.filters import Filters
from tracer.tracefile import Trace


class ReplayBackend:
    """Hands a trace's events over `per_poll` at a time, with its losses."""

    name = "replay"
    buffer = "ringbuf"

    def __init__(self, trace: Trace, per_poll: int = 64) -> None:
        self._trace = trace
        self._table = trace.table
        self._per_poll = per_poll
        self._next = 0
        self._sink: Callable[[pa.RecordBatch], None] | None = None
        self._names: list[str] = []
        self._losses = [(rec.probe, rec.count) for rec in trace.lost]
        self.pids: list[int] = []
        self.closed = False

    def start(self, specs: Sequence[ProbeSpec], filters: Filters,
              status: Status) -> list[ProbeStatus]:
        recorded = {p.name: p for p in self._trace.header.probes}
        out: list[ProbeStatus] = []
        for spec in specs:
            st = recorded.get(spec.name)
            out.append(st if st is not None else ProbeStatus(
                spec.name, str(spec.layer), str(spec.direction), attached=False,
                reason="absent", detail="not in the recording"))
        self._names = [st.name for st in out]
        return out

    def trace_pid(self, pid: int) -> None:
        self.pids.append(pid)

    def open(self, sink: Callable[[pa.RecordBatch], None],
             rehearse: Callable[[pa.RecordBatch], None] | None = None) -> None:
        self._sink = sink

    def poll(self, timeout_ms: int) -> None:
        assert self._sink is not None, "poll before open"
        end = min(self._next + self._per_poll, self._table.num_rows)
        if end > self._next:
            part = self._table.slice(self._next, end - self._next).combine_chunks()
            self._sink(self._reindex(part.to_batches()[0]))
        self._next = end

    def _reindex(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The recording's probe column, as indexes into this session's
        probe dictionary (the statuses start() returned)."""
        probe = batch.column("probe")
        recorded = probe.dictionary.to_pylist()
        unknown = sorted(set(recorded) - set(self._names))
        if unknown:
            raise ValueError("recorded events name probes the session did not request: "
                             + ", ".join(unknown))
        where = {name: i for i, name in enumerate(self._names)}
        remap = np.array([where[name] for name in recorded], np.int64)
        codes = remap[probe.indices.to_numpy(zero_copy_only=False)]
        cols = [dict_column(codes, self._names, pa.uint16()) if f.name == "probe"
                else batch.column(f.name) for f in EVENT_SCHEMA]
        return pa.record_batch(cols, schema=EVENT_SCHEMA)

    def drain(self) -> None:
        self._per_poll = self._table.num_rows
        self.poll(0)

    def new_blind_windows(self) -> list[BlindWindow]:
        return []  # a recording's windows are among its loss records

    def new_losses(self) -> list[tuple[str | None, int]]:
        # Reported once the events before them have been handed over.
        if self._next < self._table.num_rows:
            return []
        out, self._losses = self._losses, []
        return out

    def close(self) -> None:
        self.closed = True
