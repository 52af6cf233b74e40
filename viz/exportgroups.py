"""`kpath export` of a big trace rebuilt in parts of independent groups
(tracer/timeline/groups.py): the picture of the whole trace's timeline with
only the parts it draws in memory.

Pass 1 rebuilds every part once and keeps a summary per flow: its first
event (the whole trace's flow numbers and step ids are ranks, viz/runs.py),
and how many steps and events it would draw, folded or not, as far as a
capped picture could reach. From these the selection of viz/select.py is
made for the whole trace (fold or not, which flows the cap keeps, the
notices). Pass 2 rebuilds only the parts holding the flows drawn, renumbers
their objects to the whole trace's numbers and hands the renderers a
Timeline of them (`Sparse`: looked up by the whole trace's numbers, its
length the whole trace's count).

Taken here: every selection (kpath/cli_view.py decides): the default picture
(all flows, folded and capped), --flow N, --packet, --no-fold, --from/--to
(event indices worked out from the plan's times: a run of each part's local
indices) and --max-packets (across flows: pass 1 keeps each flow's step ids
and drawn events, the first N step ids of the whole trace are kept).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar, cast, overload

import numpy as np

from tracer.timeline import Flow, Message, Packet, Step, TEvent, Timeline
from tracer.timeline.groups import GroupPlan
from viz.runs import Numbers
from viz.select import (
    FOLD_EVENTS,
    FOLD_THRESHOLD,
    MAX_EVENTS,
    MAX_STEPS,
    FlowView,
    Selection,
    View,
    _cut_blocks,
    _single,
    capped,
    drawn_events,
    fold_blocks,
    fold_notice,
    overlaps,
    select,
)

T = TypeVar("T")


class Sparse(Sequence[T]):
    """Some items of a longer list, looked up by their position in it;
    iterated in that order (only the items held)."""

    def __init__(self, items: dict[int, T], size: int) -> None:
        self._items = dict(sorted(items.items()))
        self._size = size

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, at: int) -> T: ...
    @overload
    def __getitem__(self, at: slice) -> Sequence[T]: ...
    def __getitem__(self, at: int | slice) -> T | Sequence[T]:
        if isinstance(at, slice):
            raise TypeError("a Sparse list is not sliced")
        item = self._items.get(at + self._size if at < 0 else at)
        if item is None:
            raise IndexError(f"item {at} is in a part not rebuilt")
        return item

    def __iter__(self) -> Iterator[T]:
        return iter(self._items.values())


@dataclass(slots=True)
class FlowSummary:
    """What pass 1 keeps of a flow. `head` and `folded_head`: (steps, events,
    steps covered) of its first blocks, unfolded and folded, up to the first
    that alone overflows the cap (no later one can be drawn)."""

    part: int
    local: int  # its number within the part
    steps: int
    events: int
    head: list[tuple[int, int, int]]
    folded_drawn: tuple[int, int] = (0, 0)  # steps, events drawn when folded
    folded_head: list[tuple[int, int, int]] = field(default_factory=list)
    folds: tuple[int, int] = (0, 0)  # folded blocks, repetitions left out
    number: int = 0  # in the whole trace
    # With --max-packets: per step drawn, its id (local, then the whole
    # trace's once ranked) and its events drawn.
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sizes: list[int] = field(default_factory=list)


@dataclass
class Survey:
    """Pass 1: every flow (by number), the whole trace's counts and ranks."""

    flows: list[FlowSummary]
    steps: int  # in the whole trace
    unattributed: int  # events of no flow
    step_id: list[np.ndarray]  # per part: local step id -> step id
    flow_no: list[np.ndarray]  # per part: local flow number - 1 -> flow number


def _head(blocks: Iterator[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    steps = events = 0
    for b in blocks:
        out.append(b)
        steps += b[0]
        events += b[1]
        if steps > MAX_STEPS or events > MAX_EVENTS:
            break
    return out


def local_window(index: np.ndarray, window: tuple[int, int]) -> tuple[int, int]:
    """A window of the whole trace's event indices in a part whose events
    have these (sorted) indices: a run of its local indices (lo > hi: none)."""
    return (int(np.searchsorted(index, window[0])),
            int(np.searchsorted(index, window[1], side="right")) - 1)


def survey(plan: GroupPlan, fold: bool, window: tuple[int, int] | None = None,
           step_ids: bool = False) -> Survey:
    """Pass 1 (`fold`: summarise each flow folded too; `window`: of the
    steps with an event in it, counting those events; `step_ids`: keep
    each flow's step ids, for --max-packets)."""
    numbers = Numbers()
    flows: list[FlowSummary] = []
    unattributed = 0
    for part in plan.parts():
        tl, index = part.timeline, part.index.tolist()
        numbers.note(tl, tl.steps, index)
        at = None if window is None else local_window(part.index, window)
        for fl in tl.flows:
            steps = fl.steps if at is None else [st for st in fl.steps if overlaps(st, at)]
            sizes = [drawn_events(st, at) for st in steps]
            fs = FlowSummary(part.number, fl.number, len(sizes), sum(sizes),
                             _head((1, n, 1) for n in sizes))
            if step_ids:
                fs.ids = np.array([st.id for st in steps], dtype=np.int64)
                fs.sizes = sizes
            if fold and steps:
                blocks, folds, left_out = fold_blocks(steps)
                drawn = [(len(b.steps), sum(drawn_events(st, at) for st in b.steps),
                          len(b.covered)) for b in blocks]
                fs.folded_drawn = (sum(d[0] for d in drawn), sum(d[1] for d in drawn))
                fs.folded_head = _head(iter(drawn))
                fs.folds = (folds, left_out)
            flows.append(fs)
        unattributed += sum(len(st.events) for g in tl.unattributed for st in g.steps)
        del tl, part
    step_id, flow_no = numbers.ranks()
    for fs in flows:
        fs.number = int(flow_no[fs.part][fs.local - 1])
        if step_ids:
            fs.ids = step_id[fs.part][fs.ids]
    flows.sort(key=lambda fs: fs.number)
    return Survey(flows, sum(len(s) for s in step_id), unattributed, step_id, flow_no)


@dataclass
class Drawn:
    """What the renderers take: a timeline of the parts drawn, the view."""

    timeline: Timeline
    view: View
    unattributed: int  # the whole trace's events of no flow (build_sequence)


def drawn(plan: GroupPlan, sv: Survey, sel: Selection,
          window: tuple[int, int] | None = None) -> Drawn:
    """Pass 2: the view `sel` asks for, as select() makes it of the whole
    timeline; `window`: --from/--to's event indices (survey's)."""
    if sel.flow is not None or sel.steps:
        # The view depends on that flow's or those steps' parts alone.
        parts = {sv.flows[sel.flow - 1].part} if sel.flow is not None else set()
        if sel.steps:
            wanted = np.array(sel.steps, dtype=np.int64)
            parts |= {p for p, ids in enumerate(sv.step_id) if np.isin(ids, wanted).any()}
        tl = _rebuild(plan, sv, parts)
        return Drawn(tl, select(tl, replace(sel, window=window)), sv.unattributed)
    # select() leaves out a flow with no step chosen (none in the window).
    flows = [fs for fs in sv.flows if fs.steps]
    notices: list[str] = []
    cut_note = None
    kept_ids: set[int] | None = None
    if sel.max_steps is not None:
        flows, kept_ids, cut = _first_steps(flows, sel.max_steps)
        if cut:
            notices.append(f"--max-packets {sel.max_steps}: drew the first "
                           f"{sel.max_steps} steps, left out {cut}")
            cut_note = (f"{cut} more step(s) not drawn (--max-packets {sel.max_steps}); "
                        "use --from/--to or --packet to see them")
    total = sum(fs.steps for fs in flows)
    n_events = sum(fs.events for fs in flows)
    do_fold = sel.fold and not sel.narrowed and (total > FOLD_THRESHOLD
                                                 or n_events > FOLD_EVENTS)
    if do_fold:
        notices += [fold_notice(fs.number, fs.steps, *fs.folds) for fs in flows if fs.folds[0]]
        drawn_steps = sum(fs.folded_drawn[0] for fs in flows)
        arrows = sum(fs.folded_drawn[1] for fs in flows)
    else:
        drawn_steps, arrows = total, n_events
    keep = flows
    cut = 0
    is_capped = sel.cap and (drawn_steps > MAX_STEPS or arrows > MAX_EVENTS)
    if is_capped:
        keep, cut = _capped(flows, do_fold)
    tl = _rebuild(plan, sv, {fs.part for fs in keep})
    view = View(timeline=tl, flows=[], window=window, selection=sel)
    for fs in keep:
        fl = tl.flows[fs.number - 1]
        steps = fl.steps if window is None else [st for st in fl.steps if overlaps(st, window)]
        if kept_ids is not None:
            steps = [st for st in steps if st.id in kept_ids]
        blocks = fold_blocks(steps)[0] if do_fold else [_single(st) for st in steps]
        view.flows.append(FlowView(flow=fl, blocks=blocks, total_steps=len(steps)))
    view.notices = notices
    view.cut_note = cut_note
    if is_capped:
        _cut_blocks(view, MAX_STEPS, MAX_EVENTS)  # the same blocks as _capped keeps
        capped(view, cut)
    return Drawn(tl, view, sv.unattributed)


def _first_steps(flows: list[FlowSummary], limit: int
                 ) -> tuple[list[FlowSummary], set[int], int]:
    """select's _cap on the summaries: the first `limit` steps by id across
    flows; the flows keeping one (summarised on those alone), their ids,
    and the steps left out."""
    every = np.sort(np.concatenate([fs.ids for fs in flows])) if flows else np.zeros(0)
    kept = every[:limit]
    out = []
    for fs in flows:
        mine = np.isin(fs.ids, kept)
        if mine.any():
            sizes = [n for n, k in zip(fs.sizes, mine.tolist(), strict=True) if k]
            out.append(replace(fs, steps=len(sizes), events=sum(sizes),
                               head=_head((1, n, 1) for n in sizes)))
    return out, set(kept.tolist()), len(every) - len(kept)


def _capped(flows: list[FlowSummary], folded: bool) -> tuple[list[FlowSummary], int]:
    """select's _cut_blocks on the summaries: the flows keeping a block, and
    the steps left out."""
    steps_left, events_left = MAX_STEPS, MAX_EVENTS
    first = True
    keep: list[FlowSummary] = []
    kept_steps = 0  # covered by the blocks kept
    for fs in flows:
        if steps_left < 0 or events_left < 0:
            break  # no block fits any more (each has a step and an event)
        kept = False
        for n_steps, n_ev, covered in (fs.folded_head if folded else fs.head):
            if first or (steps_left >= n_steps and events_left >= n_ev):
                kept = True
                kept_steps += covered
                steps_left -= n_steps
                events_left -= n_ev
                first = False
            else:
                steps_left = events_left = -1
                break
        if kept:
            keep.append(fs)
    return keep, sum(fs.steps for fs in flows) - kept_steps


def _rebuild(plan: GroupPlan, sv: Survey, parts: set[int]) -> Timeline:
    """The timeline of these parts, in the whole trace's numbers."""
    events: dict[int, TEvent] = {}
    steps: dict[int, Step] = {}
    flows: dict[int, Flow] = {}
    for part in plan.parts(only=parts):
        tl = part.timeline
        _renumber(tl, part.index.tolist(), sv.step_id[part.number].tolist(),
                  sv.flow_no[part.number].tolist())
        events.update((te.index, te) for te in tl.events)
        steps.update((st.id, st) for st in tl.steps)
        flows.update((fl.number - 1, fl) for fl in tl.flows)
    trace = plan.trace
    following = plan.context_next(np.array(sorted(events), dtype=np.int64))
    return Timeline(
        trace=trace, start_ns=plan.start_ns,
        events=cast(list[TEvent], Sparse(events, plan.num_events)),
        steps=cast(list[Step], Sparse(steps, sv.steps)),
        flows=cast(list[Flow], Sparse(flows, len(sv.flows))),
        unattributed=[], gaps=plan.losses.gaps, context_next=following)


def _renumber(tl: Timeline, index: list[int], step: list[int], flow: list[int]) -> None:
    """A part's objects in the whole trace's numbers (in place)."""
    for te in tl.events:
        te.index = index[te.index]
        if te.pair is not None:
            te.pair = index[te.pair]
        if te.step >= 0:
            te.step = step[te.step]
        if te.flow is not None:
            te.flow = flow[te.flow - 1]
    for st in tl.steps:
        st.id = step[st.id]
        if st.flow is not None:
            st.flow = flow[st.flow - 1]
        if isinstance(st, Message):
            st.packets = [step[i] for i in st.packets]
            st.handled = [step[i] for i in st.handled]
            st.data_from = [step[i] for i in st.data_from]
            st.carried_by = [step[i] for i in st.carried_by]
        elif isinstance(st, Packet):
            if st.message is not None:
                st.message = step[st.message]
            st.read_by = [step[i] for i in st.read_by]
            st.written_by = [step[i] for i in st.written_by]
    for fl in tl.flows:
        fl.number = flow[fl.number - 1]
        fl.first = index[fl.first]
