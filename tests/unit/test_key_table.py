"""key_table.KeyTable against a dict, batch after batch of random keys
(synthetic keys: one to three columns, signed, unsigned 64-bit, repeated)."""

from __future__ import annotations

import numpy as np
import pytest

from tracer.timeline.columnar.key_table import KeyTable, row_keys


def _columns(rng: np.random.Generator, n: int, width: int) -> list[np.ndarray]:
    kinds = [rng.integers(-5, 5, n),  # few values, negative too
             rng.integers(0, 1 << 64, n, dtype=np.uint64, endpoint=False),  # kernel pointers
             rng.integers(0, 1 << 48, n).astype(np.int64)]
    return kinds[:width] if width < 3 else kinds


@pytest.mark.parametrize("width", [1, 2, 3])
@pytest.mark.parametrize("seed", range(6))
def test_key_table_is_a_dict(width: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pool = _columns(rng, 400, width)
    table = KeyTable("node", "at")
    want: dict[tuple[int, ...], tuple[int, int]] = {}
    for batch in range(12):
        rows = rng.integers(0, 400, int(rng.integers(0, 120)))
        cols = [col[rows] for col in pool]
        tuples = list(zip(*(c.tolist() for c in cols), strict=True))
        keys = row_keys(*cols)
        found = table.find(keys)
        for i, t in enumerate(tuples):
            assert (found[i] >= 0) == (t in want)
            if t in want:
                assert (table.values["node"][found[i]], table.values["at"][found[i]]) == want[t]
        # distinct keys of the batch, first occurrence each
        first = {t: i for i, t in reversed(list(enumerate(tuples)))}
        at = np.array(sorted(first.values()), dtype=np.int64)
        node = rng.integers(0, 1 << 40, len(at))
        stamp = np.full(len(at), batch, dtype=np.int64)
        if batch % 2:
            table.set(keys[at], node=node, at=stamp)
            for j, i in enumerate(at.tolist()):
                want[tuples[i]] = (int(node[j]), batch)
        else:
            new = found[at] < 0
            table.add(keys[at][new], node=node[new], at=stamp[new])
            for j, i in enumerate(at.tolist()):
                if new[j]:
                    want[tuples[i]] = (int(node[j]), batch)
        assert len(table) == len(want)


def test_row_keys_equal_rows_equal_keys() -> None:
    a = np.array([1, -1, 1, 1], dtype=np.int64)
    b = np.array([2, 2, 2, 3], dtype=np.uint64)
    keys = row_keys(a, b)
    assert keys[0] == keys[2]
    assert keys[0] != keys[1] and keys[0] != keys[3]


def test_empty_table_finds_nothing() -> None:
    table = KeyTable("node")
    assert table.find(row_keys(np.array([1, 2]))).tolist() == [-1, -1]
    table.add(row_keys(np.zeros(0, dtype=np.int64)), node=np.zeros(0, dtype=np.int64))
    assert len(table) == 0
