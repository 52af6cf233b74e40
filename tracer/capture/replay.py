"""A capture backend that replays a recorded trace instead of a kernel: the
test double of tracer/capture/base.py's Backend. It drives the session's
streaming loop (command gate, polling, losses, stop conditions, the trace
file) exactly as a kernel backend would, with recorded events, delivered
as batches like the kernel backends deliver them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyarrow as pa

from probes.catalog import ProbeSpec
from tracer.capture.base import Status
from tracer.events import ProbeStatus, events_to_batch
from tracer.filters import Filters
from tracer.tracefile import Trace


class ReplayBackend:
    """Hands a trace's events over `per_poll` at a time, with its losses."""

    name = "replay"
    buffer = "ringbuf"

    def __init__(self, trace: Trace, per_poll: int = 64) -> None:
        self._trace = trace
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

    def open(self, sink: Callable[[pa.RecordBatch], None]) -> None:
        self._sink = sink

    def poll(self, timeout_ms: int) -> None:
        assert self._sink is not None, "poll before open"
        end = min(self._next + self._per_poll, len(self._trace.events))
        if end > self._next:
            names = list(self._names)
            batch = events_to_batch(self._trace.events[self._next:end], names)
            if len(names) != len(self._names):
                raise ValueError("recorded events name probes the session did not request: "
                                 + ", ".join(names[len(self._names):]))
            self._sink(batch)
        self._next = end

    def drain(self) -> None:
        self._per_poll = len(self._trace.events)
        self.poll(0)

    def new_losses(self) -> list[tuple[str | None, int]]:
        # Reported once the events before them have been handed over.
        if self._next < len(self._trace.events):
            return []
        out, self._losses = self._losses, []
        return out

    def close(self) -> None:
        self.closed = True
