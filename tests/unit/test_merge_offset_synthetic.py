"""The clock-offset estimator (tracer/merge/offset.py) on SYNTHETIC trips:
made-up send/receive times with a known offset and known delays."""

from __future__ import annotations

import pytest

from tracer.merge import OffsetError, estimate_offset

THETA = 7_000_123_457  # synthetic: B's clock reads this far ahead of A's


def synthetic_trips(delays: list[int], theta: int, a_to_b: bool) -> list[tuple[int, int]]:
    """(sent, received) on each host's own clock, one per delay."""
    out = []
    for i, d in enumerate(delays):
        sent = 1_000_000 * (i + 1)
        if a_to_b:  # sent on A (A's clock), received on B (B's clock)
            out.append((sent, sent + d + theta))
        else:  # sent on B, received on A
            out.append((sent + theta, sent + d))
    return out


def test_symmetric_shortest_trips_give_the_offset_exactly() -> None:
    est = estimate_offset(synthetic_trips([40_000, 12_000, 55_000], THETA, True),
                          synthetic_trips([30_000, 12_000], THETA, False))
    assert est.offset_ns == THETA
    assert est.uncertainty_ns == 12_000
    assert est.shift_ns == -THETA
    assert (est.segments_ab, est.segments_ba) == (3, 2)


@pytest.mark.parametrize("fast, slow", [(1_000, 90_000), (90_000, 1_000), (0, 0), (3, 8)])
def test_the_true_offset_lies_within_the_stated_uncertainty(fast: int, slow: int) -> None:
    est = estimate_offset(synthetic_trips([fast, fast + 500], THETA, True),
                          synthetic_trips([slow], THETA, False))
    assert est.offset_ns - est.uncertainty_ns <= THETA <= est.offset_ns + est.uncertainty_ns
    # Half the shortest round trip, rounded up: no wider than it needs to be.
    assert est.uncertainty_ns == -(-(fast + slow) // 2)


def test_negative_offset() -> None:
    est = estimate_offset(synthetic_trips([5_000], -THETA, True),
                          synthetic_trips([5_000], -THETA, False))
    assert est.offset_ns == -THETA and est.uncertainty_ns == 5_000


def test_wire_bounds_hold_every_trip_after_the_shift() -> None:
    ab = synthetic_trips([20_000, 35_000], THETA, True)
    est = estimate_offset(ab, synthetic_trips([9_000], THETA, False))
    for sent, received in ab:
        low, high = est.wire_bounds(sent, received + est.shift_ns)
        assert low <= received - THETA - sent <= high
        assert high >= 0


def test_one_direction_cannot_bound_the_offset() -> None:
    with pytest.raises(OffsetError, match="no segment crossed from B to A"):
        estimate_offset(synthetic_trips([1_000], THETA, True), [])
    with pytest.raises(OffsetError, match="from A to B"):
        estimate_offset([], synthetic_trips([1_000], THETA, False))


def test_contradicting_directions_are_refused() -> None:
    # Received before sent in both directions at once: no single offset fits.
    with pytest.raises(OffsetError, match="disagree"):
        estimate_offset([(100, 50)], [(100, 40)])
