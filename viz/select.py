"""Which part of a timeline a picture shows, and how a big one is folded.

A `Selection` (what the user asked: --flow, --packet, --from/--to,
--max-packets) turns a Timeline into a `View`: per flow, the steps to draw
as `Block`s. Without a narrowing selection a large flow is summarised:
consecutive repetitions of the same block of steps (same kinds, labels and
path through the layers, whatever their sequence numbers and times) are
folded into one block drawn once with a count ("x37"). Then a hard cap on
the number of steps keeps any picture finite. Every fold and cut is listed
in `View.notices` (the CLI prints them on stderr) and shown in the picture.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from tracer.timeline import Flow, Message, Packet, Step, Timeline

FOLD_THRESHOLD = 200  # steps in one view above which repeated blocks are folded
FOLD_EVENTS = 600  # ... or events (arrows) above which they are
MAX_PERIOD = 32  # longest repeated block looked for (steps)
MAX_STEPS = 400  # steps drawn at most, after folding (the rest is cut, with a note)
# Arrows drawn at most: 600 rows keep a PNG under cairo's 32767-pixel limit at
# full resolution, so the text stays legible.
MAX_EVENTS = 600


class SelectionError(ValueError):
    """A selection that does not fit the trace; the message is one line."""


@dataclass(frozen=True, slots=True)
class Bound:
    """A --from/--to value: a time offset (ns) or an event index."""

    offset_ns: int | None = None
    event: int | None = None


_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_BOUND = re.compile(r"^\s*#?(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s)?\s*$")


def parse_bound(text: str) -> Bound:
    """'1.5ms', '200us', '3s', '250ns' are offsets from the trace start; a
    bare integer ('120', or '#120') is an event index (as in --format json)."""
    m = _BOUND.match(text)
    if m is None:
        raise SelectionError(
            f"bad time or event index {text!r} (examples: 1.5ms, 200us, 2s, 120 for event #120)")
    number, unit = m.groups()
    if unit is None:
        if "." in number:
            raise SelectionError(f"{text!r}: an event index is a whole number; "
                                 "add a unit (ns, us, ms, s) for a time")
        return Bound(event=int(number))
    ns = float(number) * _UNITS[unit]
    if not math.isfinite(ns) or ns >= 2 ** 63:
        raise SelectionError(f"{text!r}: a time offset past any trace (2^63 ns)")
    return Bound(offset_ns=round(ns))


def parse_step_ranges(text: str) -> list[tuple[int, int]]:
    """'8', '8,12', '8-12' (step numbers as replay shows them: #8) as
    (first, last) pairs, checked but not expanded: '1-99999999999' is one
    pair until expand_steps knows how many steps the trace has."""
    out: list[tuple[int, int]] = []
    for part in text.split(","):
        part = part.strip().lstrip("#")
        m = re.fullmatch(r"(\d+)(?:-#?(\d+))?", part)
        if m is None:
            raise SelectionError(f"--packet wants step numbers like 8, 8,12 or 8-12, got {text!r}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if hi < lo:
            raise SelectionError(f"--packet range {part!r} goes backwards")
        out.append((lo, hi))
    return out


def expand_steps(ranges: list[tuple[int, int]], count: int) -> list[int]:
    """The step numbers of `ranges` in a trace of `count` steps, sorted;
    SelectionError (before expanding anything) for a number it lacks."""
    for lo, hi in ranges:
        if hi >= count:
            have = f"steps are #0..#{count - 1}" if count else "the trace has no step"
            raise SelectionError(f"no step #{max(lo, count)} ({have})")
    return sorted({i for lo, hi in ranges for i in range(lo, hi + 1)})


@dataclass(frozen=True, slots=True)
class Selection:
    flow: int | None = None
    steps: tuple[int, ...] = ()  # --packet
    start: Bound | None = None  # --from
    end: Bound | None = None  # --to
    max_steps: int | None = None  # --max-packets
    fold: bool = True  # summarise big views (off with --no-fold)
    cap: bool = True  # cut views over MAX_STEPS drawn steps (off for timeline formats)
    # --from/--to as event indices (inclusive), worked out beforehand: a
    # trace rebuilt in parts (viz/exportgroups.py) holds only some events.
    window: tuple[int, int] | None = None

    @property
    def narrowed(self) -> bool:
        """The user picked what to see: no automatic folding then."""
        return bool(self.steps) or self.max_steps is not None


@dataclass(eq=False, slots=True)
class Block:
    """Steps drawn together; reps > 1: they stand for `reps` repetitions,
    `covered` lists every step id they stand for."""

    steps: list[Step]
    reps: int = 1
    covered: list[int] = field(default_factory=list)
    start_ns: int = 0
    end_ns: int = 0

    @property
    def folded(self) -> bool:
        return self.reps > 1


@dataclass(eq=False, slots=True)
class FlowView:
    flow: Flow
    blocks: list[Block]
    total_steps: int  # steps of the flow in the selection, before folding/cutting

    @property
    def steps(self) -> list[Step]:
        return [st for b in self.blocks for st in b.steps]


@dataclass(eq=False, slots=True)
class View:
    timeline: Timeline
    flows: list[FlowView]
    window: tuple[int, int] | None = None  # event indexes drawn (inclusive), None: all
    notices: list[str] = field(default_factory=list)  # what was folded or cut, one line each
    cut_note: str | None = None  # shown at the end of the picture when steps were cut
    selection: Selection = field(default_factory=Selection)

    def shows(self, index: int) -> bool:
        return self.window is None or self.window[0] <= index <= self.window[1]

    @property
    def drawn_steps(self) -> list[Step]:
        return [st for fv in self.flows for st in fv.steps]

    @property
    def packets(self) -> list[Packet]:
        """Every selected packet, folded or not (for tables)."""
        tl = self.timeline
        ids = sorted({i for fv in self.flows for b in fv.blocks for i in b.covered})
        return [st for i in ids if isinstance(st := tl.steps[i], Packet)]


def step_shape(st: Step) -> Hashable:
    """What two steps share when one looks like a repetition of the other:
    kind, side, labels and the path of events through layers and contexts;
    not the sequence numbers, times, threads or addresses."""
    path = tuple((te.probe, str(te.ev.kind), str(te.side), str(te.ev.ctx), te.ev.softirq)
                 for te in st.events)
    if isinstance(st, Packet):
        seg = st.segment
        return ("packet", seg.flags_label, seg.payload, str(st.sender), st.again, path)
    if isinstance(st, Message):
        return ("message", st.op, st.syscall, st.nbytes, str(st.side), path)
    return ("event", str(st.side), path)


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Run:
    start: int
    period: int
    reps: int


def fold_runs(items: Sequence[T], key: Callable[[T], Hashable],
              max_period: int = MAX_PERIOD) -> list[Run]:
    """Cover `items` with runs: a block of `period` items repeated `reps`
    times in a row (reps 1: no repetition). Greedy from the left, taking the
    period that covers most items (the shorter on ties). Linear in practice:
    a found repetition is skipped as a whole."""
    keys = [key(it) for it in items]
    n = len(keys)
    runs: list[Run] = []
    i = 0
    while i < n:
        best = Run(i, 1, 1)
        for p in range(1, min(max_period, (n - i) // 2) + 1):
            reps = 1
            while i + (reps + 1) * p <= n and \
                    keys[i + reps * p:i + (reps + 1) * p] == keys[i:i + p]:
                reps += 1
            if reps > 1 and reps * p > best.reps * best.period:
                best = Run(i, p, reps)
        runs.append(best)
        i += best.period * best.reps
    return runs


def select(timeline: Timeline, sel: Selection | None = None) -> View:
    """The view of `timeline` that `sel` asks for. Raises SelectionError
    (one line) for a flow, step or bound the trace does not have."""
    sel = sel or Selection()
    tl = timeline
    if sel.flow is not None and not 1 <= sel.flow <= len(tl.flows):
        raise SelectionError(f"no flow {sel.flow} (the trace has {len(tl.flows)})")
    flows = [tl.flows[sel.flow - 1]] if sel.flow is not None else list(tl.flows)
    window = _window(tl, sel)
    wanted: set[int] | None = None
    if sel.steps:
        bad = [i for i in sel.steps if not 0 <= i < len(tl.steps)]
        if bad:
            raise SelectionError(f"no step #{bad[0]} (steps are #0..#{len(tl.steps) - 1})")
        wanted = set(sel.steps)
        stray = [i for i in sel.steps if tl.steps[i].flow is None]
        if stray:
            raise SelectionError(f"step #{stray[0]} belongs to no flow: only `kpath replay` "
                                 "shows it")
        if sel.flow is not None:
            other = [i for i in sel.steps if tl.steps[i].flow != sel.flow]
            if other:
                raise SelectionError(f"step #{other[0]} is in flow {tl.steps[other[0]].flow}, "
                                     f"not in flow {sel.flow}")
    view = View(timeline=tl, flows=[], window=window, selection=sel)
    chosen: list[tuple[Flow, list[Step]]] = []
    for fl in flows:
        steps = [st for st in fl.steps
                 if (wanted is None or st.id in wanted)
                 and (window is None or overlaps(st, window))]
        if steps:
            chosen.append((fl, steps))
    if sel.max_steps is not None:
        chosen, cut = _cap(chosen, sel.max_steps)
        if cut:
            view.notices.append(f"--max-packets {sel.max_steps}: drew the first "
                                f"{sel.max_steps} steps, left out {cut}")
            view.cut_note = (f"{cut} more step(s) not drawn (--max-packets {sel.max_steps}); "
                             "use --from/--to or --packet to see them")
    total = sum(len(s) for _, s in chosen)
    n_events = sum(drawn_events(st, window) for _, steps in chosen for st in steps)
    do_fold = sel.fold and not sel.narrowed and (total > FOLD_THRESHOLD
                                                 or n_events > FOLD_EVENTS)
    for fl, steps in chosen:
        blocks = _fold(steps, view) if do_fold else [_single(st) for st in steps]
        view.flows.append(FlowView(flow=fl, blocks=blocks, total_steps=len(steps)))
    drawn = sum(len(b.steps) for fv in view.flows for b in fv.blocks)
    arrows = sum(drawn_events(st, window) for fv in view.flows for b in fv.blocks
                 for st in b.steps)
    if sel.cap and (drawn > MAX_STEPS or arrows > MAX_EVENTS):
        capped(view, _cut_blocks(view, MAX_STEPS, MAX_EVENTS))
    return view


def capped(view: View, cut: int) -> None:
    """Notes that the picture was capped, leaving out `cut` steps."""
    cap = f"{MAX_STEPS} steps / {MAX_EVENTS} events"
    view.notices.append(f"the picture is capped at {cap}: left out {cut} step(s) "
                        "(narrow it with --flow, --packet, --from/--to or --max-packets)")
    view.cut_note = (f"{cut} more step(s) not drawn (cap of {cap}); use --flow, "
                     "--packet, --from/--to or --max-packets")


def drawn_events(st: Step, window: tuple[int, int] | None) -> int:
    if window is None:
        return len(st.events)
    return sum(window[0] <= te.index <= window[1] for te in st.events)


def _single(st: Step) -> Block:
    return Block(steps=[st], covered=[st.id], start_ns=st.start_ns, end_ns=st.end_ns)


def _fold(steps: list[Step], view: View) -> list[Block]:
    blocks, folds, folded_steps = fold_blocks(steps)
    if folds:
        view.notices.append(fold_notice(steps[0].flow, len(steps), folds, folded_steps))
    return blocks


def fold_notice(flow: int | None, steps: int, folds: int, folded_steps: int) -> str:
    return (f"flow {flow}: {steps} steps summarised: {folds} repeated block(s) folded "
            f"(x count), {folded_steps} repetitions not drawn; --no-fold, --max-packets, "
            "--packet or --from/--to show them")


def fold_blocks(steps: list[Step]) -> tuple[list[Block], int, int]:
    """A flow's steps folded: the blocks, how many are folded and how many
    repetitions they leave out."""
    blocks: list[Block] = []
    folded_steps = 0
    folds = 0
    for run in fold_runs(steps, step_shape):
        part = steps[run.start:run.start + run.period * run.reps]
        first = part[:run.period]
        if run.reps == 1:
            blocks.extend(_single(st) for st in first)
            continue
        blocks.append(Block(steps=first, reps=run.reps, covered=[st.id for st in part],
                            start_ns=min(st.start_ns for st in part),
                            end_ns=max(st.end_ns for st in part)))
        folds += 1
        folded_steps += len(part) - run.period
    return blocks, folds, folded_steps


def _cap(chosen: list[tuple[Flow, list[Step]]], limit: int
         ) -> tuple[list[tuple[Flow, list[Step]]], int]:
    """The first `limit` steps in time order, across flows."""
    everything = sorted((st for _, steps in chosen for st in steps), key=lambda s: s.id)
    keep = {st.id for st in everything[:limit]}
    out = [(fl, [st for st in steps if st.id in keep]) for fl, steps in chosen]
    return [(fl, steps) for fl, steps in out if steps], len(everything) - len(keep)


def _cut_blocks(view: View, max_steps: int, max_events: int) -> int:
    """Keep blocks in order while both budgets last (at least one block)."""
    steps_left, events_left = max_steps, max_events
    cut = 0
    first = True
    for fv in view.flows:
        kept: list[Block] = []
        for b in fv.blocks:
            n_ev = sum(drawn_events(st, view.window) for st in b.steps)
            if first or (steps_left >= len(b.steps) and events_left >= n_ev):
                kept.append(b)
                steps_left -= len(b.steps)
                events_left -= n_ev
                first = False
            else:
                steps_left = events_left = -1  # keep the picture contiguous in time
                cut += len(b.covered)
        fv.blocks = kept
    view.flows = [fv for fv in view.flows if fv.blocks]
    return cut


def overlaps(st: Step, window: tuple[int, int]) -> bool:
    return any(window[0] <= te.index <= window[1] for te in st.events)


def _window(tl: Timeline, sel: Selection) -> tuple[int, int] | None:
    if sel.window is not None:
        return sel.window
    if sel.start is None and sel.end is None:
        return None
    return window_of([te.offset_ns for te in tl.events], sel)


def window_of(offsets: Sequence[int], sel: Selection) -> tuple[int, int] | None:
    """The event indices --from/--to select (inclusive) of a trace whose
    events are at these offsets from its start, in time order."""
    if sel.start is None and sel.end is None:
        return None
    n = len(offsets)

    def index(b: Bound, lower: bool) -> int:
        if b.event is not None:
            if not 0 <= b.event < n:
                raise SelectionError(f"no event #{b.event} (events are #0..#{n - 1})")
            return b.event
        assert b.offset_ns is not None
        if lower:
            return bisect.bisect_left(offsets, b.offset_ns)
        return bisect.bisect_right(offsets, b.offset_ns) - 1

    lo = index(sel.start, True) if sel.start is not None else 0
    hi = index(sel.end, False) if sel.end is not None else n - 1
    if lo > hi or lo >= n or hi < 0:
        raise SelectionError("--from/--to select no event (the trace spans "
                             f"+0 .. +{(int(offsets[-1]) if n else 0) / 1e6:.6f} ms, "
                             f"events #0..#{n - 1})")
    return lo, hi
