"""Selection and folding (viz/select.py) on synthetic traces."""

from __future__ import annotations

import pytest

from tests.unit.synthetic_traces import synthetic_chat, synthetic_rounds
from tracer.timeline import Packet, build_timeline
from viz.select import (
    FOLD_THRESHOLD,
    MAX_STEPS,
    Bound,
    Selection,
    SelectionError,
    expand_steps,
    fold_runs,
    parse_bound,
    parse_step_ranges,
    select,
)
from viz.sequence import Arrow, Frame, build_sequence


def test_parse_bound_times_and_indexes() -> None:
    assert parse_bound("1.5ms") == Bound(offset_ns=1_500_000)
    assert parse_bound("200us") == Bound(offset_ns=200_000)
    assert parse_bound("2s") == Bound(offset_ns=2_000_000_000)
    assert parse_bound("250ns") == Bound(offset_ns=250)
    assert parse_bound("120") == Bound(event=120)
    assert parse_bound("#7") == Bound(event=7)
    for bad in ("abc", "1.5", "-3ms", "1.5 parsecs"):
        with pytest.raises(SelectionError):
            parse_bound(bad)


def test_parse_steps() -> None:
    assert expand_steps(parse_step_ranges("8"), 20) == [8]
    assert expand_steps(parse_step_ranges("8,12"), 20) == [8, 12]
    assert expand_steps(parse_step_ranges("#3-#5,4"), 20) == [3, 4, 5]
    for bad in ("x", "5-3", "1,,"):
        with pytest.raises(SelectionError):
            parse_step_ranges(bad)


def test_step_ranges_are_checked_before_they_are_expanded() -> None:
    ranges = parse_step_ranges("1-99999999999")
    assert ranges == [(1, 99999999999)]
    with pytest.raises(SelectionError, match=r"no step #20 \(steps are #0\.\.#19\)"):
        expand_steps(ranges, 20)
    with pytest.raises(SelectionError, match="no step #25"):
        expand_steps(parse_step_ranges("3,25-30"), 20)
    with pytest.raises(SelectionError, match="the trace has no step"):
        expand_steps(parse_step_ranges("0"), 0)


def test_parse_bound_refuses_times_past_any_trace() -> None:
    for bad in ("1" + "0" * 400 + "s", "99999999999s"):
        with pytest.raises(SelectionError, match="past any trace"):
            parse_bound(bad)


def test_fold_runs_finds_repeated_blocks() -> None:
    runs = fold_runs(list("xABABABy"), lambda c: c)
    assert [(r.start, r.period, r.reps) for r in runs] == [(0, 1, 1), (1, 2, 3), (7, 1, 1), ]
    runs = fold_runs(list("aaaa"), lambda c: c)
    assert [(r.period, r.reps) for r in runs] == [(1, 4)]
    assert [r.reps for r in fold_runs(list("abc"), lambda c: c)] == [1, 1, 1]


def test_small_trace_is_not_folded() -> None:
    view = select(build_timeline(synthetic_chat().trace()))
    assert view.notices == []
    assert all(not b.folded for fv in view.flows for b in fv.blocks)


def test_big_trace_is_folded_with_a_count_and_a_notice() -> None:
    tl = build_timeline(synthetic_rounds(100).trace())
    steps = len(tl.flows[0].steps)
    assert steps > FOLD_THRESHOLD
    view = select(tl)
    (fv,) = view.flows
    folded = [b for b in fv.blocks if b.folded]
    assert len(folded) == 1 and folded[0].reps == 100 and len(folded[0].steps) == 3
    assert sum(len(b.covered) for b in fv.blocks) == steps  # every step accounted for
    assert len(view.notices) == 1 and "folded" in view.notices[0]
    d = build_sequence(tl, view=view)
    frames = [r for r in d.rows if isinstance(r, Frame)]
    assert [f.end for f in frames] == [False, True] and frames[0].text.startswith("x100: ")
    drawn = {a.step for a in d.arrows}
    assert drawn == {st.id for b in fv.blocks for st in b.steps}
    assert all(a.reps == 100 for a in d.all_arrows if a.step in {s.id for s in folded[0].steps})
    # --no-fold and --max-packets draw steps one by one
    assert not any(b.folded for b in select(tl, Selection(fold=False)).flows[0].blocks)
    capped = select(tl, Selection(max_steps=10))
    assert len(capped.drawn_steps) == 10 and "--max-packets 10" in capped.notices[0]


def test_unfolded_big_trace_is_capped() -> None:
    tl = build_timeline(synthetic_rounds(150).trace())
    view = select(tl, Selection(fold=False))
    assert len(view.drawn_steps) <= MAX_STEPS
    assert "capped" in view.notices[-1] and view.cut_note is not None
    d = build_sequence(tl, view=view)
    assert d.rows[-1] == next(r for r in d.rows if not isinstance(r, (Arrow, Frame))
                              and "not drawn" in r.text)


def test_window_by_time_and_by_event_index() -> None:
    tl = build_timeline(synthetic_chat().trace())
    view = select(tl, Selection(start=parse_bound("5us"), end=parse_bound("9us")))
    assert view.window == (5, 9)  # synthetic events are 1 us apart
    d = build_sequence(tl, view=view)
    assert [a.event for a in d.arrows] == list(range(5, 10))
    assert select(tl, Selection(start=Bound(event=3), end=Bound(event=4))).window == (3, 4)
    with pytest.raises(SelectionError, match="select no event"):
        select(tl, Selection(start=parse_bound("1s")))
    with pytest.raises(SelectionError, match="no event #999"):
        select(tl, Selection(end=Bound(event=999)))


def test_packet_selection_and_errors() -> None:
    tl = build_timeline(synthetic_chat().trace())
    pkt = next(st for st in tl.steps if isinstance(st, Packet))
    view = select(tl, Selection(steps=(pkt.id,)))
    assert [st.id for st in view.drawn_steps] == [pkt.id]
    d = build_sequence(tl, view=view)
    assert {a.step for a in d.arrows} == {pkt.id}
    with pytest.raises(SelectionError, match="no step #999"):
        select(tl, Selection(steps=(999,)))
    with pytest.raises(SelectionError, match="no flow 3"):
        select(tl, Selection(flow=3))
