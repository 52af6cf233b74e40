"""The array kernels of the columnar --stats against the one-at-a-time code
they stand in for, on random inputs (empty groups, ties, touching, empty
and overlapping ranges, values too wide to pack): interval stabbing and
range runs (columnar/stabbing.py), stack pairing (step_table.stack_matches)
and pass 1's union of links (links.Links._union)."""

from __future__ import annotations

import numpy as np

from tracer.timeline.columnar.byte_table import union
from tracer.timeline.columnar.latency_table import stabbing_min
from tracer.timeline.columnar.links import Links
from tracer.timeline.columnar.stabbing import merged_runs, stabbing_min_grouped
from tracer.timeline.columnar.step_table import stack_matches


def test_stabbing_min_grouped_is_stabbing_min_per_group() -> None:
    rng = np.random.default_rng(1)
    for trial in range(400):
        n, m, groups = int(rng.integers(0, 30)), int(rng.integers(0, 30)), int(rng.integers(1, 5))
        wide = 1 << 36 if trial % 7 == 0 else 0  # past the packed keys: group by group
        group = rng.integers(0, groups, n)
        if trial % 3 == 0:  # disjoint ranges: the array path alone
            lo = np.arange(n, dtype=np.int64) * 20 + wide
            hi = lo + rng.integers(0, 20, n)
        else:
            lo = rng.integers(0, 50, n) + wide
            hi = lo + rng.integers(-2, 12, n)
        order, payload = rng.permutation(n), rng.integers(0, 1000, n)
        q_group, q = rng.integers(0, groups, m), rng.integers(0, 60, m) + wide
        got = stabbing_min_grouped(group, lo, hi, order, payload, q_group, q)
        for k in range(m):
            mine = [(int(lo[i]), int(hi[i]), int(order[i]), int(payload[i]))
                    for i in range(n) if group[i] == q_group[k]]
            assert got[k] == stabbing_min(mine, [int(q[k])])[0], trial


def test_merged_runs_is_union() -> None:
    rng = np.random.default_rng(2)
    for trial in range(400):
        n, groups = int(rng.integers(0, 30)), int(rng.integers(1, 5))
        group = rng.integers(-1, groups, n)
        lo = rng.integers(0, 50, n)
        hi = lo + rng.integers(-2, 12, n)
        has, one, low, high = merged_runs(group, lo, hi, groups)
        for g in range(groups):
            runs = union([(int(lo[i]), int(hi[i])) for i in range(n) if group[i] == g])
            assert has[g] == bool(runs), trial
            if runs:
                assert (one[g], low[g], high[g]) == (len(runs) == 1, runs[0][0], runs[-1][1])


def test_stack_matches_is_a_stack_per_group() -> None:
    rng = np.random.default_rng(3)
    for trial in range(2000):
        m, groups = int(rng.integers(0, 40)), int(rng.integers(1, 4))
        group = np.sort(rng.integers(0, groups, m))
        push = rng.random(m) < rng.random()
        stacks: dict[int, list[int]] = {}
        want = {}
        for i in range(m):
            if push[i]:
                stacks.setdefault(int(group[i]), []).append(i)
            elif stacks.get(int(group[i])):
                want[stacks[int(group[i])].pop()] = i
        pushed, popping = stack_matches(group, push)
        assert dict(zip(pushed.tolist(), popping.tolist(), strict=True)) == want, trial


def test_union_of_links_is_union_find() -> None:
    rng = np.random.default_rng(4)
    for trial in range(300):
        links = Links(lambda name: None)
        size = int(rng.integers(1, 60))
        links._new(size)
        parent = list(range(size))
        for _ in range(int(rng.integers(1, 4))):  # batches
            k = int(rng.integers(0, 40))
            a, b = rng.integers(0, size, k), rng.integers(0, size, k)
            links._union(a.astype(np.int64), b.astype(np.int64))
            for x, y in zip(a.tolist(), b.tolist(), strict=True):
                rx, ry = _find(parent, x), _find(parent, y)
                if rx != ry:
                    parent[max(rx, ry)] = min(rx, ry)
        roots, _ = links.groups()
        assert roots.tolist() == [_find(parent, x) for x in range(size)], trial


def _find(parent: list[int], x: int) -> int:
    while parent[x] != x:
        x = parent[x]
    return x
