"""Byte placement of every flow direction at once, on columns, for the
directions byte_table.place_direction would place without a problem: every
send placed by the kernel's stream position (or none, and all placed in
stream order from ISN+1), every recv by its copies or the kernel's position
(or moving no bytes), one contiguous run each, recvs following each other,
the packets inside their sends' ranges, and (with the kernel's positions)
no stretch of the stream left to an untraced call. What such a direction
yields is then known without its sequential walk: the ranges, the anchor,
no problems, the ways by the traced calls' sums. Any other direction is
left to place_direction (`regular` False)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tracer.timeline.columnar.stabbing import LIMIT, fits, merged_runs
from tracer.timeline.model import RangeSource, StreamWays


@dataclass(frozen=True, slots=True)
class ByteColumns:
    """What placement reads, for all flows: messages (MessageTable rows),
    data packets, the kernel's stream positions and the copies to user."""

    flows: int
    isn_from_syn: np.ndarray  # (flows, 2) bool
    m_flow: np.ndarray
    m_side: np.ndarray
    m_send: np.ndarray  # bool
    m_step: np.ndarray
    m_count: np.ndarray
    m_has_count: np.ndarray
    m_way: np.ndarray  # index into `ways`
    ways: Sequence[str]
    d_dir: np.ndarray  # data packets: flow * 2 + sender
    d_lo: np.ndarray
    d_payload: np.ndarray
    d_retrans: np.ndarray
    d_message: np.ndarray  # step id of its send, -1
    p_group: np.ndarray  # positions: direction * 2 + write, -1 outside a flow
    p_lo: np.ndarray
    p_hi: np.ndarray
    p_step: np.ndarray  # step of its message, -1
    c_dir: np.ndarray  # copies: direction of the bytes, -1
    c_step: np.ndarray  # the recv's step
    c_lo: np.ndarray
    c_hi: np.ndarray


@dataclass(frozen=True, slots=True)
class RegularPlacement:
    regular: np.ndarray  # per direction (flow * 2 + sender) bool
    anchor: list[RangeSource | None]  # per direction (regular ones)
    send_lo: np.ndarray  # per message row, its placed range; -1 none (regular directions)
    send_hi: np.ndarray

    def ways(self, bc: ByteColumns, directions: Sequence[int]) -> dict[int, StreamWays]:
        """StreamWays of regular directions: the traced calls' positive
        counts by way, in order of first use (no other ways: none left).
        Empty without the kernel's positions (attribute is not run)."""
        out = {d: StreamWays() for d in directions}
        with_pieces = np.zeros(2 * bc.flows + 1, dtype=bool)
        with_pieces[bc.p_group[bc.p_group >= 0] // 2] = True
        m_dir = message_direction(bc)
        rows = np.flatnonzero((m_dir >= 0) & bc.m_has_count & (bc.m_count > 0))
        rows = rows[np.isin(m_dir[rows], np.array(directions, dtype=np.int64))
                    & with_pieces[m_dir[rows]]]
        rows = rows[np.lexsort((bc.m_step[rows], m_dir[rows]))]
        for d, send, way, count in zip(m_dir[rows].tolist(), bc.m_send[rows].tolist(),
                                       bc.m_way[rows].tolist(), bc.m_count[rows].tolist(),
                                       strict=True):
            by = out[d].written_by if send else out[d].read_by
            name = bc.ways[way]
            by[name] = by.get(name, 0) + count
        return out


def message_direction(bc: ByteColumns) -> np.ndarray:
    """The direction of each message's bytes: a send's side's, a recv's
    peer's; -1 outside a flow."""
    sender = np.where(bc.m_send, bc.m_side, 1 - bc.m_side)
    return np.where((bc.m_flow >= 0) & (bc.m_side >= 0), bc.m_flow * 2 + sender, -1)


def _row_of_step(steps: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """The message row of each wanted step id, -1 none."""
    order = np.argsort(steps, kind="stable")
    at = np.minimum(np.searchsorted(steps[order], wanted), max(len(steps) - 1, 0))
    if not len(steps):
        return np.full(len(wanted), -1, dtype=np.int64)
    found = (wanted >= 0) & (steps[order][at] == wanted)
    return np.where(found, order[at], -1)


def _per_dir(direction: np.ndarray, mask: np.ndarray, nd: int) -> np.ndarray:
    """How many rows of each direction hold mask."""
    return np.bincount(direction[mask & (direction >= 0)], minlength=nd)[:nd]


def regular_placement(bc: ByteColumns) -> RegularPlacement:
    nd = 2 * bc.flows
    nm = len(bc.m_step)
    regular = np.zeros(nd, dtype=bool)
    none = np.full(nm, -1, dtype=np.int64)
    if not fits(bc.d_lo, bc.d_lo + bc.d_payload, bc.p_lo, bc.p_hi, bc.c_lo, bc.c_hi):
        return RegularPlacement(regular, [None] * nd, none, none.copy())
    m_dir = message_direction(bc)
    send, count, has_count = bc.m_send, bc.m_count, bc.m_has_count
    start = bc.isn_from_syn.reshape(-1)  # ISN+1 (byte 1) known, per direction
    # The kernel's positions of each message's calls, and its copies.
    p_row = _row_of_step(bc.m_step, bc.p_step)
    write = (bc.p_group >= 0) & (bc.p_group % 2 == 1)
    mine = (p_row >= 0) & (bc.p_group >= 0)
    mine[mine] = ((m_dir[p_row[mine]] == bc.p_group[mine] // 2)
                  & (send[p_row[mine]] == write[mine]))
    k_has, k_one, k_lo, k_hi = merged_runs(np.where(mine, p_row, -1), bc.p_lo, bc.p_hi, nm)
    c_row = _row_of_step(bc.m_step, bc.c_step)
    ok = (c_row >= 0) & (bc.c_dir >= 0)
    ok[ok] = ~send[c_row[ok]] & (m_dir[c_row[ok]] == bc.c_dir[ok])
    # A position or copy in a message of another direction or op: left to
    # place_direction (which looks them up by message id alone).
    stray = (p_row >= 0) & ~mine
    foreign = np.r_[bc.p_group[stray] // 2, m_dir[p_row[stray]],
                    bc.c_dir[(c_row >= 0) & ~ok], m_dir[c_row[(c_row >= 0) & ~ok]]]
    foreign = foreign[foreign >= 0]
    c_has, c_one, c_lo, c_hi = merged_runs(np.where(ok, c_row, -1), bc.c_lo, bc.c_hi, nm)
    is_send = send & (m_dir >= 0)
    is_recv = ~send & (m_dir >= 0)
    # Sends: all placed by the kernel (K), or none and all in order from ISN+1 (W).
    k_size_ok = ~has_count | (count < 0) | (count == k_hi - k_lo)
    n_sends = _per_dir(m_dir, is_send, nd)
    n_kernel = _per_dir(m_dir, is_send & k_has, nd)
    by_kernel = n_kernel == n_sends
    in_order = (n_kernel == 0) & start & (_per_dir(m_dir, is_send & ~has_count, nd) == 0)
    bad = _per_dir(m_dir, is_send & k_has & ~(k_one & k_size_ok), nd) > 0
    send_lo, send_hi = none.copy(), none.copy()
    kernel_sends = is_send & k_has
    send_lo[kernel_sends], send_hi[kernel_sends] = k_lo[kernel_sends], k_hi[kernel_sends]
    _place_in_order(m_dir, bc.m_step, count, is_send & in_order[np.maximum(m_dir, 0)],
                    send_lo, send_hi)
    # Recvs: each by its copies, else the kernel, else moving no bytes.
    by_copy = is_recv & c_has
    by_pos = is_recv & ~c_has & k_has
    c_size_ok = ~has_count | (count < 0) | (count == c_hi - c_lo)
    bad |= _per_dir(m_dir, (by_copy & ~(c_one & c_size_ok)) | (by_pos & ~(k_one & k_size_ok))
                    | (is_recv & ~c_has & ~k_has & ~(has_count & (count <= 0))), nd) > 0
    r_lo = np.where(by_copy, c_lo, np.where(by_pos, k_lo, -1))
    r_hi = np.where(by_copy, c_hi, np.where(by_pos, k_hi, -1))
    bad |= _recvs_out_of_order(m_dir, bc.m_step, by_copy, by_copy | by_pos, r_lo, r_hi, start,
                               nd)
    bad |= _packets_outside(bc, m_dir, send_lo, send_hi, nd)
    bad |= _untraced_stretches(bc, m_dir, send_lo, send_hi, r_lo, r_hi, start, nd)
    bad[foreign] = True
    if len(send_hi) and int(send_hi.max()) >= LIMIT:
        bad[:] = True
    regular = (by_kernel | in_order) & ~bad
    placed_any = _per_dir(m_dir, is_send & (send_lo >= 0), nd) > 0
    anchor: list[RangeSource | None] = [
        None if not p else RangeSource.KERNEL if k else RangeSource.ISN
        for p, k in zip(placed_any.tolist(), by_kernel.tolist(), strict=True)]
    return RegularPlacement(regular, anchor, send_lo, send_hi)


def _place_in_order(m_dir: np.ndarray, step: np.ndarray, count: np.ndarray, rows_of: np.ndarray,
                    lo: np.ndarray, hi: np.ndarray) -> None:
    """Sends placed one after another from byte 1 (place_starts from ISN+1
    with every count known): a range for each positive count."""
    rows = np.flatnonzero(rows_of)
    if not len(rows):
        return
    rows = rows[np.lexsort((step[rows], m_dir[rows]))]
    d, moved = m_dir[rows], np.maximum(count[rows], 0)
    total = np.cumsum(moved)
    firsts = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
    before = total - moved  # bytes of the direction's earlier sends, plus earlier directions'
    base = np.repeat(before[firsts], np.diff(np.r_[firsts, len(rows)]))
    at = 1 + before - base
    placed = rows[moved > 0]
    lo[placed] = at[moved > 0]
    hi[placed] = at[moved > 0] + moved[moved > 0]


def _recvs_out_of_order(m_dir: np.ndarray, step: np.ndarray, by_copy: np.ndarray,
                        exact: np.ndarray, lo: np.ndarray, hi: np.ndarray, start: np.ndarray,
                        nd: int) -> np.ndarray:
    """Directions with a recv placed by its copies elsewhere than where the
    previous exact recv ended (or byte 1, the first): place_starts' problem."""
    rows = np.flatnonzero(exact)
    rows = rows[np.lexsort((step[rows], m_dir[rows]))]
    d = m_dir[rows]
    first = np.r_[True, d[1:] != d[:-1]]
    expected = np.where(first, np.where(start[d], 1, -1), np.r_[np.int64(-1), hi[rows][:-1]])
    wrong = by_copy[rows] & (expected >= 0) & (lo[rows] != expected)
    return np.bincount(d[wrong], minlength=nd)[:nd] > 0


def _packets_outside(bc: ByteColumns, m_dir: np.ndarray, send_lo: np.ndarray,
                     send_hi: np.ndarray, nd: int) -> np.ndarray:
    """Directions where a send's range misses bytes of its packets: a packet
    it sent carries bytes past its end, or the lowest first transmission
    overlapping it starts after it (place_direction's send problems)."""
    m_row = _row_of_step(bc.m_step, bc.d_message)
    own = m_row >= 0
    own[own] = (m_dir[m_row[own]] == bc.d_dir[own]) & (send_hi[m_row[own]] >= 0)
    past = own & (bc.d_lo + bc.d_payload > np.append(send_hi, -1)[m_row])
    bad = np.bincount(bc.d_dir[past], minlength=nd)[:nd] > 0
    # first transmissions against each placed send's range
    first = ~bc.d_retrans
    g, lo = bc.d_dir[first], bc.d_lo[first]
    hi = lo + bc.d_payload[first]
    srt = np.lexsort((lo, g))
    g, lo, hi = g[srt], lo[srt], hi[srt]
    keys = g * LIMIT + lo
    reach = np.maximum.accumulate(g * LIMIT + hi) if len(g) else keys
    sends = np.flatnonzero(send_hi >= 0)
    d, r_lo, r_hi = m_dir[sends], send_lo[sends], send_hi[sends]
    j = np.searchsorted(keys, d * LIMIT + r_lo, side="right") - 1
    covered = (j >= 0) & (reach[np.maximum(j, 0)] - d * LIMIT > r_lo) if len(g) else j < -1
    inside = (np.searchsorted(keys, d * LIMIT + r_hi, side="left")
              - np.searchsorted(keys, d * LIMIT + r_lo, side="right")) > 0
    late = ~covered & inside
    return bad | (np.bincount(d[late], minlength=nd)[:nd] > 0)


def _untraced_stretches(bc: ByteColumns, m_dir: np.ndarray, send_lo: np.ndarray,
                        send_hi: np.ndarray, r_lo: np.ndarray, r_hi: np.ndarray,
                        start: np.ndarray, nd: int) -> np.ndarray:
    """Directions where byte_ranges.other_ways would find a stretch of the
    stream no traced call wrote (read): the placed ranges do not make one
    run over the extent from byte 1 (else the lowest known byte) to the
    highest (the kernel's positions', and for writes the packets')."""
    bad = np.zeros(nd, dtype=bool)
    first = ~bc.d_retrans
    for write, lo, hi, ends in ((True, send_lo, send_hi, (bc.d_dir[first], bc.d_lo[first],
                                                          bc.d_lo[first] + bc.d_payload[first])),
                                (False, r_lo, r_hi, None)):
        pieces = (bc.p_group >= 0) & (bc.p_group % 2 == int(write))
        p_dir = bc.p_group[pieces] // 2
        has = np.zeros(nd, dtype=bool)
        has[p_dir] = True
        placed = (lo >= 0) & (m_dir >= 0)
        low = np.full(nd, np.iinfo(np.int64).max, dtype=np.int64)
        high = np.full(nd, np.iinfo(np.int64).min, dtype=np.int64)
        for d, a, b in ((m_dir[placed], lo[placed], hi[placed]),
                        (p_dir, bc.p_lo[pieces], bc.p_hi[pieces]), *((ends,) if ends else ())):
            np.minimum.at(low, d, a)
            np.maximum.at(high, d, b)
        low = np.where(start, 1, low)
        any_run, one, run_lo, run_hi = merged_runs(np.where(placed, m_dir, -1), lo, hi, nd)
        covered = any_run & one & (run_lo <= low) & (run_hi >= high)
        bad |= has & ~covered & (low < high)
    return bad
