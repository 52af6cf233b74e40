"""Per-group sums and slices of rows split by a group key (a flow's
direction, a (flow, side, op) message group): the array kernels --stats
counts bytes, segments and messages with, and the per-group lists its
sequential rules walk."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from tracer.timeline.columnar.grouping import distinct, sort_order


class ListGroups:
    """Rows split by a group key (sorted by key, then by `within`), each
    column as a Python list, sliced per group without numpy calls."""

    def __init__(self, group: np.ndarray, within: np.ndarray, groups: int, /,
                 **cols: np.ndarray) -> None:
        keep = group >= 0
        group, within = group[keep], within[keep]
        order = sort_order(group, within)
        self.bounds: list[int] = np.searchsorted(group[order], np.arange(groups + 1)).tolist()
        self.cols: dict[str, list[Any]] = {name: col[keep][order].tolist()
                                           for name, col in cols.items()}

    def get(self, group: int, name: str) -> list[Any]:
        return self.cols[name][self.bounds[group]:self.bounds[group + 1]]


class MessageSums(NamedTuple):
    """The messages of a (flow, side, op) group: how many, the sum of their
    positive byte counts, how many failed (a negative count) and how many
    have no count."""

    calls: int
    positive: int
    failed: int
    unknown: int


def message_sums(group: np.ndarray, count: np.ndarray, has_count: np.ndarray, groups: int
                 ) -> list[MessageSums]:
    """MessageSums of each group 0..groups-1 (rows with group -1 in none)."""
    ok = group >= 0
    grp, cnt, has = group[ok], count[ok], has_count[ok]
    # int64 sums: np.bincount's float weights are exact only below 2**53
    positive = np.zeros(groups, dtype=np.int64)
    np.add.at(positive, grp, np.where(has & (cnt > 0), cnt, 0))
    cols = (np.bincount(grp, minlength=groups)[:groups], positive,
            np.bincount(grp[has & (cnt < 0)], minlength=groups)[:groups],
            np.bincount(grp[~has], minlength=groups)[:groups])
    return [MessageSums._make(row) for row in zip(*(c.tolist() for c in cols), strict=True)]


def union_lengths(group: np.ndarray, lo: np.ndarray, hi: np.ndarray, groups: int) -> list[int]:
    """Per group 0..groups-1, the bytes covered by its ranges [lo, hi)
    (byte_table.union's total; ranges of no bytes and group -1 left out)."""
    ok = (group >= 0) & (hi > lo)
    grp, lo, hi = group[ok], lo[ok], hi[ok]
    order = np.lexsort((hi, lo, grp))
    grp, lo, hi = grp[order], lo[order], hi[order]
    # the highest end among the group's earlier ranges (-1: none)
    reach = np.full(len(grp), -1, dtype=np.int64)
    if len(grp):
        base = int(lo.min())
        span = int(hi.max()) - base + 2
        if span * (groups + 1) < (1 << 62):
            run = np.maximum.accumulate(grp * span + (hi - base + 1))
            before = np.r_[np.int64(-1), run[:-1]]
            same = np.r_[False, grp[1:] == grp[:-1]]
            reach = np.where(same, before - grp * span + base - 1, -1)
        else:  # values too wide to stack groups in an int64: group by group
            for a, b in _runs(grp):
                reach[a + 1:b] = np.maximum.accumulate(hi[a:b])[:-1]
    new = np.where(reach >= 0, np.maximum(hi - np.maximum(lo, reach), 0), hi - lo)
    out = np.zeros(groups, dtype=np.int64)
    np.add.at(out, grp, new)
    lengths: list[int] = out.tolist()
    return lengths


def distinct_counts(group: np.ndarray, value: np.ndarray, groups: int) -> list[int]:
    """Per group 0..groups-1, how many distinct values its rows hold."""
    if not len(group):
        return [0] * groups
    width = int(value.max()) - int(value.min()) + 1
    if width * (groups + 1) < (1 << 62):
        keys = distinct(group * width + (value - value.min()))
        first = keys // width
    else:
        first = np.unique(np.stack((group, value), axis=1), axis=0)[:, 0]
    counts: list[int] = np.bincount(first, minlength=groups)[:groups].tolist()
    return counts


def _runs(sorted_keys: np.ndarray) -> list[tuple[int, int]]:
    cut = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1], True]).tolist()
    return list(zip(cut[:-1], cut[1:], strict=True))
