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

import re
from collections.abc import Callable
from typing import Any

import numpy as np

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
from viz.runs import Numbers, Runs, merge


def write_json_groups(plan: GroupPlan, write: Callable[[str], object]) -> None:
    trace = plan.trace
    _write_head(write, _trace_fields(trace, plan.start_ns, plan.duration_ns, plan.num_events),
                None)
    flows, steps, events = Runs(), Runs(), Runs()
    numbers = Numbers()
    # per part and thread: (source, tid, tgid, comm, its first step's start, local ids)
    threads: list[list[tuple[int, int, int, str, int, list[int]]]] = []
    try:
        for part in plan.parts():
            tl, index = part.timeline, part.index.tolist()
            _, chosen = _selected_steps(tl, None)
            numbers.note(tl, chosen, index)
            flows.add(_flow(fl, tl) for fl in tl.flows)
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
        for rec in merge(flows, lambda rec, p: int(flow_no[p][rec["number"] - 1]),
                          lambda rec, p: _renumber_flow(rec, step_id[p], flow_no[p])):
            out.add(rec)
        out.close()
        out = _Array(write, "steps")
        for rec in merge(steps, lambda rec, p: int(step_id[p][rec["id"]]),
                          lambda rec, p: _renumber_step(rec, step_id[p], flow_no[p])):
            out.add(rec)
        out.close()
        out = _Array(write, "events")
        for text in merge(events, lambda rec, p: rec[0],
                           lambda rec, p: _renumber_event(rec[1], step_id[p], flow_no[p])):
            out.add_text(text)
        out.close()
    finally:
        for runs in (flows, steps, events):
            runs.close()
    out = _Array(write, "gaps")
    for g in plan.losses.gaps:  # the parts' own (made once)
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
