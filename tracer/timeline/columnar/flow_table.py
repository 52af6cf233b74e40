"""Flows on columns: the rules of tracer/timeline/flows.py (flow_keys,
make_flows, _assign_roles, _set_bases) for every event at once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracer.events import TCP_ACK, TCP_FIN, TCP_SYN
from tracer.timeline.columnar.columns import NO_EP, EventColumns
from tracer.timeline.columnar.errors import Irregular
from tracer.timeline.columnar.event_table import PORT_MASK, EventRules, EventTuples, event_tuples
from tracer.timeline.columnar.grouping import (
    factorize,
    factorize_firsts,
    first_index,
    last_at_or_before,
    stable_argsort,
    take_or,
)
from tracer.timeline.columnar.probe_table import RX, ProbeTable
from tracer.timeline.flows import REPLY_FLAGS
from tracer.timeline.segments import HALF_SEQ, SEQ_MOD

CLIENT, SERVER, NO_SIDE = 0, 1, -1


@dataclass(frozen=True, slots=True)
class FlowTable:
    # Per-event columns in the narrowest type their values need (int32 flow
    # numbers, int8 sides): they are held through the step table.
    flow: np.ndarray  # int32 per event: 0-based flow number - 1, -1 without a flow
    endpoint: np.ndarray  # per event: own side, else the socket's local end (NO_EP)
    side: np.ndarray  # int8 per event: CLIENT, SERVER or NO_SIDE
    client: np.ndarray  # per flow, endpoint codes
    server: np.ndarray
    handshake: np.ndarray  # per flow: roles from a SYN (else from ports)
    isn: np.ndarray  # (flows, 2) base of each sender's sequence numbers, -1 unknown
    isn_from_syn: np.ndarray  # (flows, 2) bool
    netns: np.ndarray  # (flows, 2) most common netns of each end, 0 unknown
    # per flow: each end's sockets in order, then the kernel's reply sockets
    socks: list[tuple[list[int], list[int], list[int]]]
    first: np.ndarray  # per flow, its first event (flows are numbered in this order)

    @property
    def count(self) -> int:
        return len(self.client)

    def rel(self, flow: np.ndarray, sender: np.ndarray, value: np.ndarray) -> np.ndarray:
        """Flow.rel: sequence numbers relative to the sender's base."""
        base = self.isn[flow, sender]
        return np.where(base >= 0, (value - base) % SEQ_MOD, value)


def flow_table(c: EventColumns, r: EventRules, pt: ProbeTable) -> FlowTable:
    # Each per-event temporary is deleted after its last use: a 10 M-event
    # trace holds 80 MB per int64 column.
    n = len(c)
    idx = np.arange(n, dtype=np.int64)
    t = event_tuples(c, pt)
    tup, _ = factorize(np.where(t.has_tuple, t.tuple_lo, -1), np.where(t.has_tuple, t.tuple_hi, -1))
    tup = np.where(t.has_tuple, tup, -1)

    _check_namespaces(c, t, tup)
    key = tup.copy()
    endpoint = t.own_side  # t's own: its own_side is not read after this

    # sk -> (flow, local end), taught by socket captures; recycled sockets:
    # the latest mapping before the event, else the first one after it.
    teach = (key >= 0) & (c.sk != 0) & c.has_saddr & pt.socket[c.probe]
    t_idx = idx[teach]
    sk_ids, _ = factorize(c.source, c.sk)
    t_sk = sk_ids[t_idx]
    order = stable_argsort(t_sk)  # t_idx ascends: ties in event order
    t_idx, t_sk = t_idx[order], t_sk[order]
    t_key = key[t_idx]
    change = np.ones(len(t_idx), dtype=bool)
    change[1:] = (t_sk[1:] != t_sk[:-1]) | (t_key[1:] != t_key[:-1])
    m_idx, m_sk = t_idx[change], t_sk[change]
    m_key = key[m_idx]
    m_local = np.where(c.src[m_idx] == t.tuple_lo[m_idx], t.tuple_lo[m_idx], t.tuple_hi[m_idx])
    has_map = np.zeros(int(sk_ids.max(initial=-1)) + 1, dtype=bool)
    has_map[m_sk] = True
    ask = (key < 0) & (c.sk != 0) & has_map[sk_ids]
    q_idx = idx[ask]
    # "Stamps <= ts": the last event with a timestamp <= ts bounds the marks.
    q_pos = np.searchsorted(c.ts, c.ts[q_idx], side="right") - 1
    hit = last_at_or_before(m_sk, m_idx, sk_ids[q_idx], q_pos)
    first_of_sk = np.zeros(len(has_map), dtype=np.int64)
    first_of_sk[m_sk[::-1]] = np.arange(len(m_sk))[::-1]
    hit = np.where(hit >= 0, hit, first_of_sk[sk_ids[q_idx]])
    key[q_idx] = m_key[hit]
    sock_side = pt.socket[c.probe[q_idx]]
    endpoint[q_idx] = np.where(endpoint[q_idx] != NO_EP, endpoint[q_idx],
                               np.where(sock_side, m_local[hit], NO_EP))
    del idx, tup, teach, sk_ids, has_map, ask, q_idx, q_pos, hit, sock_side

    # Flows numbered in order of first event.
    # Dense ids in key order (np.unique's inverse), sorting only runs' heads.
    inverse, nuniq = factorize(np.where(key >= 0, key, np.iinfo(np.int64).max))
    nkeys = nuniq - (1 if (key < 0).any() else 0)
    inverse = np.where(key >= 0, inverse, -1)
    first = first_index(np.where(inverse >= 0, inverse, nkeys), nkeys + 1)[:nkeys]
    rank = np.empty(nkeys, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(nkeys)
    if nkeys >= 1 << 29:  # flow * 4 + ... stays within int32
        raise Irregular(f"{nkeys} flows: more than the columns number")
    # No flow at all (a part of a trace, a broken file): rank is empty.
    flow = (np.where(inverse >= 0, rank[np.maximum(inverse, 0)], -1) if nkeys
            else np.full(len(inverse), -1)).astype(np.int32)
    del key, inverse
    nflows = nkeys
    f_first = np.sort(first)
    lo, hi = t.tuple_lo[f_first], t.tuple_hi[f_first]
    del t

    client, server, handshake = _roles(c, r, flow, nflows, lo, hi)
    side = np.full(n, NO_SIDE, dtype=np.int8)
    ev_client, ev_server = take_or(client, flow, NO_EP), take_or(server, flow, NO_EP)
    has_flow = flow >= 0
    side[has_flow & (endpoint == ev_client)] = CLIENT
    side[has_flow & (endpoint != ev_client) & (endpoint == ev_server)] = SERVER
    del ev_client, ev_server, has_flow

    netns = _most_common_netns(c, flow, side, nflows)
    socks = _sockets(c, pt, flow, side, nflows)
    isn, from_syn = _bases(c, r, pt, flow, endpoint, client, server, nflows)
    return FlowTable(flow=flow, endpoint=endpoint, side=side, client=client, server=server,
                     handshake=handshake, isn=isn, isn_from_syn=from_syn, netns=netns,
                     socks=socks, first=f_first)


def _check_namespaces(c: EventColumns, t: EventTuples, tup: np.ndarray) -> None:
    """One end seen in several namespaces means the 4-tuple is reused by
    distinct connections (flows._split_by_netns): not reproduced here."""
    m = (tup >= 0) & (c.netns != 0) & (t.own_side != NO_EP)
    if not m.any():
        return
    end, ends = factorize(tup[m], t.own_side[m])
    netns = c.netns[m].astype(np.int64)
    # Several namespaces at one end: its lowest and highest differ.
    low = np.full(ends, np.iinfo(np.int64).max)
    high = np.full(ends, -1, dtype=np.int64)
    np.minimum.at(low, end, netns)
    np.maximum.at(high, end, netns)
    if (low != high).any():
        raise Irregular("a connection end seen in several network namespaces "
                        "(4-tuple reused across namespaces)")


def _roles(c: EventColumns, r: EventRules, flow: np.ndarray, nflows: int, lo: np.ndarray,
           hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """_assign_roles: the first SYN of the flow, else the lower port serves."""
    syn = (flow >= 0) & r.is_seg & ((c.flags & TCP_SYN) != 0)
    first_syn = first_index(np.where(syn, flow, nflows), nflows + 1)[:nflows]
    lo_serves = ((lo & PORT_MASK) < (hi & PORT_MASK)) | (
        ((lo & PORT_MASK) == (hi & PORT_MASK)) & (lo <= hi))
    server = np.where(lo_serves, lo, hi)
    client = np.where(lo_serves, hi, lo)
    has = first_syn >= 0
    at = first_syn[has]
    synack = (c.flags[at] & TCP_ACK) != 0
    client[has] = np.where(synack, c.dst[at], c.src[at])
    server[has] = np.where(synack, c.src[at], c.dst[at])
    return client, server, has


def _most_common_netns(c: EventColumns, flow: np.ndarray, side: np.ndarray,
                       nflows: int) -> np.ndarray:
    """Counter.most_common(1): the most frequent, the first seen on a tie."""
    out = np.zeros((nflows, 2), dtype=np.int64)
    m = (flow >= 0) & (side >= 0) & (c.netns != 0)
    if not m.any():
        return out
    rows = np.flatnonzero(m)
    end = flow[rows] * 2 + side[rows]
    grp, ng, firsts = factorize_firsts(end, c.netns[rows])
    counts = np.bincount(grp, minlength=ng)
    g_end = end[firsts]
    g_ns = c.netns[rows[firsts]]
    order = np.lexsort((firsts, -counts, g_end))
    best = order[np.r_[True, g_end[order][1:] != g_end[order][:-1]]]
    out.reshape(-1)[g_end[best]] = g_ns[best]
    return out


def _sockets(c: EventColumns, pt: ProbeTable, flow: np.ndarray, side: np.ndarray,
             nflows: int) -> list[tuple[list[int], list[int], list[int]]]:
    """Each end's sockets in order of first sight (flows._owns_sk: a header
    capture's skb->sk on receive is not trusted, a sock argument is), and the
    kernel's reply sockets (flows.kernel_reply_sockets) apart."""
    p = c.probe
    reply = _reply_sockets(c, pt)
    owns = ~(pt.header[p] & ~pt.sock_skb_l3[p] & (pt.direction[p] == RX))
    # ends 0 and 1 of a flow are its client and server; 2 its reply sockets
    own_rows = (flow >= 0) & (side >= 0) & (c.sk != 0) & owns & ~reply
    reply_rows = (flow >= 0) & reply
    rows = np.flatnonzero(own_rows | reply_rows)
    end = flow[rows] * 3 + np.where(reply_rows[rows], 2, side[rows])
    _, _, firsts = factorize_firsts(end, c.source[rows], c.sk[rows])
    firsts = np.sort(firsts)
    out: list[tuple[list[int], list[int], list[int]]] = [([], [], []) for _ in range(nflows)]
    for e, sk in zip(end[firsts].tolist(), c.sk[rows[firsts]].tolist(), strict=True):
        out[e // 3][e % 3].append(sk)
    return out


def _reply_sockets(c: EventColumns, pt: ProbeTable) -> np.ndarray:
    """Per event: its sk is named only by reply-like segments (flows.is_reply_like)."""
    p = c.probe
    like = (pt.header[p] & ~pt.sock_skb_l3[p] & (c.seq >= 0)
            & ((c.flags & (TCP_SYN | TCP_FIN)) == 0) & ((c.flags & REPLY_FLAGS) != 0)
            & (c.length == 0))
    named = c.sk != 0
    ids, n = factorize(c.source[named], c.sk[named])
    other = np.zeros(n, dtype=bool)
    other[ids[~like[named]]] = True
    out = np.zeros(len(c.sk), dtype=bool)
    out[named] = ~other[ids]
    return out


def _bases(c: EventColumns, r: EventRules, pt: ProbeTable, flow: np.ndarray,
           endpoint: np.ndarray, client: np.ndarray, server: np.ndarray,
           nflows: int) -> tuple[np.ndarray, np.ndarray]:
    """_set_bases: the sender's SYN, else the lowest sequence number of its
    stream (segments, and copies of its bytes by the peer's reader)."""
    isn = np.full((nflows, 2), -1, dtype=np.int64)
    from_syn = np.zeros((nflows, 2), dtype=bool)
    copy = (flow >= 0) & ~r.is_seg & pt.datagram_iter[c.probe] & (c.seq >= 0)
    seg = (flow >= 0) & r.is_seg
    rows = np.flatnonzero(seg | copy)
    f = flow[rows]  # all >= 0: segments and copies of a flow only
    # Only these rows' owners: per-event arrays of them would cost 16 bytes an event.
    owner_ep = np.where(seg[rows], c.src[rows],
                        np.where(endpoint[rows] == server[f], client[f], server[f]))
    is_client = owner_ep == client[f]
    if (seg[rows] & ~is_client & (owner_ep != server[f])).any():
        raise Irregular("a segment whose source is neither end of its flow")
    owner = np.where(is_client, 0, 1)
    value = c.seq[rows]
    syn = seg[rows] & ((c.flags[rows] & TCP_SYN) != 0)
    grp = f * 2 + owner
    ng = nflows * 2
    flat_isn, flat_syn = isn.reshape(-1), from_syn.reshape(-1)
    first_syn = first_index(np.where(syn, grp, ng), ng + 1)[:ng]
    has_syn = first_syn >= 0
    flat_isn[has_syn] = value[first_syn[has_syn]]
    flat_syn[has_syn] = True
    rest = ~has_syn[grp]
    if rest.any():
        g = grp[rest]
        v = value[rest]
        v0 = np.zeros(ng, dtype=np.int64)
        firsts = first_index(g, ng)
        present = firsts >= 0
        v0[present] = v[firsts[present]]
        d = (v - v0[g]) % SEQ_MOD
        d = np.where(d >= HALF_SEQ, d - SEQ_MOD, d)
        lo = np.full(ng, np.iinfo(np.int64).max)
        hi = np.full(ng, np.iinfo(np.int64).min)
        np.minimum.at(lo, g, d)
        np.maximum.at(hi, g, d)
        if (hi[present] - lo[present] >= HALF_SEQ).any():
            raise Irregular("a stream's sequence numbers span half the sequence space")
        flat_isn[present] = (v0[present] + lo[present]) % SEQ_MOD
    return isn, from_syn
