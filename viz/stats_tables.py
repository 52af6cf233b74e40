"""The latency and per-packet tables of `replay --stats` (columnar path),
for a run of flows at once: the numbers of all their rows go through numpy
together (a trace of small flows has thousands of tables of ten to thirty
rows: numpy calls per table cost more than the rows); the tables whose
columns have the same widths are then made together as fixed-width rows of
bytes (viz/fixed_text.py), the microseconds printed as integers (whole and
tenth) instead of formatting floats.

The text is the row-at-a-time tables' (distribution_rows, per_packet_rows:
viz/stats_text.table_lines), byte for byte; a table with a negative or huge
value, or a latency row with no value (dashes), is made row at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import NamedTuple

import numpy as np

from tracer.timeline.columnar.latency_table import HOPS
from tracer.timeline.columnar.stats import CLASSES, ROLES, FlowPackets, HopTable
from viz.fixed_text import lines, literal, number_widths, numbers, table_runs, words
from viz.stats_text import GAP_MARK, _direction_of, distribution_lines, fmt_us, table_lines

NO_PACKET = "  per packet: no packet"

# Below this many ns a value's tenths of a microsecond are its integer
# rounding (the double ns / 1e3 is within 1e-3 us of the quotient).
_EXACT_BELOW = 1 << 50
# np.longdouble holds a double's 53 bits times 1000's 7 exactly (x86: 64)
_EXACT_PRODUCTS = np.finfo(np.longdouble).nmant >= 60


def tenths_of_us(ns: np.ndarray) -> np.ndarray:
    """fmt_us(ns) of each value (0 <= ns < 2**50) as an int of tenths of a
    us ("12.3": 123), without formatting floats. A value half-way between
    two tenths (50 ns past one) rounds as fmt_us rounds the double
    ns / 1e3: up if the double is above the quotient, down if below, to the
    even tenth if it is the quotient (e.g. 750 ns: 0.75 exactly, "0.8")."""
    ns = np.ascontiguousarray(ns, dtype=np.int64)
    tenths = (ns + 50) // 100
    flat = tenths.reshape(-1)  # a view: tenths is contiguous
    half = np.flatnonzero(ns.reshape(-1) % 100 == 50)
    if len(half):
        v = ns.reshape(-1)[half]
        down = (v - 50) // 100
        if _EXACT_PRODUCTS:
            x = (v / 1e3).astype(np.longdouble) * 1000  # exact
            exact = v.astype(np.longdouble)
            flat[half] = np.where(x > exact, down + 1,
                                  np.where(x < exact, down, down + down % 2))
        else:
            flat[half] = [int(fmt_us(int(x)).replace(".", "")) for x in v.tolist()]
    return tenths


def _bounds(counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Row bounds of each table, and the starts of the tables with rows
    (np.*.reduceat over them gives one value per such table)."""
    bounds = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=bounds[1:])
    some = np.array(counts) > 0
    return bounds, bounds[:-1][some]


class _Formats:
    """Format strings by their widths (small flows repeat them), bounded."""

    def __init__(self) -> None:
        self.cache: dict[tuple[object, ...], str] = {}

    def get(self, key: tuple[object, ...], make: object) -> str:
        got = self.cache.get(key)
        if got is None:
            if len(self.cache) >= 1 << 14:
                self.cache.clear()
            got = self.cache[key] = make() if callable(make) else str(make)
        return got


_FORMATS = _Formats()


def distribution_texts(tables: Sequence[HopTable]) -> list[list[str]]:
    """distribution_rows of each table."""
    counts = [len(t) for t in tables]
    bounds, starts = _bounds(counts)
    if not len(starts):
        return [distribution_rows(t) for t in tables]
    v = np.concatenate([t.values for t in tables if len(t)])
    spread = v[:, 4:8]
    bad = (v[:, 3] == 0) | (spread.min(axis=1) < 0) | (spread.max(axis=1) >= _EXACT_BELOW)
    tenths = tenths_of_us(np.where(bad[:, None], 0, spread))
    whole = tenths // 10
    # per table with rows: its columns' widths (as the row-at-a-time
    # table_lines gives them: the widest cell or the head's)
    heads = _DISTRIBUTION_HEAD
    head_len = np.array([len(h) for h in heads])
    widths = np.stack([
        np.full(len(starts), _DIRECTION_CELL_LEN),
        np.maximum.reduceat(_CLASS_LEN[v[:, 1]], starts),
        np.maximum.reduceat(_HOP_LEN[v[:, 2]], starts),
        number_widths(np.maximum.reduceat(v[:, 3], starts)),
        *[number_widths(np.maximum.reduceat(whole[:, j], starts)) + 2 for j in range(4)],
        number_widths(np.maximum.reduceat(v[:, 8], starts))], axis=1)
    widths = np.maximum(widths, head_len)
    fast = np.maximum.reduceat(bad, starts) == 0
    out: list[list[str]] = [distribution_rows(t) if not n else [] for t, n in
                            zip(tables, counts, strict=True)]
    with_rows = np.flatnonzero(np.array(counts) > 0)
    for i in with_rows[~fast].tolist():
        out[i] = distribution_rows(tables[i])
    # the tables by their widths: each group's rows made at once
    kinds, kind_of = np.unique(widths[fast], axis=0, return_inverse=True)
    table_of, first, count = with_rows[fast], starts[fast], np.diff(bounds)[with_rows[fast]]
    widths_of = kinds.tolist()
    for k, members, at, ends in table_runs(kind_of, len(kinds), first, count):
        w = widths_of[k]
        head = _FORMATS.get(("dh", *w), lambda w=w: ("  ".join(
            f"%{'-' if c < 3 else ''}{x}s" for c, x in enumerate(w)) % heads).rstrip())
        gap, point = literal(len(at), "  "), literal(len(at), ".")
        blocks = [words(v[at, 0], _DIRECTION_CELL_AT, w[0]), gap,
                  words(v[at, 1], _CLASS_AT, w[1]), gap,
                  words(v[at, 2], _HOP_AT, w[2]), gap, numbers(v[at, 3], w[3])]
        for j in range(4):
            blocks += [gap, numbers(whole[at, j], w[4 + j] - 2), point,
                       numbers(tenths[at, j] % 10, 1)]
        blocks += [gap, numbers(v[at, 8], w[8])]
        for i, text in zip(table_of[members].tolist(), lines(blocks, ends),
                           strict=True):
            out[i] = [head, text]
    return out


class PacketTable(NamedTuple):
    """A flow's per-packet table but its first column (each row's step
    number and label, printed only once the trace's step numbers are
    known): the head's and each row's cells from the direction on, and
    each row's step (the rows' part's numbering) and label."""

    head: str
    rows: str  # one line a row
    # Packed (a big trace's pieces wait pickled in a file: a list of ints
    # and one of strings cost an object a row to unpickle at the end).
    steps: bytes  # int64s
    labels: str  # one a line


def _packet_table(head: str, rows: str, steps: np.ndarray, labels: list[str]) -> PacketTable:
    return PacketTable(head, rows, steps.astype(np.int64).tobytes(), "\n".join(labels))


def packet_lines(table: PacketTable | None,
                 number: Sequence[int] | np.ndarray | None = None) -> str:
    """The per-packet table's text, each row's step numbered by `number`
    (step -> the trace's number; None: as it is)."""
    if table is None:
        return NO_PACKET
    steps = np.frombuffer(table.steps, dtype=np.int64)
    if isinstance(number, np.ndarray):
        steps = number[steps]  # not np.take: its wrapper costs as much as the rows
    elif number is not None:
        steps = np.take(number, steps)
    labels = table.labels.split("\n")
    n = len(labels)
    titles = (_FORMATS.get(("t", n), lambda n=n: "\n".join(["  #%d %s"] * n))
              % tuple(chain.from_iterable(zip(steps.tolist(), labels, strict=True)))
              ).split("\n")
    width = max(len(_PACKET_HEAD[0]), *map(len, titles))
    return "\n".join(map(str.__add__, [t.ljust(width) for t in (_PACKET_HEAD[0], *titles)],
                         [table.head, *table.rows.split("\n")]))


def per_packet_texts(flows: Sequence[FlowPackets]) -> list[PacketTable | None]:
    """The per-packet table of each flow's packets (None: no packet), as
    per_packet_rows makes it."""
    counts = [len(p) for p in flows]
    bounds, starts = _bounds(counts)
    if not len(starts):
        return [None for _ in flows]
    has = np.concatenate([p.has_hop for p in flows])
    ns = np.where(has, np.concatenate([p.hops for p in flows]), 0)
    bad = (ns.min(axis=1) < 0) | (ns.max(axis=1) >= _EXACT_BELOW)
    tenths = tenths_of_us(np.where(bad[:, None], 0, ns))
    whole = tenths // 10
    gap = np.concatenate([p.gap for p in flows])
    klass = np.concatenate([p.klass for p in flows])
    sender = np.concatenate([p.sender for p in flows])
    # per table with rows: its hop columns (-1: none) and class column's widths
    present = np.logical_or.reduceat(has, starts, axis=0)
    dashed = np.logical_or.reduceat(~has, starts, axis=0)
    widest = np.maximum.reduceat(whole, starts, axis=0)
    hop_widths = np.where(present, np.maximum(np.maximum(_HOP_NAME_LEN, dashed),
                                              number_widths(widest) + 2), -1)
    lead = np.maximum(len(_PACKET_HEAD[2]), np.maximum.reduceat(_CLASS_LEN[klass], starts))
    fast = (np.maximum.reduceat(bad, starts) == 0) & present.any(axis=1)
    out: list[PacketTable | None] = [None for _ in flows]
    with_rows = np.flatnonzero(np.array(counts) > 0)
    for i in with_rows[~fast].tolist():  # no hop column: the class column ends the lines
        out[i] = packet_rows_table(flows[i])
    kinds, kind_of = np.unique(np.concatenate([lead[:, None], hop_widths], axis=1)[fast],
                               axis=0, return_inverse=True)
    table_of, first, count = with_rows[fast], starts[fast], np.diff(bounds)[with_rows[fast]]
    kinds_of = kinds.tolist()
    for k, members, at, ends in table_runs(kind_of, len(kinds), first, count):
        lead_w, *widths = kinds_of[k]
        m = len(at)
        gap_, point = literal(m, "  "), literal(m, ".")
        blocks = [gap_, words(sender[at], _DIRECTION, _DIRECTION_WIDTH), gap_,
                  words(klass[at], _CLASS_AT, lead_w)]
        for h, w in enumerate(widths):
            if w < 0:
                continue
            value = np.concatenate([numbers(whole[at, h], w - 2), point,
                                    numbers(tenths[at, h] % 10, 1)], axis=1)
            blocks += [gap_, np.where(has[at, h, None], value, literal(m, "-".rjust(w)))]
        blocks.append(literal(m, f"  {GAP_MARK}"))
        head = _FORMATS.get(("ph", lead_w, *widths), lambda lead_w=lead_w, widths=widths: (
            (_lead(lead_w) + "".join(f"  %{w}s" for w in widths if w >= 0))
            % (*_PACKET_HEAD[1:], *[_HOP_AT[h] for h, w in enumerate(widths) if w >= 0])
        ).rstrip())
        texts = lines(blocks, ends, cut=np.where(gap[at], 0, len(GAP_MARK) + 2))
        for i, text in zip(table_of[members].tolist(), texts, strict=True):
            p = flows[i]
            out[i] = _packet_table(head, text, p.step, p.label)
    return out


def _lead(class_width: int) -> str:
    return f"  %-{_DIRECTION_WIDTH}s  %-{class_width}s"


def packet_rows_table(packets: FlowPackets) -> PacketTable | None:
    """The per-packet table a row at a time (viz/stats_text._per_packet's,
    but its first column)."""
    if not len(packets):
        return None
    cols = np.flatnonzero(packets.has_hop.any(axis=0)).tolist()
    head = (*_PACKET_HEAD[1:], *[str(HOPS[h]) for h in cols], "")
    hops, has_hop = packets.hops[:, cols].T.tolist(), packets.has_hop[:, cols].T.tolist()
    cells = [[f"{v / 1e3:.1f}" if ok else "-" for v, ok in zip(vals, oks, strict=True)]
             for vals, oks in zip(hops, has_hop, strict=True)]  # f"...": fmt_us, inlined
    rows: list[Sequence[str]] = [head]
    rows.extend(zip([_DIRECTION[s] for s in packets.sender.tolist()],
                    [_CLASS_AT[k] for k in packets.klass.tolist()], *cells,
                    [GAP_MARK if g else "" for g in packets.gap.tolist()], strict=True))
    lines = table_lines(rows, right=range(2, 2 + len(cols)))
    return _packet_table("  " + lines[0], "\n".join("  " + line for line in lines[1:]),
                         packets.step, packets.label)


def per_packet_rows(packets: FlowPackets) -> list[str]:
    """The per-packet table a row at a time."""
    return packet_lines(packet_rows_table(packets)).split("\n")


def distribution_rows(table: HopTable) -> list[str]:
    """viz/stats_text.distribution_lines of a flow's rows."""
    return distribution_lines(
        (_DIRECTION[s], _CLASS_AT[k], _HOP_AT[h], n, (lo, mid, p99, hi), gaps)
        for s, k, h, n, lo, mid, p99, hi, gaps in table.values.tolist())


_DISTRIBUTION_HEAD = ("  latency (us)", "class", "hop", "n", "min", "median", "p99", "max",
                      GAP_MARK + "s")
_PACKET_HEAD = ("  per packet (us)", "direction", "class")
# by index in ROLES, CLASSES, HOPS (HopTable's codes)
_DIRECTION = tuple(_direction_of(role) for role in ROLES)
_DIRECTION_CELL_AT = tuple(f"  {text}" for text in _DIRECTION)
_DIRECTION_CELL_LEN = max(map(len, _DIRECTION_CELL_AT))
_DIRECTION_WIDTH = max(len(_PACKET_HEAD[1]), *map(len, _DIRECTION))
_CLASS_AT = tuple(str(klass) for klass in CLASSES)
_CLASS_LEN = np.array([len(c) for c in _CLASS_AT], dtype=np.int64)
_HOP_AT = tuple(str(hop) for hop in HOPS)
_HOP_LEN = np.array([len(h) for h in _HOP_AT], dtype=np.int64)
_HOP_NAME_LEN = [len(h) for h in _HOP_AT]
