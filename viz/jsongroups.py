"""`replay --format json` of a trace rebuilt in parts of independent groups
(tracer/timeline/groups.py): the bytes of render_json (whole trace, no flow
filter) with one part of objects at a time.

The document lists flows, then steps by id, then events by index; a part's
records have the whole trace's event indices at once, but the whole trace's
step ids and flow numbers are ranks known only after the last part (steps by
their first event's index, flows by their first own event's). So each
part's records wait in a temporary file with its local ids, as runs in its
local order, which is the whole trace's order among them; at the end the
runs are merged (heapq.merge) and their ids rewritten as they are written.
What stays in memory for the whole trace is a few integers per step and flow.
"""

from __future__ import annotations

import heapq
import pickle
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from tracer.timeline import lost_gaps
from tracer.timeline.groups import GroupPlan
from viz.escape import json_safe
from viz.jsonout import (
    _Array,
    _flow,
    _gap,
    _records,
    _selected_steps,
    _trace_fields,
    _write_head,
    item_text,
    step_record,
)

_BLOCK = 256  # records pickled together in a run


class _Runs:
    """Runs of records in one temporary file, each read back in order."""

    def __init__(self) -> None:
        self.file: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.runs: list[tuple[int, int]] = []  # (offset, blocks)
        self._block: list[Any] = []
        self._start = self._blocks = 0

    def put(self, record: Any) -> None:
        """A record of the run being written (end_run closes it)."""
        self._block.append(record)
        if len(self._block) == _BLOCK:
            self._flush()

    def _flush(self) -> None:
        if self._block:
            pickle.dump(self._block, self.file, protocol=pickle.HIGHEST_PROTOCOL)
            self._block = []
            self._blocks += 1

    def end_run(self) -> None:
        self._flush()
        self.runs.append((self._start, self._blocks))
        self._start, self._blocks = self.file.tell(), 0

    def add(self, records: Iterable[Any]) -> None:
        for rec in records:
            self.put(rec)
        self.end_run()

    def read(self, run: int) -> Iterator[Any]:
        offset, blocks = self.runs[run]
        for _ in range(blocks):
            self.file.seek(offset)
            block = pickle.load(self.file)
            offset = self.file.tell()
            yield from block

    def close(self) -> None:
        self.file.close()


@dataclass
class _Numbers:
    """Per part, the whole-trace index of each local step's first event (by
    local id) and of each local flow's first own event (by local number)."""

    steps: list[np.ndarray] = field(default_factory=list)
    flows: list[np.ndarray] = field(default_factory=list)

    def ranks(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per part, local step id -> step id and local flow number - 1 ->
        flow number: ranks among all parts'."""
        return _ranks(self.steps, 0), _ranks(self.flows, 1)


def _ranks(firsts: list[np.ndarray], base: int) -> list[np.ndarray]:
    every = np.concatenate(firsts) if firsts else np.zeros(0, dtype=np.int64)
    rank = np.empty(len(every), dtype=np.int64)
    rank[np.argsort(every, kind="stable")] = np.arange(base, base + len(every))
    out, at = [], 0
    for part in firsts:
        out.append(rank[at:at + len(part)])
        at += len(part)
    return out


def write_json_groups(plan: GroupPlan, write: Callable[[str], object]) -> None:
    trace = plan.trace
    _write_head(write, _trace_fields(trace, plan.start_ns, plan.duration_ns, plan.num_events),
                None)
    flows, steps, events = _Runs(), _Runs(), _Runs()
    numbers = _Numbers()
    # per part and thread: (source, tid, tgid, comm, its first step's start, local ids)
    threads: list[list[tuple[int, int, int, str, int, list[int]]]] = []
    try:
        for part in plan.parts():
            tl, index = part.timeline, part.index.tolist()
            numbers.flows.append(np.array([index[fl.first] for fl in tl.flows], dtype=np.int64))
            flows.add(_flow(fl, tl) for fl in tl.flows)
            _, chosen = _selected_steps(tl, None)
            numbers.steps.append(np.array([index[st.events[0].index] for st in chosen],
                                          dtype=np.int64))
            steps.add(_global_events(step_record(st, tl), index) for st in chosen)
            # Events are most records: spooled laid out, their step and flow
            # rewritten in the text (_EVENT_IDS).
            for rec in _records(tl, None, chosen):
                rec["index"] = index[rec["index"]]
                if rec["pair"] is not None:
                    rec["pair"] = index[rec["pair"]]
                events.put((rec["index"], item_text(rec)))
            events.end_run()
            threads.append([(g.source, g.tid, g.tgid, g.comm, g.steps[0].start_ns,
                             [st.id for st in g.steps]) for g in tl.unattributed])
            del tl, part, chosen
        step_id, flow_no = numbers.ranks()
        del numbers

        out = _Array(write, "flows")
        for rec in _merge(flows, lambda rec, p: int(flow_no[p][rec["number"] - 1]),
                          lambda rec, p: _renumber_flow(rec, step_id[p], flow_no[p])):
            out.add(rec)
        out.close()
        out = _Array(write, "steps")
        for rec in _merge(steps, lambda rec, p: int(step_id[p][rec["id"]]),
                          lambda rec, p: _renumber_step(rec, step_id[p], flow_no[p])):
            out.add(rec)
        out.close()
        out = _Array(write, "events")
        for text in _merge(events, lambda rec, p: rec[0],
                           lambda rec, p: _renumber_event(rec[1], step_id[p], flow_no[p])):
            out.add_text(text)
        out.close()
    finally:
        for runs in (flows, steps, events):
            runs.close()
    out = _Array(write, "gaps")
    for g in lost_gaps(trace.lost, plan.start_ns):
        out.add(_gap(g))
    out.close()
    # As group_steps orders them: by first step's start, then first step
    # (its first seen); a thread's steps in id order.
    by_thread: dict[tuple[int, int], tuple[int, int, int, str, list[int]]] = {}
    for p, groups in enumerate(threads):
        for source, tid, tgid, comm, start, ids in groups:
            glob = [int(step_id[p][i]) for i in ids]
            have = by_thread.get((source, tid))
            if have is None or glob[0] < have[1]:
                by_thread[(source, tid)] = (start, glob[0], tgid, comm,
                                            glob + (have[4] if have is not None else []))
            else:
                have[4].extend(glob)
    out = _Array(write, "unattributed")
    for (_, tid), (_, _, tgid, comm, ids) in sorted(by_thread.items(), key=lambda kv: kv[1][:2]):
        out.add({"tid": tid, "tgid": tgid, "comm": json_safe(comm), "steps": sorted(ids)})
    out.close(last=True)
    write("}\n")


def _merge(runs: _Runs, key: Callable[[Any, int], int],
           renumber: Callable[[Any, int], Any]) -> Iterator[Any]:
    """The records of every run in `key` order (each run is in that order),
    renumbered."""
    def run(p: int) -> Iterator[tuple[int, int, Any]]:
        for rec in runs.read(p):
            yield key(rec, p), p, rec
    # Keys are unique: tuples compare by key alone.
    for _, p, rec in heapq.merge(*(run(p) for p in range(len(runs.runs)))):
        yield renumber(rec, p)


def _global_events(rec: dict[str, Any], index: list[int]) -> dict[str, Any]:
    rec["events"] = [index[i] for i in rec["events"]]
    pkt = rec["packet"]
    if pkt is not None:
        pkt["tx_events"] = [index[i] for i in pkt["tx_events"]]
        pkt["rx_events"] = [index[i] for i in pkt["rx_events"]]
    return rec


def _renumber_flow(rec: dict[str, Any], step: np.ndarray, flow: np.ndarray) -> dict[str, Any]:
    rec["number"] = int(flow[rec["number"] - 1])
    rec["steps"] = step[rec["steps"]].tolist()
    return rec


def _renumber_step(rec: dict[str, Any], step: np.ndarray, flow: np.ndarray) -> dict[str, Any]:
    rec["id"] = int(step[rec["id"]])
    if rec["flow"] is not None:
        rec["flow"] = int(flow[rec["flow"] - 1])
    msg = rec["message"]
    if msg is not None:
        for key in ("packets", "handled", "data_from"):
            msg[key] = step[msg[key]].tolist()
        for link in msg["carried_by"]:
            link["packet"] = int(step[link["packet"]])
    pkt = rec["packet"]
    if pkt is not None:
        if pkt["sent_by"] is not None:
            pkt["sent_by"] = int(step[pkt["sent_by"]])
        pkt["read_by"] = step[pkt["read_by"]].tolist()
        for link in pkt["written_by"]:
            link["message"] = int(step[link["message"]])
    return rec


# An event record's own "flow" and "step" (item_text: its keys are indented
# by 3, nested ones by more; a string holds no raw newline).
_EVENT_IDS = re.compile(r'\n   "(flow|step)": (\d+)')


def _renumber_event(text: str, step: np.ndarray, flow: np.ndarray) -> str:
    def number(m: re.Match[str]) -> str:
        if m[1] == "step":
            return f'\n   "step": {step[int(m[2])]}'
        return f'\n   "flow": {flow[int(m[2]) - 1]}'
    return _EVENT_IDS.sub(number, text)
