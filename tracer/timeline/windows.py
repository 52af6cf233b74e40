"""Independent windows of a trace: runs of consecutive events (in time order)
that the reconstruction can rebuild one at a time, with exactly the result
the whole trace gives, so that a big trace never holds more than one window
of objects.

A cut between two events is safe when nothing the reconstruction links
crosses it (tracer/timeline/flows.py, steps.py, viz/spans.py):
- a connection: every event of one normalized 4-tuple on one side (flows,
  sequence bases, packets in flight, netns scopes);
- a socket address: every event naming one sk (the sk map lends flows to
  events without addresses, earlier or later);
- a syscall: entry to return on its thread (events nested in a message);
- an entry and the return paired with it (pair_returns, the same rule);
- a lead-in and the next event of its execution context (it waits for it;
  one never followed becomes a step of its own alike at its window's end);
  a receive-side trailer and the previous event of its context (it joins it).
Lead-ins and trailers are taken by capture alone, a superset of what
make_steps treats as such: a cut it refuses is only a bigger window.
Everything else is per flow or per step, hence inside a window. A trace
with no safe cut is one window: the whole-trace reconstruction.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from probes.catalog import SOCK_ONLY_CAPTURES, Capture, Direction, Layer
from tracer.events import Context, Endpoint, Kind, batch_to_events
from tracer.timeline import TraceLosses, build_window
from tracer.timeline.event_rules import (
    context_key,
    dst_of,
    normalized_tuple,
    probe_spec,
    recorded_probes,
    src_of,
)
from tracer.timeline.model import Timeline, recorded_duration
from tracer.tracefile import Trace, probe_specs

WINDOW_EVENTS = 20_000  # objects for ~20 k events: a few tens of MB
_CHUNK = 10_000  # Event objects made at once by the analysis pass
_LEAD_INS = frozenset({Capture.SOFTIRQ, Capture.SOCK_SKB_CB_NOACK})
_TRAILERS = SOCK_ONLY_CAPTURES


@dataclass(frozen=True)
class Window:
    first: int  # index of its first event in the whole trace (time order)
    timeline: Timeline  # numbered from 0 / 1 within the window


class TraceClock:
    """What every piece of a trace rebuilt apart shares: the whole trace's
    start, duration and event times in time order."""

    def __init__(self, trace: Trace, stamps: np.ndarray) -> None:
        self.trace = trace
        self.stamps = stamps  # sorted
        self.num_events = len(stamps)
        firsts = ([int(stamps[0])] if len(stamps) else []) + [rec.ts_ns for rec in trace.lost]
        self.start_ns = min(firsts) if firsts else 0

    @property
    def duration_ns(self) -> int:
        recorded = recorded_duration(self.trace)
        if recorded:
            return recorded
        stamps = [rec.ts_ns for rec in self.trace.lost]
        if self.num_events:
            stamps.append(int(self.stamps[-1]))
        return max(stamps) - self.start_ns if stamps else 0

    @functools.cached_property
    def losses(self) -> TraceLosses:
        """The trace's loss records as every window's timeline holds them."""
        return TraceLosses.of(self.trace.lost, self.start_ns)

    def later_stamp(self, ts: int) -> int | None:
        at = int(np.searchsorted(self.stamps, ts, side="right"))
        return int(self.stamps[at]) if at < self.num_events else None


class Plan(TraceClock):
    """A trace in time order cut into independent windows."""

    def __init__(self, trace: Trace, target: int = WINDOW_EVENTS) -> None:
        table = trace.table
        ts = table.column("ts_ns").to_numpy()
        # The reconstruction orders by (ts, file position): a stable sort.
        order = np.argsort(ts, kind="stable")
        self.table = table if bool(np.all(order == np.arange(len(order)))) else table.take(order)
        super().__init__(trace, ts[order])
        with recorded_probes(probe_specs(trace.header.probes)):
            unsafe = self._unsafe_cuts()
        safe = np.flatnonzero(unsafe[1:self.num_events] == 0) + 1
        self.bounds: list[tuple[int, int]] = []
        pos = 0
        while pos < self.num_events:
            at = int(np.searchsorted(safe, pos + max(target, 1)))  # never an empty window
            end = int(safe[at]) if at < len(safe) else self.num_events
            self.bounds.append((pos, end))
            pos = end

    @property
    def largest(self) -> int:
        return max((b - a for a, b in self.bounds), default=0)

    def windows(self) -> Iterator[Window]:
        tr = self.trace
        for first, end in self.bounds:
            part = Trace.from_table(tr.header, self.table.slice(first, end - first), [],
                                    tr.trailer, tr.path, tr.cut_short)
            yield Window(first, build_window(part, self.start_ns, self.losses, self.later_stamp))

    def _unsafe_cuts(self) -> np.ndarray:
        """Per position c, how many links cross the cut before event c."""
        n = self.num_events
        spans: list[tuple[int, int]] = []  # (a, b): events a and b in one window
        tuple_span: dict[tuple[Endpoint, Endpoint], list[int]] = {}
        sk_span: dict[tuple[int, int], list[int]] = {}
        seen_tuples: dict[tuple[object, ...], tuple[Endpoint, Endpoint] | None] = {}
        last_in_ctx: dict[tuple[int, int, str, str | None], tuple[int, bool]] = {}
        open_pairs: dict[tuple[tuple[int, int, str, str | None], str], list[int]] = {}
        open_sys: dict[tuple[int, int], tuple[int, str]] = {}
        last_task: dict[tuple[int, int], int] = {}
        diff = np.zeros(n + 2, dtype=np.int64)

        def flush() -> None:
            # Into the counts as we go: a list of every link would cost more
            # than the events' columns.
            if spans:
                arr = np.array(spans, dtype=np.int64)
                np.add.at(diff, arr[:, 0] + 1, 1)
                np.add.at(diff, arr[:, 1] + 1, -1)
                spans.clear()
        # Entries of a probe never seen returning never pair: kept, they were
        # most of this pass's memory (one per entry-only event of the trace).
        kinds = self.table.column("kind").cast(pa.string())
        returning = set(pc.unique(self.table.column("probe").filter(
            pc.equal(kinds, str(Kind.RETURN)))).cast(pa.string()).to_pylist())
        del kinds
        for chunk_at in range(0, n, _CHUNK):
            events = batch_to_events(self.table.slice(chunk_at, _CHUNK))
            for pos, ev in enumerate(events, start=chunk_at):
                addrs = (ev.saddr, ev.sport, ev.daddr, ev.dport)
                if addrs not in seen_tuples:
                    seen_tuples[addrs] = normalized_tuple(src_of(ev), dst_of(ev))
                tup = seen_tuples[addrs]
                if tup is not None:
                    tuple_span.setdefault(tup, [pos, pos])[1] = pos
                if ev.sk:
                    sk_span.setdefault((ev.source, ev.sk), [pos, pos])[1] = pos
                spec = probe_spec(ev.probe)
                cap = spec.capture if spec is not None else None
                ck = context_key(ev)
                prev = last_in_ctx.get(ck)
                trailer = (cap in _TRAILERS and spec is not None
                           and spec.direction is Direction.RX)
                if prev is not None and (prev[1] or trailer):
                    spans.append((prev[0], pos))
                lead_in = ev.kind is not Kind.RETURN and (
                    cap in _LEAD_INS or (cap in _TRAILERS and spec is not None
                                         and spec.direction is Direction.TX))
                last_in_ctx[ck] = (pos, lead_in)
                slot = (ck, ev.probe)
                if ev.kind is Kind.ENTRY:
                    if ev.probe in returning:
                        open_pairs.setdefault(slot, []).append(pos)
                elif (waiting := open_pairs.get(slot)):
                    spans.append((waiting.pop(), pos))
                    if not waiting:
                        # A slot per thread and probe would stay for the
                        # whole trace: one per copy of a connection.
                        del open_pairs[slot]
                if ev.ctx is Context.TASK:
                    last_task[(ev.source, ev.tid)] = pos
                if spec is not None and spec.layer is Layer.SYSCALL and ev.ctx is Context.TASK:
                    cur = open_sys.pop((ev.source, ev.tid), None)
                    if cur is not None:
                        spans.append((cur[0], pos))
                    if ev.kind is Kind.ENTRY:
                        open_sys[(ev.source, ev.tid)] = (pos, ev.probe)
            del events
            flush()
        # A syscall never closed holds its thread's later task events. (A
        # lead-in still waiting at the end waits alike in its window: its
        # flow has no later event.)
        spans.extend((p, last_task[tid]) for tid, (p, _) in open_sys.items())
        spans.extend((a, b) for a, b in tuple_span.values())
        spans.extend((a, b) for a, b in sk_span.values())
        flush()
        return np.cumsum(diff)
