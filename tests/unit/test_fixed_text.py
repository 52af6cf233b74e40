"""viz/fixed_text.py's rows against Python's own formatting of the same
cells."""

from __future__ import annotations

import numpy as np
import pytest

from viz.fixed_text import lines, literal, number_widths, numbers, table_runs, words


@pytest.mark.parametrize("width", [1, 2, 5, 9, 10, 13, 18])
def test_numbers_are_percent_d(width: int) -> None:
    rng = np.random.default_rng(width)
    top = 10 ** width
    values = np.concatenate([[0, 1, 9, top - 1, top // 10, max(top // 10 - 1, 0)],
                             rng.integers(0, top, 500), rng.integers(0, min(100, top), 50)])
    got = numbers(values, width)
    assert got.shape == (len(values), width)
    assert [bytes(r).decode() for r in got] == [f"%{width}d" % v for v in values.tolist()]


def test_number_widths_are_str_lengths() -> None:
    values = np.array([0, 1, 9, 10, 99, 100, 12345, 10 ** 17, 10 ** 18 - 1, 10 ** 18])
    assert number_widths(values).tolist() == [len(str(v)) for v in values.tolist()]


def test_words_lines_and_literals() -> None:
    texts = ("data", "ack", "control", "a much longer text")  # the last one never used
    codes = np.array([2, 0, 1, 1, 2])
    rows = [words(codes, texts, 7), literal(5, " | "), numbers(np.arange(5) * 37, 3)]
    got = lines(rows, [0, 2, 2, 5])
    want = [f"{texts[c]:<7} | {n:3d}" for c, n in zip(codes.tolist(), range(0, 185, 37),
                                                       strict=True)]
    assert got == ["\n".join(want[:2]), "", "\n".join(want[2:])]


def test_lines_cut_a_last_column_off_some_rows() -> None:
    marks = np.array([True, False, False, True, False])
    rows = [numbers(np.arange(5), 2), literal(5, "  gap")]
    got = lines(rows, [0, 1, 3, 3, 5], cut=np.where(marks, 0, 5))
    want = [f"{i:2d}" + ("  gap" if g else "") for i, g in enumerate(marks.tolist())]
    assert got == [want[0], "\n".join(want[1:3]), "", "\n".join(want[3:])]


def test_table_runs_cover_each_kind_s_tables_in_runs() -> None:
    kind_of = np.array([0, 1, 0, 0, 1, 0])
    first = np.array([0, 3, 5, 105, 106, 110])  # table t's rows from first[t]
    count = np.array([3, 2, 100, 1, 4, 2])
    got = list(table_runs(kind_of, 2, first, count, rows=50))
    assert [(k, m.tolist()) for k, m, _, _ in got] == [(0, [0]), (0, [2]), (0, [3, 5]),
                                                       (1, [1, 4])]
    for _, members, at, bounds in got:  # each table's rows, in order, at its bounds
        for j, t in enumerate(members.tolist()):
            assert at[bounds[j]:bounds[j + 1]].tolist() == list(range(first[t],
                                                                      first[t] + count[t]))
