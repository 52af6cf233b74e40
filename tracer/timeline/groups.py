"""A trace rebuilt as objects in parts of independent groups of events, for
renderers that need the whole trace's numbers (replay --format json): the
groups of tracer/timeline/columnar/links.py (connections, sockets, threads,
entry/return pairs, lead-ins and trailers, and calls nesting other events),
which, unlike the windows of windows.py, may interleave in time: connections
that overlap throughout still fall apart.

Pass 1 reads the link columns and joins events into groups; pass 2 reads
the trace again and holds each event until its group is complete, then
rebuilds complete groups together, about PART_EVENTS events at a time
(build_window: offsets, losses and flow gaps of the whole trace). A part's
events are a subsequence of the whole trace's time order (time, then file
position), so each keeps its order; `Part.index` maps its local index to
the whole trace's. Its step ids and flow numbers are local: the whole
trace's are ranks (steps by their first event's index, flows by their
first own event's: Flow.first), known once every part is rebuilt.

A version 1 file (JSON Lines) bigger than V1_WHOLE_BYTES is first converted
to a version 2 file in a scratch directory (tracer/tracefile/convert.py,
batch by batch), so that its events are never all held: its parsed table
is about half the size of its text. A smaller one is read whole once.

A trace is refused (None: rebuilt whole by the caller) when it has a return
of a probe not known to return, or a context whose events are out of time
order across batches (columnar/parts.py: its neighbours are then not known
batch by batch).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from tracer.events import EVENT_SCHEMA, empty_frames
from tracer.timeline import build_window
from tracer.timeline.columnar.columns import batch_columns
from tracer.timeline.columnar.links import LINK_COLUMNS, Links
from tracer.timeline.event_rules import endpoint, ep_order, probe_spec, recorded_probes
from tracer.timeline.model import Timeline
from tracer.timeline.segments import forget_segments
from tracer.timeline.windows import TraceClock
from tracer.tracefile import Trace, probe_specs, read_trace, scan_trace
from tracer.tracefile.convert import scratch_copy
from tracer.tracefile.scan import V1_WHOLE_BYTES

PART_EVENTS = 20_000  # events rebuilt at once: objects of ~1.6 KB each
_SLICE = 4096  # events held (or released) at once in pass 2 (fewer for a small target)
_EMPTY = pa.Table.from_batches([], schema=EVENT_SCHEMA)


@dataclass(frozen=True)
class Part:
    index: np.ndarray  # per event of the timeline, its index in the whole trace
    timeline: Timeline  # numbered from 0 / 1 within the part
    number: int = 0  # the parts' order of completion (GroupPlan.parts(only=...))


class GroupPlan(TraceClock):
    """A trace's events joined into groups (pass 1 done); `parts()` is pass 2.
    `trace` has the whole trace's header, losses and trailer (its events only
    when the file is version 1: read whole, as its reader parses every line)."""

    def __init__(self, trace: Trace, batches: Callable[[], Iterable[pa.RecordBatch]],
                 links: Links, stamps: np.ndarray, target: int) -> None:
        self._batches = batches
        self._target = max(target, 1)
        self._slice = min(_SLICE, max(target, 16))
        # The whole trace's order: by time, then file position (a stable sort).
        if len(stamps) < 2 or bool((stamps[1:] >= stamps[:-1]).all()):
            self._rank: np.ndarray | None = None
            super().__init__(trace, stamps)
        else:
            order = np.argsort(stamps, kind="stable")
            super().__init__(trace, stamps[order])
            self._rank = np.empty(len(order), dtype=np.int64)
            self._rank[order] = np.arange(len(order))
            del order
        root, last = links.groups()
        self._nodes = links.nodes  # read again by each parts() (viz/exportgroups.py)
        sizes = np.zeros(len(root), dtype=np.int64)
        for nodes in self._nodes:
            sizes += np.bincount(root[nodes], minlength=len(root))
        self.largest = int(sizes.max()) if len(sizes) else 0
        del sizes
        self._root, self._last = root, last
        self.parts_made = 0
        # A version 1 file's version 2 copy, deleted with the plan.
        self.scratch: tempfile.TemporaryDirectory[str] | None = None
        # The trace's captured frames (FRAMES_SCHEMA), read again when asked.
        self.read_frames: Callable[[], pa.Table] = empty_frames

    def frames(self) -> pa.Table:
        """The trace's captured frames, `row` the event's row in the file."""
        return self.read_frames()

    def order_of(self, rows: np.ndarray) -> np.ndarray:
        """The index in the whole trace (Part.index) of the events at these
        rows of the file."""
        return rows if self._rank is None else self._rank[rows]

    def parts(self, only: Container[int] | None = None) -> Iterator[Part]:
        """The timelines of the parts, in the order their groups complete;
        `only`: just the parts of these numbers (Part.number: the same parts
        each time), the others are cut out but not rebuilt."""
        held: list[tuple[int, pa.RecordBatch, np.ndarray, np.ndarray]] = []
        at = count = 0
        self.parts_made = 0
        nodes = iter(self._nodes)
        for batch in self._batches():
            n = batch.num_rows
            if not n:
                continue
            last = self._last[self._root[next(nodes)]]
            for s in range(0, n, self._slice):
                piece_last = last[s:s + self._slice]
                size = len(piece_last)
                held.append((int(piece_last.min()), batch.slice(s, size),
                             np.arange(at + s, at + s + size, dtype=np.int64), piece_last))
                count += size
                if count >= self._target:
                    yield from self._part(held, at + s + size, only)
                    count = 0
            at += n
        if at != self.num_events:
            raise RuntimeError(f"{self.trace.path}: read {at} events, then {self.num_events}")
        yield from self._part(held, at + 1, only)

    def context_next(self, events: np.ndarray) -> dict[int, int]:
        """For these events (indices in the whole trace): the index of the
        next event of the same execution context (context_key) in the whole
        trace, where there is one. Reads the trace's context columns again."""
        nxt = self.context_following()[events]
        return {int(i): int(j) for i, j in zip(events.tolist(), nxt.tolist(), strict=True)
                if j >= 0}

    def context_following(self) -> np.ndarray:
        """Per event of the whole trace, the index of the next event of its
        execution context, or -1 (8 bytes an event)."""
        cols = ("source", "tid", "ctx", "softirq")
        table = pa.Table.from_batches([b.select(cols) for b in self._batches()],
                                      schema=pa.schema([EVENT_SCHEMA.field(c) for c in cols]))
        table = table.unify_dictionaries()

        key = np.zeros(table.num_rows, dtype=np.int64)
        for name, shift in (("source", 48), ("tid", 16), ("ctx", 8), ("softirq", 0)):
            col = table.column(name)
            if pa.types.is_dictionary(col.type):  # codes, + 1: null is -1
                col = pa.chunked_array([c.indices for c in col.chunks], col.type.index_type)
                key |= (col.fill_null(-1).to_numpy().astype(np.int64) + 1) << shift
            else:
                key |= col.to_numpy().astype(np.int64) << shift
        del table
        if self._rank is not None:
            in_order = np.empty_like(key)
            in_order[self._rank] = key
            key = in_order
        order = np.argsort(key, kind="stable")  # by context, then time order
        same = key[order[1:]] == key[order[:-1]]
        following = np.full(len(key), -1, dtype=np.int64)
        following[order[:-1][same]] = order[1:][same]
        del key, order, same
        return following

    def _part(self, held: list[tuple[int, pa.RecordBatch, np.ndarray, np.ndarray]],
              read: int, only: Container[int] | None) -> Iterator[Part]:
        """The part of the held events whose groups end before `read`; the
        rest stay held (in file order)."""
        ready: list[pa.RecordBatch] = []
        ready_pos: list[np.ndarray] = []
        rest: list[tuple[int, pa.RecordBatch, np.ndarray, np.ndarray]] = []
        for first_end, batch, pos, last in held:
            if first_end >= read:
                rest.append((first_end, batch, pos, last))
                continue
            done = last < read
            if done.all():
                ready.append(batch)
                ready_pos.append(pos)
                continue
            ready.append(batch.filter(pa.array(done)))
            ready_pos.append(pos[done])
            left = ~done
            rest.append((int(last[left].min()), batch.filter(pa.array(left)), pos[left],
                         last[left]))
        held[:] = rest
        if not ready:
            return
        number = self.parts_made
        self.parts_made += 1
        if only is not None and number not in only:
            return
        table = pa.Table.from_batches(ready, schema=EVENT_SCHEMA)
        pos = np.concatenate(ready_pos)
        del ready, ready_pos
        ts = table.column("ts_ns").to_numpy()
        if len(ts) > 1 and bool((ts[1:] < ts[:-1]).any()):
            order = np.argsort(ts, kind="stable")  # file order breaks ties
            table, pos = table.take(order), pos[order]
        # A part's connections are its own: the caches of the last part's
        # endpoints and segments would only hold memory (and grow part by part).
        forget_segments()
        endpoint.cache_clear()
        ep_order.cache_clear()
        tr = self.trace
        window = Trace.from_table(tr.header, table, [], tr.trailer, tr.path, tr.cut_short)
        index = pos if self._rank is None else self._rank[pos]
        yield Part(index, build_window(window, self.start_ns, self.losses, self.later_stamp),
                   number)


def plan_groups(path: str, target: int = PART_EVENTS,
                v1_whole_bytes: int = V1_WHOLE_BYTES) -> GroupPlan | None:
    """Pass 1 over a trace file (version 2: read twice, batch by batch;
    version 1: read whole once, or converted to version 2 when bigger than
    v1_whole_bytes); None when it must be rebuilt whole."""
    scan = scan_trace(path)
    if scan.version == 1 and Path(path).stat().st_size > v1_whole_bytes:
        scan.close()
        return _plan_converted(path, target)
    if scan.version == 2:
        def batches() -> Iterable[pa.RecordBatch]:
            with scan_trace(path) as again:
                yield from again
        first: Iterable[pa.RecordBatch] = scan
        whole: Trace | None = None
    else:
        scan.close()
        whole = read_trace(path)
        table = whole.table

        def batches() -> Iterable[pa.RecordBatch]:
            out: list[pa.RecordBatch] = table.to_batches()
            return out
        first = batches()
    with recorded_probes(probe_specs(scan.header.probes)):
        links = Links(probe_spec, nesting=True)
        stamps: list[np.ndarray] = []
        with scan:
            for batch in first:
                cols = batch_columns(batch, links.probe_code, LINK_COLUMNS)
                links.add(cols)
                stamps.append(cols["ts"])
    if any(not links.flags.pairs[p] for p in links.return_probes) or links.ctx_disorder:
        return None
    if whole is None:
        whole = Trace.from_table(scan.header, _EMPTY, scan.lost, scan.trailer, scan.path,
                                 scan.cut_short)
    ts = np.concatenate(stamps) if stamps else np.zeros(0, dtype=np.int64)
    del stamps
    plan = GroupPlan(whole, batches, links, ts, target)
    if scan.version == 2:
        def frames() -> pa.Table:
            with scan_trace(path) as again:
                for _ in again:
                    pass
                return again.frames
        plan.read_frames = frames
    elif whole.frames is not None:
        whole_frames = whole.frames
        plan.read_frames = lambda: whole_frames
    return plan



def _plan_converted(path: str, target: int) -> GroupPlan | None:
    """plan_groups of a version 1 file through a version 2 copy, kept in a
    scratch directory as long as the plan (read again by pass 2). The plan's
    trace is named and cut short as the original file."""
    copy = scratch_copy(path)
    try:
        plan = plan_groups(str(copy.path), target)
    except BaseException:
        copy.close()
        raise
    if plan is None:
        copy.close()
        return None
    tr = plan.trace
    plan.trace = Trace.from_table(tr.header, _EMPTY, tr.lost, tr.trailer, path,
                                  copy.converted.cut_short)
    plan.scratch = copy.directory
    return plan
