"""Group-by helpers on numpy columns (stable: ties keep event order)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pyarrow as pa


def factorize(*cols: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense group ids (0..n-1, in sorted key order) for the rows' key tuples.

    Events of one flow or context come in runs: only each run's first row is
    sorted. Keys that fit in 63 bits together are packed into one integer
    (one sort); wider keys are sorted column by column (lexsort)."""
    ids, count, _ = _factorize(cols, False)
    return ids, count


def factorize_firsts(*cols: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """factorize, and each group's first row (first_index's): found among
    the runs' first rows, not among all rows."""
    ids, count, firsts = _factorize(cols, True)
    assert firsts is not None
    return ids, count, firsts


def _factorize(cols: tuple[np.ndarray, ...], firsts: bool
               ) -> tuple[np.ndarray, int, np.ndarray | None]:
    n = len(cols[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0, np.zeros(0, dtype=np.int64)
    same = np.ones(n - 1, dtype=bool)
    for col in cols:
        same &= col[1:] == col[:-1]
    at = np.flatnonzero(np.r_[True, ~same])
    heads = [col[at] for col in cols]
    packed = _pack(heads)
    if packed is not None:
        head_ids, count = _dense_ids(packed)
    else:
        order = np.lexsort(heads[::-1])
        change = np.zeros(len(order), dtype=bool)
        change[0] = True
        for col in heads:
            h = col[order]
            change[1:] |= h[1:] != h[:-1]
        head_ids = np.empty(len(order), dtype=np.int64)
        head_ids[order] = run_numbers(change)
        count = int(change.sum())
    first = None
    if firsts:
        first = np.full(count, n, dtype=np.int64)
        np.minimum.at(first, head_ids, at)
    if len(at) == n:
        return head_ids, count, first
    # each run's rows take its head's id
    return np.repeat(head_ids, np.diff(at, append=n)), count, first


def _dense_ids(key: np.ndarray) -> tuple[np.ndarray, int]:
    """np.unique(key, return_inverse=True)'s inverse and size. Arrow's
    hash table, then a sort of the distinct keys alone: a part's keys (flows,
    contexts) are few beside its rows, and np.unique sorts every row
    (2-8x slower at 65 k rows, bench/README.md)."""
    if len(key) < _HASH_FROM:
        _, ids = np.unique(key, return_inverse=True)
        return ids, int(ids.max()) + 1
    if key.dtype.kind == "b":
        key = key.view(np.uint8)
    encoded = _encode(_arrow(key))
    values = encoded.dictionary.to_numpy()
    rank = np.empty(len(values), dtype=np.int64)
    rank[np.argsort(values)] = np.arange(len(values))
    return rank[encoded.indices.to_numpy()], len(values)


_HASH_FROM = 256  # rows; below, np.unique is as fast


def _arrow(values: np.ndarray) -> pa.Array:
    """A numeric array as Arrow's, zero-copy. Not pa.array: its check for a
    masked array imports numpy.ma (~20 ms in every process)."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values),
                                 [None, pa.py_buffer(values)])


def _encode(arr: pa.Array) -> pa.DictionaryArray:
    # pyarrow._compute's call: Array.dictionary_encode imports pyarrow.compute,
    # ~50 ms of wrappers made at import, in every process
    out: pa.DictionaryArray = _compute().call_function("dictionary_encode", [arr])
    return out


@functools.cache
def _compute() -> Any:
    import pyarrow._compute as compute

    return compute


def distinct(values: np.ndarray) -> np.ndarray:
    """np.unique(values) of a 1-d array, by a sort. numpy 2.3+'s np.unique
    hashes instead: 4-20x slower where most values differ (2 M distinct
    int64s: 2.3 s against 0.12 s here), and its check for a masked array
    imports numpy.ma (~20 ms in every process)."""
    out = np.sort(values)
    if len(out) > 1:
        keep = np.empty(len(out), dtype=bool)
        keep[0] = True
        np.not_equal(out[1:], out[:-1], out=keep[1:])
        out = out[keep]
    return out


def run_numbers(starts: np.ndarray) -> np.ndarray:
    """np.cumsum(starts) - 1 of a bool array, as int64: counted in int32
    first (numpy's bool to int64 accumulation is ~3x slower)."""
    if len(starts) < 1 << 31:
        out: np.ndarray = np.cumsum(starts, dtype=np.int32).astype(np.int64)
    else:
        out = np.cumsum(starts, dtype=np.int64)
    out -= 1
    return out


def sort_order(*cols: np.ndarray, few: bool = False) -> np.ndarray:
    """np.lexsort(cols[::-1]): rows by cols[0], then cols[1], ..., ties in
    row order. A last column already in row order is left out (the ties
    keep it); columns that fit in 63 bits together are packed into one key
    and sorted once (lexsort sorts once per column, by timsort). `few`:
    cols[0] has few distinct values (contexts), wide ones: sorted by its
    dense ids instead."""
    keys = list(cols)
    while len(keys) > 1 and ascending(keys[-1]):
        keys.pop()
    if few and len(keys[0]) >= _HASH_FROM:
        keys[0] = _dense_ids(keys[0])[0]
    if len(keys[0]):
        packed = _pack(keys)
        if packed is not None:
            return stable_argsort(packed)
    return np.lexsort(keys[::-1])


def ascending(col: np.ndarray) -> bool:
    """Whether the column never decreases from row to row."""
    return len(col) < 2 or not (col[1:] < col[:-1]).any()


def stable_argsort(key: np.ndarray) -> np.ndarray:
    """np.argsort(key, kind="stable"). An integer key spanning fewer than
    2**16 values (group and context ids) is sorted as uint16: numpy's radix
    sort, 3-15x its timsort of int64 at 65 k rows."""
    if len(key) >= _RADIX_FROM and key.dtype.kind in "iu" and key.dtype.itemsize > 2:
        lo = key.min()
        if int(key.max()) - int(lo) < 1 << 16:
            key = (key - lo).astype(np.uint16)
    out: np.ndarray = np.argsort(key, kind="stable")
    return out


_RADIX_FROM = 512  # rows; below, the two passes for the span cost more


def _pack(cols: list[np.ndarray]) -> np.ndarray | None:
    """The columns as one int64 key with the same order, when they fit."""
    if len(cols) == 1 and cols[0].dtype != np.uint64:
        return cols[0]
    key = np.zeros(len(cols[0]), dtype=np.int64)
    bits = 0
    for col in cols:
        if col.dtype.kind == "b":
            col = col.view(np.uint8)
        lo, hi = col.min(), col.max()
        width = (int(hi) - int(lo)).bit_length()
        bits += width
        if bits > 63:
            return None
        # signed columns widened first: col - lo may not fit their own type
        off = col.astype(np.int64) - lo if col.dtype.kind == "i" else (col - lo).astype(np.int64)
        key = (key << width) | off
    return key


def first_index(groups: np.ndarray, count: int) -> np.ndarray:
    """Per group id, the smallest row index holding it (-1 when empty)."""
    first = np.full(count, len(groups), dtype=np.int64)
    np.minimum.at(first, groups, np.arange(len(groups)))
    return np.where(first == len(groups), -1, first)


def previous_in_group(groups: np.ndarray) -> np.ndarray:
    """For each row, the previous row (by index) of the same group, or -1."""
    n = len(groups)
    order = stable_argsort(groups)  # ties in row order
    prev = np.full(n, -1, dtype=np.int64)
    same = groups[order][1:] == groups[order][:-1]
    prev[order[1:][same]] = order[:-1][same]
    return prev


def next_in_group(groups: np.ndarray) -> np.ndarray:
    """For each row, the next row (by index) of the same group, or -1."""
    n = len(groups)
    order = stable_argsort(groups)  # ties in row order
    nxt = np.full(n, -1, dtype=np.int64)
    same = groups[order][1:] == groups[order][:-1]
    nxt[order[:-1][same]] = order[1:][same]
    return nxt


def last_at_or_before(group_of_marks: np.ndarray, mark_pos: np.ndarray,
                      group_of_queries: np.ndarray, query_pos: np.ndarray) -> np.ndarray:
    """For each query, the index into the marks of the last mark of the same
    group whose position is <= the query's position, or -1.

    Positions are event indices (non-negative, below 2**40); groups dense ids."""
    scale = np.int64(1 << 40)
    mk = group_of_marks.astype(np.int64) * scale + mark_pos
    order = np.argsort(mk, kind="stable")
    sorted_keys = mk[order]
    qk = group_of_queries.astype(np.int64) * scale + query_pos
    at = np.searchsorted(sorted_keys, qk, side="right") - 1
    found = at >= 0
    ok = np.zeros(len(qk), dtype=bool)
    ok[found] = group_of_marks[order[at[found]]] == group_of_queries[found]
    return np.where(ok, order[np.maximum(at, 0)], -1)


def take_or(values: np.ndarray, idx: np.ndarray, default: int) -> np.ndarray:
    """values[idx] where idx >= 0, else default (values may be empty)."""
    out = np.full(len(idx), default, dtype=values.dtype if len(values) else np.int64)
    ok = idx >= 0
    if ok.any():
        out[ok] = values[idx[ok]]
    return out
