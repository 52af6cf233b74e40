"""A capture backend that replays a recorded trace instead of a kernel: the
test double of tracer/capture/base.py's Backend. It drives the session's
streaming loop (command gate, polling, losses, stop conditions, the trace
file) exactly as a kernel backend would, with recorded events."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from probes.catalog import ProbeSpec
from tracer.capture.base import Status
from tracer.events import Event, ProbeStatus
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
        self._sink: Callable[[Event], None] | None = None
        self._losses = [(rec.probe, rec.count) for rec in trace.lost]
        self.pids: list[int] = []
        self.closed = False

    def start(self, specs: Sequence[ProbeSpec], filters: Filters,
              status: Status) -> list[ProbeStatus]:
        recorded = {p.name: p for p in self._trace.header.probes}
        out = []
        for spec in specs:
            st = recorded.get(spec.name)
            out.append(st if st is not None else ProbeStatus(
                spec.name, str(spec.layer), str(spec.direction), attached=False,
                reason="absent", detail="not in the recording"))
        return out

    def trace_pid(self, pid: int) -> None:
        self.pids.append(pid)

    def open(self, sink: Callable[[Event], None]) -> None:
        self._sink = sink

    def poll(self, timeout_ms: int) -> None:
        assert self._sink is not None, "poll before open"
        end = min(self._next + self._per_poll, len(self._trace.events))
        for ev in self._trace.events[self._next:end]:
            self._sink(ev)
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
