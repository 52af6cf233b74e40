"""The vectorised kernels of the columnar `replay --stats`
(tracer/timeline/columnar/stats.py) against the per-flow Python they stand
for, on synthetic inputs: the latency distributions of many flows at once
(HopTable rows), the byte accounting's sums, covered bytes and distinct
segments per (flow, direction). Edge cases: one value, two, all in gaps,
empty groups, no rows, empty and touching ranges, values too wide to stack
groups in an int64."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from tracer.timeline.columnar.byte_table import union
from tracer.timeline.columnar.group_sums import distinct_counts, message_sums, union_lengths
from tracer.timeline.columnar.latency_table import HOPS, PacketPoints
from tracer.timeline.columnar.stats import CLASSES, ROLES, HopRow, _hop_stats


def _reference_hops(flow: np.ndarray, sender: np.ndarray, pp: PacketPoints
                    ) -> dict[int, list[HopRow]]:
    """tracer/timeline/latency.latency_stats' rules, flow by flow."""
    groups: dict[tuple[int, int, int, int], tuple[list[int], list[int]]] = {}
    for p in range(len(flow)):
        for h in range(len(HOPS)):
            if pp.has_hop[p, h]:
                vals, gaps = groups.setdefault(
                    (int(flow[p]), int(sender[p]), int(pp.klass[p]), h), ([], []))
                (gaps if pp.gap[p] else vals).append(int(pp.hops[p, h]))
    out: dict[int, list[HopRow]] = {}
    for (f, s, k, h), (vals, gaps) in sorted(groups.items()):
        vals.sort()
        n = len(vals)
        out.setdefault(f + 1, []).append(HopRow(
            ROLES[s], CLASSES[k], HOPS[h], n, vals[0] if n else 0,
            round(statistics.median(vals)) if n else 0,
            vals[max(math.ceil(0.99 * n) - 1, 0)] if n else 0, vals[-1] if n else 0,
            len(gaps)))
    return out


def _points(rng: np.random.Generator, npk: int, flows: int, spread: int, gap_rate: float
            ) -> tuple[np.ndarray, np.ndarray, PacketPoints]:
    flow = rng.integers(0, flows, npk)
    sender = rng.integers(0, 2, npk)
    has = rng.random((npk, len(HOPS))) < 0.4
    hops = np.where(has, rng.integers(-spread, spread, (npk, len(HOPS))), 0)
    pp = PacketPoints(points=np.zeros((npk, 0), dtype=np.int64), hops=hops, has_hop=has,
                      gap=rng.random(npk) < gap_rate, klass=rng.integers(0, len(CLASSES), npk))
    return flow, sender, pp


@pytest.mark.parametrize("npk,flows,spread,gap_rate", [
    (1, 1, 10, 0.0),  # one packet: n = 1
    (2, 1, 3, 0.0),  # n = 2, values that tie and halves to round (negative too)
    (40, 3, 5, 0.5),  # groups all in gaps (n = 0)
    (3000, 50, 10 ** 9, 0.1),
    (3000, 400, 7, 0.0),  # many ties
], ids=["n1", "n2", "gaps", "wide", "ties"])
def test_hop_stats_synthetic_match_per_flow(npk: int, flows: int, spread: int,
                                            gap_rate: float) -> None:
    rng = np.random.default_rng(npk + flows)
    for _ in range(5):
        flow, sender, pp = _points(rng, npk, flows, spread, gap_rate)
        rows = np.arange(npk)
        got = {f: list(t) for f, t in _hop_stats(rows, flow, sender, pp).items()}
        assert got == _reference_hops(flow, sender, pp)
        # a subset of the rows (the chunks stats_by_flow makes)
        some = rows[flow < flows // 2]
        got = {f: list(t) for f, t in _hop_stats(some, flow, sender, pp).items()}
        want = _reference_hops(flow[some], sender[some], PacketPoints(
            pp.points[some], pp.hops[some], pp.has_hop[some], pp.gap[some], pp.klass[some]))
        assert got == want


def test_hop_stats_synthetic_no_rows() -> None:
    flow, sender, pp = _points(np.random.default_rng(0), 5, 2, 10, 0.0)
    assert _hop_stats(np.zeros(0, dtype=np.int64), flow, sender, pp) == {}


@pytest.mark.parametrize("seed,groups,spread", [(1, 1, 5), (2, 6, 20), (3, 40, 1000),
                                                (4, 5, 1 << 60)])
def test_union_lengths_synthetic(seed: int, groups: int, spread: int) -> None:
    rng = np.random.default_rng(seed)
    for n in (0, 1, 2, 7, 300):
        group = rng.integers(-1, groups, n)
        lo = rng.integers(0, spread, n)
        hi = lo + rng.integers(-3, max(spread // 4, 4), n)  # some empty or reversed
        want = [sum(b - a for a, b in union([(int(x), int(y)) for g, x, y
                                             in zip(group, lo, hi, strict=True) if g == k]))
                for k in range(groups)]
        assert union_lengths(group, lo, hi, groups) == want


def test_union_lengths_synthetic_touching_and_nested() -> None:
    group = np.array([0, 0, 0, 1, 1, 1])
    lo = np.array([0, 10, 2, 5, 5, 6])
    hi = np.array([10, 20, 3, 5, 9, 7])
    assert union_lengths(group, lo, hi, 3) == [20, 4, 0]


@pytest.mark.parametrize("seed,groups", [(1, 1), (2, 8), (3, 100)])
def test_message_sums_and_distinct_counts_synthetic(seed: int, groups: int) -> None:
    rng = np.random.default_rng(seed)
    for n in (0, 1, 2, 500):
        group = rng.integers(-1, groups, n)
        count = rng.integers(-5, 1 << 40, n)
        has = rng.random(n) < 0.8
        sums = message_sums(group, count, has, groups)
        for k in range(groups):
            counts = [int(c) if h else None for g, c, h in zip(group, count, has, strict=True)
                      if g == k]
            assert sums[k] == (len(counts), sum(c for c in counts if c is not None and c > 0),
                               sum(c is not None and c < 0 for c in counts),
                               sum(c is None for c in counts))
        value = rng.integers(0, 20, n)
        real = group >= 0
        got = distinct_counts(group[real], value[real], groups)
        assert got == [len({int(v) for g, v in zip(group, value, strict=True) if g == k})
                       for k in range(groups)]
    wide = distinct_counts(np.array([0, 0, 1]), np.array([0, 1 << 61, 1 << 61]), 2)
    assert wide == [2, 1]
