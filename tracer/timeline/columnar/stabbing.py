"""Interval queries on columns, many groups (flow directions) at once: a
group's intervals sorted by start, a running maximum of their ends, and
searchsorted on one packed (group, position) key. Values are byte
positions relative to a flow's ISN (below 2**SHIFT)."""

from __future__ import annotations

import numpy as np

from tracer.timeline.columnar.grouping import distinct, sort_order
from tracer.timeline.columnar.latency_table import stabbing_min

SHIFT = 35
LIMIT = np.int64(1 << SHIFT)


def fits(*cols: np.ndarray) -> bool:
    """The values can be packed with a group: in [0, 2**SHIFT)."""
    return all(not len(c) or (int(c.min()) >= 0 and int(c.max()) < LIMIT) for c in cols)


def merged_runs(group: np.ndarray, lo: np.ndarray, hi: np.ndarray, groups: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per group 0..groups-1 of its ranges [lo, hi) of some bytes (group -1
    and empty ranges left out): whether it has any, whether they merge into
    one run (byte_table.union gives one piece: touching ranges merge), the
    lowest start and the highest end (-1 without ranges)."""
    ok = (group >= 0) & (hi > lo)
    g, lo, hi = group[ok], lo[ok], hi[ok]
    order = sort_order(g, lo, hi)
    g, lo, hi = g[order], lo[order], hi[order]
    count = np.bincount(g, minlength=groups)[:groups]
    low = np.full(groups, -1, dtype=np.int64)
    high = np.full(groups, -1, dtype=np.int64)
    if not len(g):
        return count > 0, np.ones(groups, dtype=bool), low, high
    reach = np.maximum.accumulate(g * LIMIT + hi)  # the group's highest end so far
    same = np.r_[False, g[1:] == g[:-1]]
    gap = same & (lo > np.r_[np.int64(0), reach[:-1]] - g * LIMIT)
    firsts = np.flatnonzero(~same)
    low[g[firsts]] = lo[firsts]
    np.maximum.at(high, g, hi)
    return count > 0, np.bincount(g[gap], minlength=groups)[:groups] == 0, low, high


def stabbing_min_grouped(group: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                         order: np.ndarray, payload: np.ndarray, q_group: np.ndarray,
                         q: np.ndarray) -> np.ndarray:
    """latency_table.stabbing_min for each query q of group q_group against
    that group's intervals (lo, hi, order, payload): the payload of the
    interval holding q with the smallest order, -1. A group whose intervals
    overlap is answered by stabbing_min; in the others at most one holds q."""
    out = np.full(len(q), -1, dtype=np.int64)
    if not len(q):
        return out
    ok = hi > lo  # an interval of no bytes holds no position
    group, lo, hi, order, payload = group[ok], lo[ok], hi[ok], order[ok], payload[ok]
    if not len(group):
        return out
    if not fits(lo, hi, q):
        return _by_group(group, lo, hi, order, payload, q_group, q, distinct(q_group), out)
    srt = np.lexsort((lo, group))
    group, lo, hi, order, payload = group[srt], lo[srt], hi[srt], order[srt], payload[srt]
    keys = group * LIMIT + lo
    reach = np.maximum.accumulate(group * LIMIT + hi)
    same = np.r_[False, group[1:] == group[:-1]]
    overlap = same & (lo < np.r_[np.int64(0), reach[:-1]] - group * LIMIT)
    j = np.searchsorted(keys, q_group * LIMIT + q, side="right") - 1
    jj = np.maximum(j, 0)
    hit = (j >= 0) & (group[jj] == q_group) & (q < hi[jj])
    out[hit] = payload[jj[hit]]
    crowded = distinct(group[overlap])
    if len(crowded):
        _by_group(group, lo, hi, order, payload, q_group, q, crowded, out)
    return out


def _by_group(group: np.ndarray, lo: np.ndarray, hi: np.ndarray, order: np.ndarray,
              payload: np.ndarray, q_group: np.ndarray, q: np.ndarray, which: np.ndarray,
              out: np.ndarray) -> np.ndarray:
    """stabbing_min for the queries of the groups `which` (sorted), into out."""
    srt = np.argsort(group, kind="stable")
    at = np.searchsorted(group[srt], which)
    until = np.searchsorted(group[srt], which, side="right")
    q_srt = np.argsort(q_group, kind="stable")
    q_at = np.searchsorted(q_group[q_srt], which)
    q_until = np.searchsorted(q_group[q_srt], which, side="right")
    for a, b, qa, qb in zip(at.tolist(), until.tolist(), q_at.tolist(), q_until.tolist(),
                            strict=True):
        if qa == qb:
            continue
        rows, asked = srt[a:b], q_srt[qa:qb]
        intervals = list(zip(lo[rows].tolist(), hi[rows].tolist(), order[rows].tolist(),
                             payload[rows].tolist(), strict=True))
        out[asked] = stabbing_min(intervals, q[asked].tolist())
    return out
