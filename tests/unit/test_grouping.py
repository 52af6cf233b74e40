"""grouping.factorize and run_numbers against plain Python on random keys."""

from __future__ import annotations

import numpy as np
import pytest

from tracer.timeline.columnar.grouping import (
    _HASH_FROM,
    _RADIX_FROM,
    _dense_ids,
    distinct,
    factorize,
    factorize_firsts,
    first_index,
    run_numbers,
    sort_order,
    stable_argsort,
)


def _factorize_loop(*cols: np.ndarray) -> tuple[list[int], int]:
    rows = list(zip(*(c.tolist() for c in cols), strict=True))
    rank = {key: i for i, key in enumerate(sorted(set(rows)))}
    return [rank[key] for key in rows], len(rank)


def _column(rng: np.random.Generator, n: int, kind: int) -> np.ndarray:
    if kind == 0:  # few values, in runs
        return np.repeat(rng.integers(0, 5, n), rng.integers(1, 4, n))[:n]
    if kind == 1:  # 48-bit values (endpoints)
        return rng.integers(0, 1 << 48, n)
    if kind == 2:  # negative and positive
        return rng.integers(-(1 << 40), 1 << 40, n)
    if kind == 3:  # uint64 spanning more than int64 holds
        return rng.integers(0, 1 << 64, n, dtype=np.uint64, endpoint=False)
    if kind == 4:  # int32 from its lowest to its highest
        return rng.choice(np.array([-(1 << 31), -1, 0, (1 << 31) - 1], dtype=np.int32), n)
    return rng.integers(0, 1 << 62, n)  # 62 bits: two such columns need the lexsort


@pytest.mark.parametrize("seed", range(40))
def test_factorize_matches_sorted_tuples(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300 if seed % 4 else 3000))  # both sides of _HASH_FROM
    ncols = int(rng.integers(1, 7))
    pool = [_column(rng, n, int(rng.integers(0, 6))) for _ in range(ncols)]
    # repeated rows (runs and far apart), as events of one flow
    rows = rng.integers(0, max(1, n // 3), n) if seed % 2 else np.sort(rng.integers(0, n, n))
    cols = [c[rows] for c in pool]
    got, count = factorize(*cols)
    want, want_count = _factorize_loop(*cols)
    assert got.dtype == np.int64
    assert got.tolist() == want
    assert count == want_count
    ids, n, firsts = factorize_firsts(*cols)
    assert ids.tolist() == want and n == want_count
    assert firsts.tolist() == first_index(got, count).tolist()


@pytest.mark.parametrize("dtype", [np.int64, np.uint64, np.int32, np.uint16, np.int8, np.bool_])
def test_dense_ids_are_np_unique_inverse(dtype: type) -> None:
    rng = np.random.default_rng(7)
    for n in (1, _HASH_FROM - 1, _HASH_FROM, 5000):
        key = rng.integers(0, 2 if dtype is np.bool_ else 100, n).astype(dtype)
        ids, count = _dense_ids(key)
        _, want = np.unique(key, return_inverse=True)
        assert ids.dtype == np.int64
        assert ids.tolist() == want.tolist()
        assert count == len(np.unique(key))


@pytest.mark.parametrize("kind", range(6))
def test_distinct_is_sorted_set(kind: int) -> None:
    rng = np.random.default_rng(kind)
    for n in (0, 1, 2, 300, 5000):
        col = _column(rng, n, kind)
        got = distinct(col)
        assert got.dtype == col.dtype
        assert got.tolist() == sorted(set(col.tolist()))


def test_dense_ids_of_a_strided_key() -> None:
    """A key that is a view with strides (a column of a 2-d array) is
    hashed as its values, not as its buffer's."""
    table = np.arange(2 * _HASH_FROM * 3, dtype=np.int64).reshape(-1, 2) % 7
    ids, count = _dense_ids(table[:, 1])
    _, want = np.unique(table[:, 1], return_inverse=True)
    assert ids.tolist() == want.tolist() and count == len(set(table[:, 1].tolist()))


def test_factorize_empty() -> None:
    got, count = factorize(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32))
    assert got.tolist() == [] and count == 0


@pytest.mark.parametrize("seed", range(10))
def test_run_numbers(seed: int) -> None:
    rng = np.random.default_rng(seed)
    starts = rng.random(int(rng.integers(0, 500))) < rng.random()
    got = run_numbers(starts)
    assert got.dtype == np.int64
    assert got.tolist() == (np.cumsum(starts.astype(np.int64)) - 1).tolist()


@pytest.mark.parametrize("seed", range(40))
def test_sort_order_is_lexsort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    cols = [_column(rng, n, int(rng.integers(0, 6))) for _ in range(int(rng.integers(1, 5)))]
    if seed % 3 == 0:  # bool and negated columns, as callers pass them
        cols.append(rng.random(n) < 0.5)
        cols[0] = -cols[0].astype(np.int64)
    assert sort_order(*cols).tolist() == np.lexsort(cols[::-1]).tolist()
    assert sort_order(*cols).tolist() == sorted(
        range(n), key=lambda i: tuple(int(c[i]) for c in cols))


@pytest.mark.parametrize("seed", range(30))
def test_sort_order_is_lexsort_on_long_columns(seed: int) -> None:
    """Past _RADIX_FROM rows: keys narrow enough for the radix sort, a last
    column in row order (times) left out, a wide first column of few
    values (contexts) sorted by its ids."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(_RADIX_FROM, 4 * _RADIX_FROM))
    cols = [_column(rng, n, int(rng.integers(0, 6))) for _ in range(int(rng.integers(1, 4)))]
    if seed % 2:
        cols[0] = rng.choice(rng.integers(0, 1 << 50, 7), n)  # few wide values
    if seed % 3:
        cols.append(np.sort(rng.integers(0, 1 << 60, n)))  # ascending, with ties below
        cols[-1][n // 2:n // 2 + 3] = cols[-1][n // 2]
    want = np.lexsort(cols[::-1]).tolist()
    assert sort_order(*cols).tolist() == want
    assert sort_order(*cols, few=True).tolist() == want


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint16,
                                   np.uint32, np.uint64])
@pytest.mark.parametrize("span", [3, 255, (1 << 16) - 1, 1 << 16, 1 << 20])
def test_stable_argsort_is_numpy_stable(dtype: type, span: int) -> None:
    rng = np.random.default_rng(span)
    info = np.iinfo(dtype)
    span = min(span, int(info.max) - int(info.min))
    low = int(info.min) if info.min < 0 else int(info.max) - span
    offsets = rng.integers(0, span + 1, 5 * _RADIX_FROM).tolist()
    key = np.array([low, low + span, *[low + x for x in offsets]], dtype=dtype)  # whole span
    got = stable_argsort(key)
    assert got.tolist() == np.argsort(key, kind="stable").tolist()
