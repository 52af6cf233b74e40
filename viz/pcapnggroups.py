"""`export -f pcapng` of a trace rebuilt in parts of independent groups
(tracer/timeline/groups.py): the bytes of render_pcapng (every flow, or
--flow N's) with one part of objects at a time.

A frame's block needs the timeline around its event: its step, the send
and recv it belongs to, the step's kernel path and per-layer latency, and
the other captures of the same packet (folded into it). All of a step's
events are in one part. What the whole trace decides:
- the order of blocks (time, then row in the file): each part's frames are
  a run in that order, merged;
- step ids in the comments: ranks known after the last part (viz/runs.py
  Numbers), so a part's comments hold its local ids (between NULs, which no
  comment has) and are renumbered as merged;
- interface ids: in order of each interface's first block, its description
  block from that frame, so the blocks are spooled before the interfaces
  are written.
A flow is in one part: --flow N rebuilds only that part, its step ids
ranked beforehand (viz/exportgroups.py's survey, OneFlow).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tracer.timeline.groups import GroupPlan
from viz.pcapng import (
    Interface,
    also_text,
    clock_offset,
    comments,
    fold_frames,
    frame,
    hop_texts,
    interface_block,
    packet_block,
    section_block,
)
from viz.runs import Numbers, Runs, merge

_LOCAL_ID = re.compile("\0(\\d+)\0")


def _local(step: int) -> str:
    return f"\0{step}\0"


@dataclass(frozen=True)
class OneFlow:
    """--flow N: the part holding the flow, its number within that part,
    and the part's step ids in the whole trace (by local id)."""

    part: int
    local: int
    step_id: np.ndarray


@dataclass
class Written:
    """What an export in parts wrote (as viz/pcapng.py Export, without the bytes)."""

    packets: int = 0
    interfaces: list[str] = field(default_factory=list)
    same_frame: int = 0


def write_pcapng_groups(plan: GroupPlan, tool: str, write: Callable[[bytes], object],
                        one: OneFlow | None = None) -> Written:
    """The trace's frames (of every flow, or of `one`) as one pcapng
    section; nothing is written when none is on an event of the timeline
    (Written.packets 0)."""
    done = Written()
    table = plan.frames()
    if not table.num_rows:
        return done
    rows = table.column("row").to_numpy().astype(np.int64)
    at = plan.order_of(rows)
    order = np.argsort(at, kind="stable")
    table, at = table.take(order), at[order]
    header = plan.trace.header
    blocks = Runs()
    numbers = Numbers()
    # interface -> (its first kept frame's (time, row), name, link)
    first: dict[Interface, tuple[tuple[int, int], str, tuple[int, int]]] = {}
    try:
        for part in plan.parts(only=None if one is None else {one.part}):
            tl, index = part.timeline, part.index
            if one is None:
                numbers.note(tl, tl.steps, index.tolist())
            pos = np.minimum(np.searchsorted(index, at), len(index) - 1)
            mine = np.flatnonzero(index[pos] == at)
            recs = table.take(mine).to_pylist() if len(mine) else []
            made = (frame(int(rec["row"]), tl.events[int(pos[i])], rec)
                    for i, rec in zip(mine.tolist(), recs, strict=True))
            frames = sorted((f for f in made if one is None or f.te.flow == one.local),
                            key=lambda f: (f.te.ev.ts_ns, f.row))
            kept, folded = fold_frames(frames)
            done.same_frame += sum(len(v) for v in folded.values())
            hops = hop_texts(tl) if kept else {}
            for f in kept:
                key = (f.te.ev.ts_ns, f.row)
                have = first.get(f.iface)
                if have is None or key < have[0]:
                    first[f.iface] = (key, f.ifname, f.link)
                texts = comments(tl, f.te, hops, also_text(f, folded), _local)
                blocks.put((key, f.iface, f.data[f.link[1]:], f.length - f.link[1], texts))
            blocks.end_run()
            done.packets += len(kept)
            del tl, part, frames, kept, folded, hops
        if not done.packets:
            return done
        step_id = numbers.ranks()[0] if one is None else [one.step_id]
        del numbers
        write(section_block(header, tool))
        ids: dict[Interface, int] = {}
        for iface, (_, ifname, link) in sorted(first.items(), key=lambda kv: kv[1][0]):
            ids[iface] = len(ids)
            block, desc = interface_block(header, iface, ifname, link)
            done.interfaces.append(desc)
            write(block)
        for (ts, _), iface, data, length, texts in merge(
                blocks, lambda rec, p: rec[0], lambda rec, p: _renumber(rec, step_id[p])):
            write(packet_block(ids[iface], ts + clock_offset(header, iface.source), data,
                               length, texts))
    finally:
        blocks.close()
    return done


def _renumber(rec: tuple[Any, ...], step: np.ndarray) -> tuple[Any, ...]:
    def number(m: re.Match[str]) -> str:
        return str(step[int(m[1])])
    return (*rec[:4], [_LOCAL_ID.sub(number, text) for text in rec[4]])
