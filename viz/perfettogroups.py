"""`export -f perfetto` of a trace rebuilt in parts of independent groups
(tracer/timeline/groups.py): the bytes of write_perfetto (whole trace, every
event) with one part of objects at a time.

What the document takes from the whole trace, and where it comes from here:
- event indices: a part's are the whole trace's at once (Part.index);
- step ids and flow numbers (slice args, arrow names): ranks known after
  the last part (viz/runs.py Numbers), so a part's records wait in
  temporary files with its local ids and are renumbered as they are merged;
- the order of records: slices by (time, pid, tid, event), CPU instants by
  (CPU, event), arrows by step: each part's records are a run in that order
  among them (its events keep the whole trace's order), merged;
- thread ids: a synthetic one per context in the order contexts first show
  up, so the tracks are made at the end from each context's first event;
  process names from each process's first event and its main thread's last;
- a call's end: the next event of its context in the whole trace
  (GroupPlan.context_following), not the next one in the part;
- nesting on a track (clipping): a context other than a task's spans parts,
  so it is done as the merged slices are written, one instant at a time
  (the slices of one time, longest first, as _nest sorts them).
What stays in memory for the whole trace: 8 bytes an event (the next event
of its context) and a few integers per step and flow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from tracer.events import Event
from tracer.timeline import Packet, Timeline, context_key
from tracer.timeline.groups import GroupPlan
from viz.escape import printable
from viz.perfetto import (
    _RECORDS_AT_ONCE,
    Track,
    _tracks,
    _us,
    cpu_event,
    cpu_records,
    encode_json,
    flow_point,
    metadata,
    nest_one,
    other_data,
    packet_arrows,
    process_name,
    shown_events,
    slice_records,
)
from viz.runs import Numbers, Runs, merge
from viz.select import Bound, Selection, select

_Ctx = tuple[int, int, str, str | None]  # context_key
# A part's point of an arrow: (phase, its slice's context, time in us).
_Point = tuple[str, _Ctx, float]


class _Procs:
    """Per process, its name as _metadata takes it: from its main thread's
    last event, else from its first event (indices in the whole trace)."""

    def __init__(self) -> None:
        self.first: dict[int, tuple[int, Event]] = {}
        self.own: dict[int, tuple[int, Event]] = {}

    def note(self, ev: Event, at: int) -> None:
        have = self.first.get(ev.tgid)
        if have is None or at < have[0]:
            self.first[ev.tgid] = (at, ev)
        if ev.tid == ev.tgid:
            own = self.own.get(ev.tgid)
            if own is None or at > own[0]:
                self.own[ev.tgid] = (at, ev)

    def names(self) -> dict[int, str]:
        return {pid: process_name((self.own.get(pid) or first)[1])
                for pid, first in self.first.items()}


def write_perfetto_groups(plan: GroupPlan, write: Callable[[str], object],
                          window: tuple[int, int] | None = None) -> int:
    """The document of the whole trace, or of the events of `window`
    (--from/--to: event indices, inclusive); the number of flow steps drawn."""
    following = plan.context_following()
    slices, cpus, arrows = Runs(), Runs(), Runs()
    numbers = Numbers()
    firsts: dict[_Ctx, tuple[int, Event]] = {}  # context -> its first event drawn
    procs = _Procs()
    cpu_set: set[int] = set()
    drawn = 0
    sel = Selection(fold=False, cap=False)
    try:
        for part in plan.parts():
            tl, index = part.timeline, part.index.tolist()
            tl.context_next = _local_following(part.index, following)
            numbers.note(tl, tl.steps, index)
            local = sel
            if window is not None:
                # The window's events in the part: a run of its local indices.
                lo, hi = np.searchsorted(part.index, window[0]), \
                    np.searchsorted(part.index, window[1], side="right") - 1
                local = replace(sel, start=Bound(event=int(lo)), end=Bound(event=int(hi)))
            if window is None or lo <= hi:
                view = select(tl, local)
                assert not view.notices  # nothing folded, capped or cut
                drawn += len(view.drawn_steps)
                chosen, events = shown_events(tl, view)
            else:
                chosen, events = set(), []
            at_us = {te.index: _us(te.ev.ts_ns - tl.start_ns) for te in events}
            ctx_of: dict[int, _Ctx] = {}
            for te in events:
                ev, at = te.ev, index[te.index]
                key = ctx_of[te.index] = context_key(ev)
                if key not in firsts or at < firsts[key][0]:
                    firsts[key] = (at, ev)
                procs.note(ev, at)
                cpu_set.add(ev.cpu)
            has_slice: set[int] = set()
            for te, sl in slice_records(tl, events, at_us):
                at = index[te.index]
                sl["args"]["event"] = at
                has_slice.add(te.index)
                slices.put((sl["ts"], at, ctx_of[te.index], sl))
            slices.end_run()
            cpus.add(cpu_event(te, index[te.index], at_us[te.index])
                     for te in sorted(events, key=lambda te: te.ev.cpu))
            arrows.add(_part_arrows(tl, has_slice, chosen, at_us))
            del tl, part, events, at_us, has_slice, chosen, ctx_of
        step_id, flow_no = numbers.ranks()
        del numbers, following
        tracks = _tracks(ev for _, ev in sorted(firsts.values(), key=lambda f: f[0]))
        out = _Writer(write)
        out.extend(metadata(procs.names(), tracks.values(), cpu_set))
        out.extend(_nested(merge(slices, lambda rec, p: (rec[0], rec[1]),
                                 lambda rec, p: _renumber(rec, step_id[p], flow_no[p])),
                           tracks))
        out.extend(cpu_records(merge(cpus, lambda rec, p: (rec[0], rec[1]),
                                     lambda rec, p: rec)))
        out.extend(_arrows(merge(arrows, lambda rec, p: int(step_id[p][rec[0]]),
                                 lambda rec, p: (rec, step_id[p])), tracks))
        out.close()
    finally:
        for runs in (slices, cpus, arrows):
            runs.close()
    write("]," + encode_json({"displayTimeUnit": "ns",
                              "otherData": other_data(plan.trace, plan.start_ns, [])})[1:]
          + "\n")
    return drawn


def _local_following(index: np.ndarray, following: np.ndarray) -> dict[int, int]:
    """A part's events (by local index) whose context's next event in the
    whole trace is in the part too -> that event's local index."""
    if not len(index):
        return {}
    nxt = following[index]
    pos = np.minimum(np.searchsorted(index, nxt), len(index) - 1)
    ok = (nxt >= 0) & (index[pos] == nxt)
    return dict(zip(np.flatnonzero(ok).tolist(), pos[ok].tolist(), strict=True))


def _renumber(rec: tuple[float, int, _Ctx, dict[str, Any]], step: np.ndarray,
              flow: np.ndarray) -> tuple[float, int, _Ctx, dict[str, Any]]:
    args = rec[3]["args"]
    args["step"] = int(step[args["step"]])
    if "flow" in args:
        args["flow"] = int(flow[args["flow"] - 1])
    return rec


def _nested(slices: Iterable[tuple[float, int, _Ctx, dict[str, Any]]],
            tracks: dict[_Ctx, Track]) -> Iterator[dict[str, Any]]:
    """The slices (by time, then event) on their tracks, clipped as _nest
    clips them, in the document's order: by time, pid, tid, then event."""
    stacks: dict[tuple[int, int], list[float]] = {}
    group: list[dict[str, Any]] = []  # the slices of one time, by event
    ts: float | None = None
    for at, _, key, sl in slices:
        if group and at != ts:
            yield from _settle(group, stacks)
            group = []
        ts = at
        tr = tracks[key]
        sl["pid"], sl["tid"] = tr.pid, tr.tid
        group.append(sl)
    yield from _settle(group, stacks)


def _settle(group: list[dict[str, Any]],
            stacks: dict[tuple[int, int], list[float]]) -> list[dict[str, Any]]:
    if len(group) == 1:  # most times have one slice
        sl = group[0]
        nest_one(stacks.setdefault((sl["pid"], sl["tid"]), []), sl)
        return group
    by_track: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for sl in group:
        by_track.setdefault((sl["pid"], sl["tid"]), []).append(sl)
    for track, sls in by_track.items():
        stack = stacks.setdefault(track, [])
        for sl in sorted(sls, key=lambda s: -s["dur"]):
            nest_one(stack, sl)
    return sorted(group, key=lambda s: (s["pid"], s["tid"]))


def _part_arrows(tl: Timeline, has_slice: set[int], chosen: set[int],
                 at_us: dict[int, float]) -> Iterator[tuple[int, str, list[Any]]]:
    """Per packet with arrows, in step order: (local id, title, arrows as
    (local id of the reader or None, category, points))."""
    for st in tl.steps:
        if st.id not in chosen or not isinstance(st, Packet):
            continue
        found = packet_arrows(tl, st, has_slice, chosen)
        if not found:
            continue
        out = []
        for mid, cat, points in found:
            pts: list[_Point] = []
            for ph, te in points:
                bound = te.index if te.index in has_slice else te.pair or te.index
                pts.append((ph, context_key(tl.events[bound].ev), at_us[te.index]))
            out.append((mid, cat, pts))
        yield st.id, printable(st.title), out


def _arrows(packets: Iterable[tuple[tuple[int, str, list[Any]], np.ndarray]],
            tracks: dict[_Ctx, Track]) -> Iterator[dict[str, Any]]:
    flow_id = 0
    for (local, title, found), step in packets:
        sid = int(step[local])
        for mid, cat, points in found:
            flow_id += 1
            name = f"#{sid} {title}" if mid is None else f"#{sid} read by #{int(step[mid])}"
            for ph, key, ts in points:
                tr = tracks[key]
                yield flow_point(ph, flow_id, name, cat, tr.pid, tr.tid, ts)


class _Writer:
    """Records written as write_perfetto writes them, a piece at a time."""

    def __init__(self, write: Callable[[str], object]) -> None:
        self._write = write
        self._held: list[dict[str, Any]] = []
        self._first = True
        write('{"traceEvents":[')

    def extend(self, records: Iterable[dict[str, Any]]) -> None:
        for rec in records:
            self._held.append(rec)
            if len(self._held) == _RECORDS_AT_ONCE:
                self._flush()

    def _flush(self) -> None:
        if self._held:
            text = encode_json(self._held)[1:-1]
            self._write(text if self._first else "," + text)
            self._first = False
            self._held = []

    def close(self) -> None:
        self._flush()
