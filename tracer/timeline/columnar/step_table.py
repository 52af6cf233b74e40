"""Steps on columns: the rules of tracer/timeline/steps.py (pair_returns,
make_steps, inherit_from_step, label_packets, _renumber) as group-by passes.

Every event gets one placement, decided in the order `make_steps.place`
tests the rules:
  A  a syscall event in task context: opens, closes or is a message;
  B  a segment with a flow: a packet (runs of one segment key);
  C  any other event inside a syscall of its thread: joins that message;
  D  a return whose entry is a lone step: joins it;
  E  a receive-side socket call (trailer): joins the packet just processed
     in its context when it matches, else a lone step;
  F  anything else: a lone step;
and lead-ins (softirq runs, transmit-side socket calls outside a syscall,
tcp_retransmit_skb) wait for the next placed event of their context.
Only E and the lead-ins, a few percent of a trace, are walked in Python.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tracer.timeline.columnar.columns import NO_EP, TASK, EventColumns
from tracer.timeline.columnar.errors import Irregular
from tracer.timeline.columnar.event_table import EventRules
from tracer.timeline.columnar.flow_table import FlowTable
from tracer.timeline.columnar.grouping import (
    distinct,
    factorize,
    first_index,
    last_at_or_before,
    previous_in_group,
    run_numbers,
    sort_order,
    stable_argsort,
    take_or,
)
from tracer.timeline.columnar.probe_table import RX, SYSCALL, TX, ProbeTable
from tracer.timeline.segments import SPLIT_FLAGS_MASK

PLACE_A, PLACE_B, PLACE_C, PLACE_D, PLACE_E, PLACE_F, LEAD_IN = range(7)
# Keys of data packets of one stream are offset by stream so one running
# maximum serves all streams (relative positions stay below 2**33).
_STREAM_SPAN = np.int64(1 << 34)


@dataclass(frozen=True, slots=True)
class PacketTable:
    """One row per packet, in creation order (creator event index)."""

    creator: np.ndarray  # event that created it
    segment: np.ndarray  # event whose segment is the packet's (the creator, or a later
    #                      one when the creator's length was unreadable)
    step: np.ndarray  # step id (Packet.id)
    flow: np.ndarray
    sender: np.ndarray  # 0 client, 1 server
    seq: np.ndarray
    payload: np.ndarray
    flags: np.ndarray  # full TCP flags of its segment (for the label)
    pure_ack: np.ndarray
    retransmission: np.ndarray
    lo: np.ndarray  # byte range (data packets): relative start, -1 without one
    message: np.ndarray  # step id of the send that transmitted it, -1 none
    of_event: np.ndarray  # per event: packet row of placement B events, -1 otherwise
    seg_of_event: np.ndarray  # per event: packet row of events seeing its segment, -1


@dataclass(frozen=True, slots=True)
class MessageTable:
    """One row per message, in creation order."""

    key: np.ndarray  # first event
    step: np.ndarray
    flow: np.ndarray  # inherited (first member with a flow), -1 none
    side: np.ndarray  # inherited, -1 none
    send: np.ndarray  # bool: op is send
    count: np.ndarray  # message_bytes, valid where has_count
    has_count: np.ndarray
    of_event: np.ndarray  # per event: message row of its members (A and C), -1 otherwise


@dataclass(frozen=True, slots=True)
class PositionTable:
    """The entries that recorded the kernel's stream position (tp->write_seq,
    tp->copied_seq) and whose return moved bytes: byte_ranges.kernel_pieces."""

    entry: np.ndarray  # event index
    count: np.ndarray  # its return value (> 0)


@dataclass(frozen=True, slots=True)
class StepTable:
    placement: np.ndarray  # per event, PLACE_* or LEAD_IN
    packets: PacketTable
    messages: MessageTable
    positions: PositionTable
    steps: int  # number of steps
    keys: np.ndarray  # each step's first event, in step order
    step_flow: np.ndarray  # per event: the flow of the step it is in, -1 none
    flow_start: np.ndarray  # per flow: Flow.start_ns
    flow_end: np.ndarray  # per flow: Flow.end_ns


# Event indices and message rows held per event: int32, half of int64's
# memory, as a trace's events are fewer than 2**31 (step_table checks).
EVENT_INDEX = np.int32


def step_table(c: EventColumns, r: EventRules, pt: ProbeTable, ft: FlowTable) -> StepTable:
    """Steps numbered from 0 in order (a part of a trace too: parts.py adds
    the steps of the parts before it)."""
    # Each per-event temporary is deleted after its last use: a 10 M-event
    # trace holds 80 MB per int64 column.
    n = len(c)
    if n >= 1 << 31:
        raise Irregular(f"{n} events: more than the int32 event indices number")
    p = c.probe
    flow = ft.flow
    ctx_id, _ = factorize(c.source, c.tid, c.ctx.astype(np.int64), c.softirq.astype(np.int64))
    keyed_seg = r.is_seg & (flow >= 0)

    pair = _pair_returns(c, ctx_id)
    syscall_task = (r.layer == SYSCALL) & (c.ctx == TASK)
    msg_key, in_msg = _syscalls(c, syscall_task)

    lead_in = (~syscall_task & (in_msg < 0) & ~c.is_return & (pair < 0)
               & (pt.softirq[p] | pt.noack[p]
                  | ((r.direction == TX) & ~r.is_seg & pt.sock_or_socket[p])))
    place = np.full(n, PLACE_F, dtype=np.int8)
    place[lead_in] = LEAD_IN
    rest = ~lead_in
    place[rest & syscall_task] = PLACE_A
    rest &= ~syscall_task
    place[rest & keyed_seg] = PLACE_B
    rest &= ~keyed_seg
    place[rest & (in_msg >= 0)] = PLACE_C
    rest &= in_msg < 0
    entry_lone = np.zeros(n, dtype=bool)
    has_pair = pair >= 0
    entry_lone[has_pair] = place[pair[has_pair]] == PLACE_F
    d = rest & c.is_return & entry_lone
    place[d] = PLACE_D
    rest &= ~d
    trailer = rest & ~c.is_return & (pair < 0) & (r.direction == RX) & ~r.is_seg \
        & pt.sock_or_socket[p]
    place[trailer] = PLACE_E
    del rest, entry_lone, has_pair, d, keyed_seg, syscall_task

    placed = place != LEAD_IN
    trailers = np.flatnonzero(trailer)
    leads = np.flatnonzero(lead_in)
    del trailer, lead_in
    prev_placed, resolver = _placed_neighbours(ctx_id, placed, trailers, leads)
    del ctx_id, placed

    pk = _packets(c, r, pt, ft, place, in_msg)
    pkt_of = pk.of_event
    pkt_flow, pkt_dst = pk.flow, pk.dst

    # Trailers: the previous placed event of the context decides.
    trailer_pkt = _trailer_packets(place, pkt_of, flow, ft.endpoint, pkt_flow, pkt_dst,
                                   trailers, prev_placed)
    _check_requeues(pk, trailer_pkt)

    # Lead-ins: the next placed event of their context resolves them.
    is_key = np.zeros(n, dtype=bool)
    is_key[(place == PLACE_A) & (msg_key == np.arange(n))] = True
    is_key[pk.creator] = True
    is_key[(place == PLACE_F) | ((place == PLACE_E) & (trailer_pkt < 0))] = True
    lead_pkt, lead_step_event, retrans_lead = _join_leads(
        c, r, pt, ft, pk, place, pair, trailer_pkt, leads, resolver, is_key)
    step_of_key = run_numbers(is_key)
    steps = int(is_key.sum())

    # Packet ids: its first event is a lead-in when one joined at creation.
    pkt_key = pk.creator.copy()
    joined_pkt = lead_pkt >= 0
    first_lead = joined_pkt & is_key[leads]
    pkt_key[lead_pkt[first_lead]] = leads[first_lead]
    pkt_step = step_of_key[pkt_key]

    mt = _messages(c, r, pt, ft, place, msg_key, in_msg, step_of_key)
    del msg_key, in_msg, step_of_key
    msg_of_event = mt.of_event
    pkt_message = take_or(mt.step, take_or(msg_of_event, pk.message_key, -1), -1)
    retransmission = pk.retransmission | retrans_lead
    b_retrans = (pkt_of >= 0) & pt.retransmit[p]
    retransmission[pkt_of[b_retrans]] = True
    joined = np.flatnonzero(trailer_pkt >= 0)
    retransmission[trailer_pkt[joined[pt.retransmit[p[joined]]]]] = True

    # The flow of each event's step, for Flow.start_ns / end_ns.
    step_flow = np.full(n, -1, dtype=np.int64)
    b = pkt_of >= 0
    step_flow[b] = pkt_flow[pkt_of[b]]
    m = msg_of_event >= 0
    step_flow[m] = mt.flow[msg_of_event[m]]
    lone = (place == PLACE_F) | ((place == PLACE_E) & (trailer_pkt < 0))
    lone[leads[lead_step_event < 0]] = True
    step_flow[lone] = flow[lone]
    dd = place == PLACE_D
    d_flow = flow[np.maximum(pair, 0)]
    step_flow[dd] = np.where(d_flow[dd] >= 0, d_flow[dd], flow[dd])
    # A lone entry without a flow takes its return's (inherit_from_step).
    d_rows = np.flatnonzero(dd)
    entries = pair[d_rows]
    fill = (step_flow[entries] < 0) & (flow[d_rows] >= 0)
    step_flow[entries[fill]] = flow[d_rows[fill]]
    tj = trailer_pkt >= 0
    step_flow[tj] = pkt_flow[trailer_pkt[tj]]
    lj = np.zeros(n, dtype=bool)
    lj[leads[lead_step_event >= 0]] = True
    step_flow[leads[lead_step_event >= 0]] = step_flow[lead_step_event[lead_step_event >= 0]]
    positions = _positions(c, pt, pair)
    del pair, d_flow, dd, lone, tj, b, m

    nflows = ft.count
    start = np.full(nflows, np.iinfo(np.int64).max)
    end = np.full(nflows, np.iinfo(np.int64).min)
    keyed = is_key & (step_flow >= 0)
    np.minimum.at(start, step_flow[keyed], c.ts[keyed])
    ends = (step_flow >= 0) & ~lj
    np.maximum.at(end, step_flow[ends], c.ts[ends])

    packets = PacketTable(
        creator=pk.creator, segment=pk.segment, step=pkt_step, flow=pkt_flow,
        sender=pk.sender, seq=pk.seq, payload=pk.payload, flags=pk.flags, pure_ack=pk.pure_ack,
        retransmission=retransmission, lo=pk.lo, message=pkt_message, of_event=pkt_of,
        seg_of_event=_with_leads(pkt_of, leads[joined_pkt & r.is_seg[leads]],
                                 lead_pkt[joined_pkt & r.is_seg[leads]]))
    return StepTable(placement=place, packets=packets, messages=mt,
                     positions=positions, steps=steps, keys=np.flatnonzero(is_key),
                     step_flow=step_flow, flow_start=start, flow_end=end)


def _positions(c: EventColumns, pt: ProbeTable, pair: np.ndarray) -> PositionTable:
    rows = np.flatnonzero(pt.stream_pos[c.probe] & ~c.is_return & (c.seq >= 0) & (pair >= 0))
    ret = pair[rows]
    moved = c.has_ret[ret] & (c.ret[ret] > 0)
    return PositionTable(entry=rows[moved], count=c.ret[ret[moved]])


def _trailer_packets(place: np.ndarray, pkt_of: np.ndarray, flow: np.ndarray,
                     endpoint: np.ndarray, pkt_flow: np.ndarray, pkt_dst: np.ndarray,
                     trailers: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """Per event, the packet each trailer joins, -1: its context's previous
    placed event's packet (a B event's, or a trailer's it joined) when the
    flow and endpoint agree. A trailer after a trailer waits for it: the
    rule is applied again until nothing changes (chains are short)."""
    out = np.full(len(place), -1, dtype=np.int64)
    has = prev >= 0
    t, pv = trailers[has], prev[has]
    pl = place[pv]
    b_pkt = np.where(pl == PLACE_B, pkt_of[pv], -1)
    after_trailer = pl == PLACE_E
    ep = endpoint[t]
    while True:
        st = np.where(after_trailer, out[pv], b_pkt)
        s0 = np.where(st >= 0, st, len(pkt_flow))  # past the end: a sentinel row
        ok = (st >= 0) & ((flow[t] < 0) | (flow[t] == np.append(pkt_flow, -1)[s0])) \
            & ((ep == NO_EP) | (ep == np.append(pkt_dst, NO_EP)[s0]))
        new = np.where(ok, st, -1)
        if np.array_equal(new, out[t]):
            return out
        out[t] = new


def _join_leads(c: EventColumns, r: EventRules, pt: ProbeTable, ft: FlowTable, pk: _Packets,
                place: np.ndarray, pair: np.ndarray, trailer_pkt: np.ndarray,
                leads: np.ndarray, resolver: np.ndarray, is_key: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each lead-in joins the step of the next placed event of its context
    (`resolver`) when it fits: (the packet row each joined, -1; the event
    whose step it joined, -1; per packet, whether a retransmitting lead-in
    joined it). A lead-in joining a step its resolver created comes first in
    it (the first such lead-in: is_key moves to it); one not joined is a
    step of its own (is_key)."""
    flow, endpoint, p = ft.flow, ft.endpoint, c.probe
    te = resolver
    has = te >= 0
    t0 = np.maximum(te, 0)
    pl = np.where(has, place[t0], -1)
    st_pkt = np.where(pl == PLACE_B, pk.of_event[t0], np.where(pl == PLACE_E, trailer_pkt[t0],
                                                               -1))
    st_pkt = np.where(has, st_pkt, -1)
    s0 = np.where(st_pkt >= 0, st_pkt, len(pk.flow))  # past the end: a sentinel row

    def of_pkt(col: np.ndarray) -> np.ndarray:
        return np.append(col, col.dtype.type(-1) if col.dtype != bool else False)[s0]

    w = leads
    softirq = pt.softirq[p[w]]
    owner = np.where(pl == PLACE_D, pair[t0], t0)
    lone_joined = ((pl == PLACE_D) | (pl == PLACE_E) | (pl == PLACE_F)) \
        & (flow[np.maximum(owner, 0)] >= 0)
    fits = ((flow[w] < 0) | (flow[w] == of_pkt(pk.flow))) \
        & ((endpoint[w] == NO_EP) | (endpoint[w] == of_pkt(pk.src))) \
        & (~r.is_seg[w] | ((c.seq[w] == of_pkt(pk.seq)) & (r.payload[w] == of_pkt(pk.payload))))
    joined = has & np.where(softirq, (st_pkt >= 0) | lone_joined, (st_pkt >= 0) & fits)
    lead_step_event = np.where(joined, te, -1)
    lead_pkt = np.where(joined & (st_pkt >= 0), st_pkt, -1)
    retrans_lead = np.zeros(len(pk.flow), dtype=bool)
    retrans_lead[lead_pkt[(lead_pkt >= 0) & pt.retransmit[p[w]]]] = True
    creator = np.where(st_pkt >= 0, of_pkt(pk.creator),
                       np.where(pl == PLACE_D, pair[t0], np.where(pl != PLACE_C, te, -1)))
    first = np.flatnonzero(joined & (creator == te) & (pl != PLACE_C))
    _, at = np.unique(te[first], return_index=True)  # the first lead-in of each step
    first = first[at]
    is_key[te[first]] = False
    is_key[w[first]] = True
    alone = ~joined
    if np.any(alone & r.is_seg[w] & (flow[w] >= 0)):
        raise Irregular("a lead-in segment event (tcp_retransmit_skb) that opens "
                        "its own packet")
    is_key[w[alone]] = True
    return lead_pkt, lead_step_event, retrans_lead


def _pair_returns(c: EventColumns, ctx_id: np.ndarray) -> np.ndarray:
    """pair_returns: each return with the latest unmatched entry of the same
    probe and context. Only probes with both entries and returns can pair;
    their events are matched with one stack per (context, probe)."""
    n = len(c)
    pair = np.full(n, -1, dtype=EVENT_INDEX)
    nprobes = len(c.probe_names)
    has_ret = np.bincount(c.probe[c.is_return], minlength=nprobes) > 0
    has_entry = np.bincount(c.probe[~c.is_return], minlength=nprobes) > 0
    rows = np.flatnonzero((has_ret & has_entry)[c.probe])
    if not len(rows):
        return pair
    grp, _ = factorize(ctx_id[rows], c.probe[rows].astype(np.int64))
    order = stable_argsort(grp)  # rows ascend: ties in event order
    ev, g = rows[order], grp[order]
    entry, pop = stack_matches(g, ~c.is_return[ev])
    pair[ev[entry]], pair[ev[pop]] = ev[pop], ev[entry]
    return pair


def stack_matches(group: np.ndarray, push: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One stack per group, rows in order (sorted by group): a push row is
    pushed, any other row pops the latest pushed row if its stack holds
    one (else it is ignored). Returns (pushed rows, the rows popping them).

    On arrays: a stack's depth after row t is its running sum of +1/-1
    clamped at zero, the sum minus its running minimum (when negative); a
    pop at depth d takes the latest push to depth d before it."""
    m = len(group)
    if not m:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    step = np.where(push, 1, -1)
    total = np.cumsum(step)
    firsts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    sizes = np.diff(np.r_[firsts, m])
    run = total - np.repeat(total[firsts] - step[firsts], sizes)  # the group's own sum
    # running minimum within the group: earlier groups' values lie above
    gid = np.repeat(np.arange(len(firsts), dtype=np.int64), sizes)
    big = 2 * m + 2
    low = np.minimum.accumulate(run - gid * big) + gid * big
    depth = run - np.minimum(low, 0)
    before = np.r_[np.int64(0), depth[:-1]]
    before[firsts] = 0
    pops = np.flatnonzero(~push & (before > 0))
    pushes = np.flatnonzero(push)
    # latest push to the pop's depth in its group, before it
    level = gid[pushes] * (m + 1) + depth[pushes]
    levels = distinct(level)
    key = np.searchsorted(levels, level) * (m + 1) + pushes
    order = np.argsort(key, kind="stable")
    asked = np.searchsorted(levels, gid[pops] * (m + 1) + before[pops]) * (m + 1) + pops
    at = np.searchsorted(key[order], asked) - 1
    return pushes[order[at]], pops


def _syscalls(c: EventColumns, syscall_task: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(msg_key, in_msg): for syscall events, the first event of their
    message (an entry, or a return whose entry was not seen); for every
    event, the entry of the syscall open in its thread (task context), -1."""
    n = len(c)
    msg_key = np.full(n, -1, dtype=EVENT_INDEX)
    in_msg = np.full(n, -1, dtype=EVENT_INDEX)
    rows = np.flatnonzero(syscall_task)
    if not len(rows):
        return msg_key, in_msg
    tid_ids, _ = factorize(c.source, c.tid)
    prev = previous_in_group(tid_ids[rows])
    prev_row = np.where(prev >= 0, rows[np.maximum(prev, 0)], -1)
    is_ret = c.is_return[rows]
    closes = is_ret & (prev_row >= 0) & ~c.is_return[np.maximum(prev_row, 0)] \
        & (c.probe[np.maximum(prev_row, 0)] == c.probe[rows])
    msg_key[rows] = np.where(closes, prev_row, rows)
    open_after = np.where(is_ret, -1, rows)
    q = np.flatnonzero((c.ctx == TASK) & ~syscall_task)
    hit = last_at_or_before(tid_ids[rows], rows, tid_ids[q], q)
    in_msg[q] = np.where(hit >= 0, open_after[np.maximum(hit, 0)], -1)
    return msg_key, in_msg


def _placed_neighbours(ctx_id: np.ndarray, placed: np.ndarray, before: np.ndarray,
                       after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the events `before`, the previous placed event of their context;
    for the events `after`, the next one (-1 when there is none)."""
    n = len(ctx_id)
    order = stable_argsort(ctx_id)  # by context, then time
    ctx_sorted = ctx_id[order]
    pos_of = np.empty(n, dtype=np.int64)
    pos_of[order] = np.arange(n)
    is_placed = placed[order]
    last = np.maximum.accumulate(np.where(is_placed, np.arange(n), -1))
    nxt = np.minimum.accumulate(np.where(is_placed, np.arange(n), n)[::-1])[::-1]

    def pick(events: np.ndarray, step: int, table: np.ndarray, missing: int) -> np.ndarray:
        at = pos_of[events] + step
        inside = (at >= 0) & (at < n)
        found = np.full(len(events), missing, dtype=np.int64)
        found[inside] = table[at[inside]]
        ok = (found != missing) & (found >= 0) & (found < n)
        ok[ok] = ctx_sorted[found[ok]] == ctx_sorted[pos_of[events[ok]]]
        return np.where(ok, order[np.clip(found, 0, n - 1)], -1)

    return pick(before, -1, last, -1), pick(after, 1, nxt, n)


def _with_leads(pkt_of: np.ndarray, leads: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = pkt_of.copy()
    out[leads] = rows
    return out


@dataclass(frozen=True, slots=True)
class _Packets:
    creator: np.ndarray  # first event
    segment: np.ndarray  # the event whose segment is the packet's (Packet.segment)
    flow: np.ndarray
    sender: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    seq: np.ndarray
    payload: np.ndarray
    flags: np.ndarray
    pure_ack: np.ndarray
    retransmission: np.ndarray
    lo: np.ndarray
    message_key: np.ndarray  # msg key event of the send that transmitted it, -1
    of_event: np.ndarray
    requeued: np.ndarray  # (event, previous event of its hop) pairs joined as requeues


@dataclass(frozen=True, slots=True)
class _Built:
    """Packets of some streams: membership and what the building decided."""

    events: np.ndarray  # the placement-B events built
    packet: np.ndarray  # per event: index into the packets below
    creator: np.ndarray  # per packet: first event
    segment: np.ndarray  # per packet: event whose segment it carries
    retransmission: np.ndarray  # per packet: overlap, or sent again (not a pure ACK)
    requeued: np.ndarray  # (event, previous event of its hop)


def _packets(c: EventColumns, r: EventRules, pt: ProbeTable, ft: FlowTable,
             place: np.ndarray, in_msg: np.ndarray) -> _Packets:
    """Packet membership of placement-B events (_Builder.packet_for).

    Streams (flow, sender) are independent there. A stream whose segments
    all have a known length and whose first sight of each key is a birth or
    lies above what the stream carried so far (no GSO/TSO piece, no GRO
    merge) is built on columns (_key_runs); the others event by event
    (_StreamBuilder), as packet_for does."""
    n = len(c)
    rows = np.flatnonzero(place == PLACE_B)
    stream = ft.flow[rows] * 2 + np.where(c.src[rows] == ft.client[ft.flow[rows]], 0, 1)
    exact = np.zeros(2 * ft.count, dtype=bool)
    exact[stream[~r.known[rows]]] = True
    runs, pieces = _key_runs(c, r, pt, ft, rows[~exact[stream]])
    exact[_stream_of(c, ft, runs.creator[pieces])] = True
    runs = _subset(runs, ~exact[_stream_of(c, ft, runs.creator)],
                   ~exact[_stream_of(c, ft, runs.requeued[:, 0])])
    built = _StreamBuilder(c, r, pt, ft).build(rows[exact[stream]])
    creator = np.concatenate([runs.creator, built.creator])
    segment = np.concatenate([runs.segment, built.segment])
    by_creation = np.argsort(creator, kind="stable")
    row_of = np.empty(len(creator), dtype=np.int64)
    row_of[by_creation] = np.arange(len(creator))
    of_event = np.full(n, -1, dtype=np.int64)
    of_event[runs.events] = row_of[runs.packet]
    of_event[built.events] = row_of[len(runs.creator) + built.packet]
    creator, segment = creator[by_creation], segment[by_creation]
    p_flow = ft.flow[segment]
    p_sender = np.where(c.src[segment] == ft.client[p_flow], 0, 1)
    payload = r.payload[segment]
    seq = c.seq[segment]
    lo = np.where(payload > 0, ft.rel(p_flow, p_sender, seq), -1)
    retransmission = np.concatenate([runs.retransmission, built.retransmission])[by_creation]

    # Packet.message: the first of its own transmit events inside a syscall.
    b = np.flatnonzero((of_event >= 0) & (in_msg >= 0) & (r.direction == TX))
    b = b[ft.endpoint[b] == c.src[segment[of_event[b]]]]
    npk = len(creator)
    message_key = np.full(npk, -1, dtype=np.int64)
    firsts = first_index(np.concatenate([of_event[b], [npk]]), npk + 1)[:npk]
    got = firsts >= 0
    message_key[got] = in_msg[b[firsts[got]]]
    return _Packets(creator=creator, segment=segment, flow=p_flow, sender=p_sender,
                    src=c.src[segment], dst=c.dst[segment], seq=seq, payload=payload,
                    flags=c.flags[segment], pure_ack=r.pure_ack[segment],
                    retransmission=retransmission, lo=lo, message_key=message_key,
                    of_event=of_event,
                    requeued=np.concatenate([runs.requeued, built.requeued]))


def _stream_of(c: EventColumns, ft: FlowTable, events: np.ndarray) -> np.ndarray:
    flow = ft.flow[events]
    stream: np.ndarray = flow * 2 + np.where(c.src[events] == ft.client[flow], 0, 1)
    return stream


def _subset(b: _Built, keep: np.ndarray, keep_requeued: np.ndarray) -> _Built:
    """The packets `keep` of b (and their events), renumbered."""
    new_index = run_numbers(keep)
    on = keep[b.packet]
    return _Built(events=b.events[on], packet=new_index[b.packet[on]], creator=b.creator[keep],
                  segment=b.segment[keep], retransmission=b.retransmission[keep],
                  requeued=b.requeued[keep_requeued])


def _key_runs(c: EventColumns, r: EventRules, pt: ProbeTable, ft: FlowTable,
              rows: np.ndarray) -> tuple[_Built, np.ndarray]:
    """packet_for on columns, for streams without pieces: events of one
    segment key form runs; a run starts at the first event of the key, at a
    birth (ORIGIN_CAPTURES), and at a hop the run already passed unless the
    same skb re-enters it right away (requeue). Also returns, per packet,
    whether its first event may be a piece of an earlier packet (no birth,
    starting below what its stream carried) or one of its events may belong
    to an earlier packet of its key (_held_elsewhere): its stream is then
    left to _StreamBuilder."""
    flow = ft.flow[rows]
    sender = np.where(c.src[rows] == ft.client[flow], 0, 1)
    grp, _ = factorize(flow, sender, c.seq[rows], r.key_flags[rows], r.ack_key[rows],
                       r.payload[rows])
    order = stable_argsort(grp)  # rows ascend: ties in event order
    ev = rows[order]
    g = grp[order]
    del grp, order, flow, sender
    m = len(ev)
    new_group = np.ones(m, dtype=bool)
    new_group[1:] = g[1:] != g[:-1]
    del g
    boundary = new_group | pt.origin[c.probe[ev]]
    hop = c.probe[ev].astype(np.int64) * 2 + c.is_return[ev]
    requeued = np.zeros((0, 2), dtype=np.int64)
    while m:
        run = run_numbers(boundary)
        by_hop = sort_order(run, hop)  # ties in position order
        same = (run[by_hop][1:] == run[by_hop][:-1]) & (hop[by_hop][1:] == hop[by_hop][:-1])
        later, earlier = by_hop[1:][same], by_hop[:-1][same]
        requeue = (c.skb[ev[later]] != 0) & (c.skb[ev[later]] == c.skb[ev[earlier]]) \
            & (earlier == later - 1)
        split = later[~requeue]
        if not len(split):
            requeued = np.stack([ev[later[requeue]], ev[earlier[requeue]]], axis=1)
            break
        first_split = np.full(int(run[-1]) + 1, m, dtype=np.int64)
        np.minimum.at(first_split, run[split], split)
        boundary[first_split[first_split < m]] = True
    run = run_numbers(boundary)
    starts = np.flatnonzero(boundary)
    creator = ev[starts]
    again = ~new_group[starts]
    crossing = _held_elsewhere(c, pt, ev, run, new_group, starts)

    p_flow = ft.flow[creator]
    p_sender = np.where(c.src[creator] == ft.client[p_flow], 0, 1)
    payload = r.payload[creator]
    lo = ft.rel(p_flow, p_sender, c.seq[creator])
    data = np.flatnonzero(payload > 0)
    stream = p_flow[data] * 2 + p_sender[data]
    hi = lo[data] + payload[data]
    order_d = np.lexsort((creator[data], stream))
    s_stream = stream[order_d]
    running = np.maximum.accumulate(hi[order_d] + s_stream * _STREAM_SPAN)
    prev_max = np.full(len(data), -1, dtype=np.int64)
    has_prev = np.zeros(len(data), dtype=bool)
    has_prev[1:] = s_stream[1:] == s_stream[:-1]
    prev_max[1:] = running[:-1] - s_stream[1:] * _STREAM_SPAN
    overlap = np.zeros(len(creator), dtype=bool)
    overlap[data[order_d]] = has_prev & (lo[data][order_d] < prev_max)
    piece = overlap & ~again & ~pt.origin[c.probe[creator]]
    return _Built(events=ev, packet=run, creator=creator, segment=creator,
                  retransmission=overlap | (again & ~r.pure_ack[creator]),
                  requeued=requeued), piece | crossing


def _held_elsewhere(c: EventColumns, pt: ProbeTable, ev: np.ndarray, run: np.ndarray,
                    new_group: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per run: whether one of its events (no birth, with an skb) follows an
    event of the same key, host and skb in an earlier run. packet_for may
    then prefer that earlier packet (a receiver still handling a segment
    whose identical successor was already sent), which only the event by
    event builder decides. Only keys with several runs are looked at."""
    out = np.zeros(len(starts), dtype=bool)
    group_of_run = run_numbers(new_group)[starts]
    several = np.bincount(group_of_run) > 1
    if not several.any():
        return out
    # events of those keys with an skb, in key then event order
    pool = np.flatnonzero(several[group_of_run[run]] & (c.skb[ev] != 0))
    e, pool_run = ev[pool], run[pool]
    same, _ = factorize(group_of_run[pool_run], c.source[e], c.skb[e])
    prev = previous_in_group(same)
    hit = (prev >= 0) & ~pt.origin[c.probe[e]]
    hit[hit] = pool_run[prev[hit]] != pool_run[hit]
    out[pool_run[hit]] = True
    return out


class _StreamBuilder:
    """steps._Builder.packet_for, event by event, for the streams with
    pieces or unreadable lengths (their events only)."""

    def __init__(self, c: EventColumns, r: EventRules, pt: ProbeTable, ft: FlowTable) -> None:
        self.c, self.r, self.pt, self.ft = c, r, pt, ft

    def build(self, rows: np.ndarray) -> _Built:
        c, r, ft = self.c, self.r, self.ft
        n = len(rows)
        packet = np.full(n, -1, dtype=np.int64)
        creator: list[int] = []
        segment: list[int] = []
        retrans: list[bool] = []
        requeued: list[tuple[int, int]] = []
        # per packet: hops seen -> skb, last appended event, range start/end
        seen: list[dict[tuple[int, bool, int, int], int]] = []
        last: list[int] = []
        latest: dict[tuple[int, ...], int] = {}
        held: dict[tuple[int, ...], int] = {}  # (exact key, host, skb) -> packet
        loose: dict[tuple[int, ...], int] = {}
        ranges: dict[int, _RangeIndex] = {}  # by stream
        sent_hi: dict[int, int] = {}
        flow = ft.flow[rows].tolist()
        stream = _stream_of(c, ft, rows).tolist()
        cols = [a[rows].tolist() for a in (c.seq, r.payload, r.known, r.key_flags, r.ack_key,
                                           c.probe, c.is_return, c.skb, c.flags)]
        origin = self.pt.origin[c.probe[rows]].tolist()
        rx = (r.direction[rows] == RX).tolist()
        host = c.source[rows].tolist()
        pure = r.pure_ack[rows].tolist()
        rel = ft.rel(ft.flow[rows], np.array(stream, dtype=np.int64) % 2, c.seq[rows]).tolist()

        def register(p: int, i: int, key: tuple[int, ...]) -> bool:
            if not cols[2][i]:
                return False
            latest[key] = p
            payload = cols[1][i]
            if not payload:
                return False
            lo, st = rel[i], stream[i]
            high = sent_hi.get(st)
            sent_hi[st] = max(high or 0, lo + payload)
            ranges.setdefault(st, _RangeIndex()).add(lo, lo + payload, p)
            return high is not None and lo < high

        def may_join(p: int, i: int, hop: tuple[int, bool, int, int]) -> bool:
            skb = seen[p].get(hop)
            if skb is None:
                return True
            j = last[p]
            if skb != 0 and skb == cols[7][i] and (cols[5][j], cols[6][j]) == hop[:2]:
                requeued.append((int(rows[i]), int(rows[j])))
                return True
            return False

        def join(p: int, i: int, hop: tuple[int, bool, int, int],
                 mine: tuple[int, ...] | None = None) -> None:
            """`mine`: the event's held key (known length, an skb)."""
            packet[i] = p
            seen[p][hop] = cols[7][i]
            last[p] = i
            if mine is not None:
                held[mine] = p

        def holding(i: int) -> int | None:
            lo, payload = rel[i], cols[1][i]
            index = ranges.get(stream[i])
            if index is None:
                return None
            best = index.newest_holding(lo, lo + payload)
            if best is None and rx[i]:
                best = index.newest_holding(lo, lo + 1)
            if best is None:
                return None
            s = segment[best]
            same = (cols[8][s] & SPLIT_FLAGS_MASK) == (cols[8][i] & SPLIT_FLAGS_MASK) \
                and cols[4][s] == cols[4][i]
            return best if same else None

        for i in range(n):
            seq, payload, known, kflags, ack = (col[i] for col in cols[:5])
            hop = (cols[5][i], cols[6][i], seq, payload)
            loose_key = (flow[i], stream[i], seq, kflags, ack)
            exact_key = (*loose_key, payload)
            skb = cols[7][i]
            mine = (*exact_key, host[i], skb) if known and skb else None
            if not known:
                p = loose.get(loose_key)
                if p is not None:
                    join(p, i, hop)
                    continue
            else:
                p = latest.get(exact_key)
                if not origin[i] and mine is not None:
                    q = held.get(mine)
                    if q is not None and q != p and hop not in seen[q] \
                            and (host[last[q]], cols[7][last[q]]) == (host[i], skb):
                        join(q, i, hop, mine)
                        continue
                if p is not None and not origin[i] and may_join(p, i, hop):
                    join(p, i, hop, mine)
                    continue
                if p is None and not origin[i] and payload:
                    piece_of = holding(i)
                    if piece_of is not None and may_join(piece_of, i, hop):
                        join(piece_of, i, hop, mine)
                        continue
                vague = loose.get(loose_key)
                if vague is not None and not origin[i] and not cols[2][segment[vague]]:
                    segment[vague] = i
                    retrans[vague] |= register(vague, i, exact_key)
                    join(vague, i, hop, mine)
                    continue
            again = exact_key in latest
            p = len(creator)
            creator.append(i)
            segment.append(i)
            seen.append({})
            last.append(i)
            overlap = register(p, i, exact_key)
            retrans.append(overlap or (again and not pure[i]))
            loose[loose_key] = p
            join(p, i, hop, mine)
        return _Built(events=rows, packet=packet, creator=rows[np.array(creator, dtype=np.int64)],
                      segment=rows[np.array(segment, dtype=np.int64)],
                      retransmission=np.array(retrans, dtype=bool),
                      requeued=np.array(requeued, dtype=np.int64).reshape(-1, 2))


class _RangeIndex:
    """steps._RangeIndex on packet indices: data packets of one stream by
    relative start, to find the newest holding a range without a scan."""

    def __init__(self) -> None:
        self.los: list[int] = []
        self.items: list[tuple[int, int, int]] = []
        self.longest = 0

    def add(self, lo: int, hi: int, packet: int) -> None:
        at = bisect.bisect_right(self.los, lo)
        self.los.insert(at, lo)
        self.items.insert(at, (lo, hi, packet))
        self.longest = max(self.longest, hi - lo)

    def newest_holding(self, lo: int, hi: int) -> int | None:
        best: int | None = None
        j = bisect.bisect_right(self.los, lo) - 1
        while j >= 0 and self.los[j] + self.longest >= hi:
            p_lo, p_hi, packet = self.items[j]
            if p_lo <= lo and hi <= p_hi and (best is None or packet > best):
                best = packet
            j -= 1
        return best


def _check_requeues(pk: _Packets, trailer_pkt: np.ndarray) -> None:
    """A requeue joins only when the packet's last event is the same hop: a
    trailer appended in between would have made it a new packet."""
    if not len(pk.requeued) or not (trailer_pkt >= 0).any():
        return
    trailers = np.flatnonzero(trailer_pkt >= 0)
    for later, earlier in pk.requeued.tolist():
        row = pk.of_event[later]
        between = trailers[(trailers > earlier) & (trailers < later)]
        if (trailer_pkt[between] == row).any():
            raise Irregular("a requeued segment with a trailer between its two passes")


def _messages(c: EventColumns, r: EventRules, pt: ProbeTable, ft: FlowTable,
              place: np.ndarray, msg_key: np.ndarray, in_msg: np.ndarray,
              step_of_key: np.ndarray) -> MessageTable:
    """Messages with their inherited flow and side and message_bytes."""
    n = len(c)
    members = np.flatnonzero((place == PLACE_A) | (place == PLACE_C))
    key_of = np.where(place[members] == PLACE_A, msg_key[members], in_msg[members])
    keys = np.flatnonzero((place == PLACE_A) & (msg_key == np.arange(n)))
    row_of_key = np.full(n, -1, dtype=EVENT_INDEX)
    row_of_key[keys] = np.arange(len(keys))
    mrow = row_of_key[key_of]
    of_event = np.full(n, -1, dtype=EVENT_INDEX)
    of_event[members] = mrow
    nm = len(keys)

    def first_member(cond: np.ndarray) -> np.ndarray:
        firsts = first_index(np.where(cond, mrow, nm), nm + 1)[:nm]
        return take_or(members, firsts, -1)

    f_ev = first_member(ft.flow[members] >= 0)
    s_ev = first_member(ft.side[members] >= 0)
    flow = np.where(f_ev >= 0, ft.flow[np.maximum(f_ev, 0)], -1)
    side = np.where(s_ev >= 0, ft.side[np.maximum(s_ev, 0)], -1)
    probe = c.probe[keys]
    send = ~pt.known[probe] | (pt.direction[probe] == TX)
    # nbytes: the syscall's return (a lone return is its own message).
    sys_ret = (place[members] == PLACE_A) & c.is_return[members]
    ret_ev = first_member(sys_ret)
    at_ret = np.maximum(ret_ev, 0)
    nbytes_known = (ret_ev >= 0) & c.has_ret[at_ret]
    ret = np.where(nbytes_known, c.ret[at_ret], 0)
    # else the byte-counting calls' returns inside it (byte_ranges.inner_bytes)
    inner_count, has_inner = _inner_bytes(c, r, pt, members, mrow, nm, first_member)
    count = np.where(nbytes_known, ret, inner_count)
    has_count = nbytes_known | has_inner
    # A syscall whose return is no byte count (sendmmsg: messages, io_uring:
    # 0) moved the bytes of the calls inside it, unless it failed with none
    # moved (steps._syscall_event); a lone return of one counts nothing.
    # (Without its return, one counts the calls inside as any syscall.)
    counting = pt.ret_count[probe] & (ret_ev >= 0)
    closed = ret_ev != keys
    by_inner = closed & ((ret >= 0) | (has_inner & (inner_count > 0)))
    count = np.where(counting & by_inner, inner_count, count)
    has_count = np.where(counting, np.where(by_inner, has_inner, closed & nbytes_known),
                         has_count)
    return MessageTable(key=keys, step=step_of_key[keys], flow=flow, side=side, send=send,
                        count=count, has_count=has_count, of_event=of_event)


def _inner_bytes(c: EventColumns, r: EventRules, pt: ProbeTable, members: np.ndarray,
                 mrow: np.ndarray, nm: int, first_member: Callable[[np.ndarray], np.ndarray]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """byte_ranges.inner_bytes per message row: the sum of the positive byte
    counts its calls returned, else the first such return (0 or -errno);
    and whether any returned."""
    inner = (c.is_return[members] & c.has_ret[members] & pt.ret_value[c.probe[members]]
             & (r.layer[members] != SYSCALL))
    in_ev = first_member(inner)
    has = in_ev >= 0
    first = np.where(has, c.ret[np.maximum(in_ev, 0)], 0)
    ret = c.ret[members]
    moved = inner & (ret > 0)
    total = np.zeros(nm, dtype=np.int64)
    np.add.at(total, mrow[moved], ret[moved])
    some = np.bincount(mrow[moved], minlength=nm)[:nm] > 0
    return np.where(some, total, first), has
