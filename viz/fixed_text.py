"""Rows of fixed-width text made by numpy, many at once: each cell a block
of ASCII bytes (a row per line), the blocks side by side, the lines cut
out as text. For tables whose rows share their widths: thousands of small
tables of a `replay --stats` text, grouped by their widths, go through a
few array operations instead of a `%` of each of their cells (~1.4 M cells
at 1 M events)."""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

_SPACE, _ZERO = ord(" "), ord("0")


def words(codes: np.ndarray, texts: Sequence[str], width: int) -> np.ndarray:
    """texts[code] of each row, left-aligned in `width` bytes (ASCII; the
    texts of the codes given no wider than `width`: the others are cut)."""
    table = np.frombuffer("".join(t.ljust(width)[:width] for t in texts).encode("ascii"),
                          dtype=np.uint8).reshape(len(texts), width)
    out: np.ndarray = table[codes]
    return out


def numbers(values: np.ndarray, width: int) -> np.ndarray:
    """Each value (0 <= value < 10**width) right-aligned in `width` bytes,
    as "%{width}d" prints it."""
    out = np.full((width, len(values)), _SPACE, dtype=np.uint8)  # a place a row, then .T
    if not len(values):
        return out.T
    v: np.ndarray[Any, np.dtype[np.signedinteger[Any]]] = np.array(
        values, dtype=np.int32 if width <= 9 else np.int64)  # int32: quicker //
    places = min(width, int(number_widths(v.max(keepdims=True))[0]))
    for col in range(width - 1, width - 1 - places, -1):
        digit = v % 10 + _ZERO
        out[col] = digit if col == width - 1 else np.where(v > 0, digit, _SPACE)
        v //= 10
    return out.T


def number_widths(values: np.ndarray) -> np.ndarray:
    """len(str(value)) of each value (0 <= value < 10**18)."""
    out: np.ndarray = np.searchsorted(_POWERS, values, side="right") + 1
    return out


_POWERS = 10 ** np.arange(1, 19, dtype=np.int64)


def literal(rows: int, text: str) -> np.ndarray:
    """The same ASCII text on every row."""
    return np.broadcast_to(np.frombuffer(text.encode("ascii"), dtype=np.uint8),
                           (rows, len(text)))


def lines(blocks: Sequence[np.ndarray], bounds: Sequence[int],
          cut: np.ndarray | None = None) -> list[str]:
    """The rows (the blocks side by side) as text, one string per run of
    rows between consecutive `bounds` (its lines joined by newlines);
    `cut`: bytes taken off each row's end (a last column some rows have)."""
    rows = len(blocks[0])
    grid = np.concatenate([*blocks, literal(rows, "\n")], axis=1)
    width = grid.shape[1]
    if cut is None or not cut.any():
        text = codecs.ascii_decode(grid.data)[0]  # from the array's memory: no bytes copy
        return [text[a * width:b * width - 1]
                for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    keep = np.ones(grid.shape, dtype=bool)
    for c in np.unique(cut[cut > 0]).tolist():  # the cut bytes, before the newline
        keep[cut == c, width - 1 - c:width - 1] = False
    text = codecs.ascii_decode(grid[keep].data)[0]
    ends = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(width - cut, out=ends[1:])
    at = ends[np.asarray(bounds)].tolist()
    return [text[a:b - 1] if b > a else "" for a, b in zip(at[:-1], at[1:], strict=True)]


def table_runs(kind_of: np.ndarray, kinds: int, first: np.ndarray, count: np.ndarray,
               rows: int = 1 << 12) -> Iterator[tuple[int, np.ndarray, np.ndarray, list[int]]]:
    """Tables of `kinds` kinds (the same widths: kind_of[t]), table t's rows
    first[t] .. first[t] + count[t] - 1: per kind, runs of its tables of
    about `rows` rows each (a table alone when bigger), as (kind, the run's
    tables, their rows one after another, each table's bounds among them).
    Made a run at a time, the rows' grids and texts stay small (a process
    keeps its heap's high mark)."""
    for k in range(kinds):
        of_kind = np.flatnonzero(kind_of.reshape(-1) == k)
        ends = np.cumsum(count[of_kind])
        a = 0
        while a < len(of_kind):
            base = int(ends[a - 1]) if a else 0
            b = max(int(np.searchsorted(ends, base + rows, side="right")), a + 1)
            members = of_kind[a:b]
            n = count[members]
            bounds = np.zeros(len(n) + 1, dtype=np.int64)
            np.cumsum(n, out=bounds[1:])
            at = np.arange(bounds[-1]) + np.repeat(first[members] - bounds[:-1], n)
            yield k, members, at, bounds.tolist()
            a = b
