"""`kpath replay --stats` computed on columns: per flow, the byte accounting
of each direction, the latency distribution of each hop and every packet's
hops, as the object path computes them (viz/stats_text.render_stats over
build_timeline), with Python objects only for what is printed.

Stages, each returning new data: columns_of (columns.py) -> event_rules ->
flow_table -> step_table -> wire_points, then per flow the byte placement
(byte_table.py), the syscall and copy points, the accounting; last the
hops and their distributions (latency_table.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from probes.catalog import BY_NAME, ProbeSpec
from tracer.events import Endpoint
from tracer.timeline.accounting import ORIGIN_PROBE, ByteAccount
from tracer.timeline.columnar.byte_table import MessageRows, PacketRows, place_direction, union
from tracer.timeline.columnar.columns import EventColumns, columns_of
from tracer.timeline.columnar.event_table import EventRules, event_rules
from tracer.timeline.columnar.flow_table import FlowTable, flow_table
from tracer.timeline.columnar.grouping import take_or
from tracer.timeline.columnar.latency_table import (
    HOPS,
    POINT_COL,
    PacketPoints,
    loss_windows,
    packet_points,
    stabbing_min,
    wire_points,
)
from tracer.timeline.columnar.probe_table import SYSCALL, TX, ProbeTable
from tracer.timeline.columnar.step_table import StepTable, step_table
from tracer.timeline.latency import LOSS_WINDOW_NS, HopStats, PacketClass, Point
from tracer.timeline.model import RangeSource, Role
from tracer.timeline.segments import Segment
from tracer.tracefile import Lost

ROLES = (Role.CLIENT, Role.SERVER)
CLASSES = tuple(PacketClass)


@dataclass(frozen=True, slots=True)
class StatsInput:
    """What --stats reads of a trace: its events as one Arrow table
    (EVENT_SCHEMA) and the records about it."""

    path: str
    events: pa.Table
    lost: Sequence[Lost]
    lost_total: int
    cut_short: str | None


@dataclass(frozen=True, slots=True)
class FlowPackets:
    """One flow's packets in step order, as columns (one row per packet)."""

    step: list[int]
    label: list[str]
    sender: list[Role]
    klass: list[PacketClass]
    hops: np.ndarray  # (packets, len(HOPS)) ns
    has_hop: np.ndarray  # (packets, len(HOPS)) bool
    gap: list[bool]


@dataclass(frozen=True, slots=True)
class StreamNote:
    sender: Role
    anchor: RangeSource | None
    problems: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FlowStats:
    number: int
    client: Endpoint
    server: Endpoint
    netns: tuple[int, int]  # client's, server's (0 unknown)
    socks: tuple[list[int], list[int]]
    accounts: tuple[ByteAccount, ByteAccount]
    streams: tuple[StreamNote, StreamNote]
    hop_stats: list[HopStats]
    packets: FlowPackets

    @property
    def title(self) -> str:
        return f"{self.client} (client) <-> {self.server} (server)"


@dataclass(frozen=True, slots=True)
class TraceStats:
    path: str
    events: int
    flow_count: int
    lost_total: int
    cut_short: str | None
    lost_noticed: int  # sum of the loss records' counts
    has_gaps: bool
    flows: list[FlowStats]  # the flows asked for


def endpoint_of(code: int) -> Endpoint:
    return Endpoint(str(ipaddress.IPv4Address(code >> 16)), code & 0xFFFF)


class PreparedStats:
    """The tables of one trace (flows, steps, packets); statistics of any
    flow from them. Irregular when the trace needs a rule the columnar path
    does not reproduce."""

    def __init__(self, inp: StatsInput,
                 lookup: Callable[[str], ProbeSpec | None] = BY_NAME.get) -> None:
        self.inp = inp
        c = self.columns = columns_of(inp.events)
        pt = ProbeTable.build(c.probe_names, lookup)
        r = event_rules(c, pt)
        ft = flow_table(c, r, pt)
        st = step_table(c, r, pt, ft)
        self._work = _FlowWork(c, r, pt, ft, st)

    @property
    def flow_count(self) -> int:
        return self._work.ft.count

    def stats(self, flow: int | None = None) -> TraceStats:
        """All flows, or flow `flow` (1-based; KeyError if there is none)."""
        inp, work, c = self.inp, self._work, self.columns
        if flow is not None and not 1 <= flow <= self.flow_count:
            raise KeyError(flow)
        stamps = [int(c.ts[0])] if len(c) else []
        stamps += [rec.ts_ns for rec in inp.lost]
        start = min(stamps) if stamps else 0
        gaps = sorted(inp.lost, key=lambda rec: rec.ts_ns)
        ends, starts = loss_windows([g.ts_ns for g in gaps], start, LOSS_WINDOW_NS)
        wanted = [flow - 1] if flow is not None else list(range(self.flow_count))
        points = wire_points(c, work.r, work.pt, work.ft, work.st)
        placed = {f: work.place(f, points) for f in wanted}
        pp = packet_points(c, work.st, points, ends, starts)
        hop_stats = _hop_stats(work.pk_order[work.pk_bounds[wanted[0]]:
                                             work.pk_bounds[wanted[-1] + 1]]
                               if wanted else np.zeros(0, dtype=np.int64),
                               work.st.packets.flow, work.st.packets.sender, pp)
        out = [work.flow_stats(f, placed[f], pp, hop_stats.get(f + 1, []),
                               work.flow_gaps(f, gaps), inp.cut_short) for f in wanted]
        return TraceStats(path=inp.path, events=len(c), flow_count=self.flow_count,
                          lost_total=inp.lost_total, cut_short=inp.cut_short,
                          lost_noticed=sum(g.count for g in gaps), has_gaps=bool(gaps),
                          flows=out)


def trace_stats(inp: StatsInput, flow: int | None = None,
                lookup: Callable[[str], ProbeSpec | None] = BY_NAME.get) -> TraceStats:
    return PreparedStats(inp, lookup).stats(flow)


@dataclass(frozen=True, slots=True)
class _Placed:
    sends: tuple[MessageRows, MessageRows]  # by sender
    recvs: tuple[MessageRows, MessageRows]  # by sender: the peer's recvs of its bytes
    notes: tuple[StreamNote, StreamNote]


class _FlowWork:
    """Per-flow views of the tables: rows sorted by (flow, step id) once,
    sliced per flow."""

    def __init__(self, c: EventColumns, r: EventRules, pt: ProbeTable, ft: FlowTable,
                 st: StepTable) -> None:
        self.c, self.r, self.pt, self.ft, self.st = c, r, pt, ft, st
        pk, mt = st.packets, st.messages
        self.pk_order = np.lexsort((pk.step, pk.flow))
        self.pk_bounds = np.searchsorted(pk.flow[self.pk_order], np.arange(ft.count + 1))
        m_flow = np.where(mt.flow >= 0, mt.flow, ft.count)
        self.m_order = np.lexsort((mt.step, m_flow))
        self.m_bounds = np.searchsorted(m_flow[self.m_order], np.arange(ft.count + 1))
        copy = (pt.datagram_iter[c.probe] & (c.seq >= 0) & c.has_length & (c.length > 0))
        rows = np.flatnonzero(copy & (st.step_flow >= 0))
        rows = rows[np.argsort(st.step_flow[rows], kind="stable")]
        self.copy_rows = rows
        self.copy_bounds = np.searchsorted(st.step_flow[rows], np.arange(ft.count + 1))
        # Accounting's events: ones seeing a data segment in a data packet.
        seg_pkt = st.packets.seg_of_event
        count_ev = (seg_pkt >= 0) & r.is_seg & (r.payload > 0) & pt.known[c.probe]
        count_ev &= take_or(pk.payload, seg_pkt, 0) > 0
        rows = np.flatnonzero(count_ev)
        key = pk.flow[seg_pkt[rows]] * 2 + pk.sender[seg_pkt[rows]]
        order = np.argsort(key, kind="stable")
        self.count_rows = rows[order]
        self.count_bounds = np.searchsorted(key[order], np.arange(2 * ft.count + 1))
        self.ts_list = c.ts

    def _messages(self, f: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.m_order[self.m_bounds[f]:self.m_bounds[f + 1]]
        return rows, self.st.messages.side[rows]

    def place(self, f: int, points: np.ndarray) -> _Placed:
        """Byte placement of both directions; fills the flow's packets'
        syscall and copy points."""
        c, ft, st = self.c, self.ft, self.st
        mt, pk = st.messages, st.packets
        mrows, mside = self._messages(f)
        prow = self.pk_order[self.pk_bounds[f]:self.pk_bounds[f + 1]]
        crows = self.copy_rows[self.copy_bounds[f]:self.copy_bounds[f + 1]]
        c_msg = mt.of_event[crows]
        sends: list[MessageRows] = []
        recvs: list[MessageRows] = []
        notes: list[StreamNote] = []
        for s in (0, 1):
            sender_ep = int(ft.client[f] if s == 0 else ft.server[f])
            isn = int(ft.isn[f, s])
            s_rows = mrows[mt.send[mrows] & (mside == s)]
            r_rows = mrows[~mt.send[mrows] & (mside == 1 - s)]
            sm = _rows(mt.step[s_rows], mt.key[s_rows], mt.count[s_rows], mt.has_count[s_rows])
            rm = _rows(mt.step[r_rows], mt.key[r_rows], mt.count[r_rows], mt.has_count[r_rows])
            sends.append(sm)
            recvs.append(rm)
            d_rows = prow[(pk.sender[prow] == s) & (pk.lo[prow] >= 0)]
            data = PacketRows(ids=pk.step[d_rows].tolist(), los=pk.lo[d_rows].tolist(),
                              payloads=pk.payload[d_rows].tolist(),
                              retrans=pk.retransmission[d_rows].tolist(),
                              messages=pk.message[d_rows].tolist())
            # the peer's copies of this sender's bytes, by recv message
            mine = (c.dst[crows] == sender_ep) & (c_msg >= 0)
            cr = crows[mine]
            c_lo = _rel(c.seq[cr], isn)
            c_hi = c_lo + c.length[cr]
            c_step = mt.step[c_msg[mine]]
            copies: dict[int, list[tuple[int, int]]] = {}
            for mid, lo, hi in zip(c_step.tolist(), c_lo.tolist(), c_hi.tolist(), strict=True):
                copies.setdefault(mid, []).append((lo, hi))
            start = 1 if ft.isn_from_syn[f, s] else None
            stream, reads = place_direction(sm, rm, data, copies, start)
            notes.append(StreamNote(sender=ROLES[s], anchor=stream.anchor,
                                    problems=tuple(stream.problems)))
            self._byte_points(points, d_rows, sm, stream.ranges, c_msg[mine], cr, c_lo, c_hi,
                              s, mrows, mside)
        return _Placed(sends=(sends[0], sends[1]), recvs=(recvs[0], recvs[1]),
                       notes=(notes[0], notes[1]))

    def _byte_points(self, points: np.ndarray, d_rows: np.ndarray, sends: MessageRows,
                     ranges: dict[int, tuple[int, int]], c_msg: np.ndarray, cr: np.ndarray,
                     c_lo: np.ndarray, c_hi: np.ndarray, s: int, mrows: np.ndarray,
                     mside: np.ndarray) -> None:
        """Point.SYSCALL: the entry of the lowest-id send whose range holds
        the packet's first byte; Point.COPY: the earliest copy (in the
        peer's recvs) holding it."""
        if not len(d_rows):
            return
        c, r, pk, mt = self.c, self.r, self.st.packets, self.st.messages
        los = pk.lo[d_rows].tolist()
        intervals = [(lo_hi[0], lo_hi[1], mid, key) for mid, key in zip(sends.ids, sends.keys,
                                                                         strict=True)
                     if (lo_hi := ranges.get(mid)) is not None]
        entry = [key if r.layer[key] == SYSCALL and not c.is_return[key] else -1
                 for key in (it[3] for it in intervals)]
        intervals = [(lo, hi, mid, e) for (lo, hi, mid, _), e in zip(intervals, entry,
                                                                     strict=True)]
        syscall = stabbing_min(intervals, los)
        # copies inside the peer's recv messages
        peer_recv = set(mt.step[mrows[~mt.send[mrows] & (mside == 1 - s)]].tolist())
        c_steps = mt.step[c_msg].tolist()
        copy_iv = [(lo, hi, ev, ev) for lo, hi, ev, mid in zip(c_lo.tolist(), c_hi.tolist(),
                                                                cr.tolist(), c_steps,
                                                                strict=True)
                   if mid in peer_recv]
        copy = stabbing_min(copy_iv, los)
        points[d_rows, POINT_COL[Point.SYSCALL]] = syscall
        points[d_rows, POINT_COL[Point.COPY]] = copy

    def flow_gaps(self, f: int, gaps: list[Lost]) -> list[Lost]:
        end = int(self.st.flow_end[f])
        after = int(np.searchsorted(self.c.ts, end, side="right"))
        until = int(self.c.ts[after]) if after < len(self.c) else None
        begin = int(self.st.flow_start[f])
        return [g for g in gaps if begin <= g.ts_ns and (until is None or g.ts_ns <= until)]

    def flow_stats(self, f: int, placed: _Placed, pp: PacketPoints, hop_stats: list[HopStats],
                   gaps: list[Lost], cut_short: str | None) -> FlowStats:
        ft, pk = self.ft, self.st.packets
        prow = self.pk_order[self.pk_bounds[f]:self.pk_bounds[f + 1]]
        accounts = tuple(self._account(f, s, placed, prow, gaps, cut_short) for s in (0, 1))
        return FlowStats(
            number=f + 1, client=endpoint_of(int(ft.client[f])),
            server=endpoint_of(int(ft.server[f])),
            netns=(int(ft.netns[f, 0]), int(ft.netns[f, 1])), socks=ft.socks[f],
            accounts=(accounts[0], accounts[1]), streams=placed.notes,
            hop_stats=hop_stats,
            packets=_flow_packets(prow, pk.step, pk.sender, pk.flags, pk.payload, pp))

    def _account(self, f: int, s: int, placed: _Placed, prow: np.ndarray, gaps: list[Lost],
                 cut_short: str | None) -> ByteAccount:
        c, r, pt, ft, pk = self.c, self.r, self.pt, self.ft, self.st.packets
        sends, recvs = placed.sends[s], placed.recvs[s]
        sender_ep = int(ft.client[f] if s == 0 else ft.server[f])
        ev = self.count_rows[self.count_bounds[2 * f + s]:self.count_bounds[2 * f + s + 1]]
        at = _counting_probe(c, r, pt, ft.endpoint, c.src[pk.creator[pk.seg_of_event[ev]]], ev)
        ranges: list[tuple[int, int]] = []
        counted: set[int] = set()
        if at is not None:
            code = c.probe_names.index(at)
            hit = ev[c.probe[ev] == code]
            lo = _rel(c.seq[hit], int(ft.isn[f, s]))
            ranges = list(zip(lo.tolist(), (lo + r.payload[hit]).tolist(), strict=True))
            rows = pk.seg_of_event[hit]
            counted = set(rows[~pk.retransmission[rows]].tolist())
        mine = prow[pk.sender[prow] == s]
        crows = self.copy_rows[self.copy_bounds[f]:self.copy_bounds[f + 1]]
        copied = c.length[crows[c.dst[crows] == sender_ep]]
        unknown = sum(x is None for x in sends.counts)
        notes = []
        if unknown:
            notes.append(f"{unknown} send(s) without a return value")
        if gaps:
            notes.append(f"{sum(g.count for g in gaps)} event(s) lost during the flow")
        if cut_short:
            notes.append("trace cut short")
        return ByteAccount(
            flow=f + 1, sender=ROLES[s],
            written=sum(x for x in sends.counts if x is not None and x > 0),
            sends=len(sends.ids),
            failed_sends=sum(x is not None and x < 0 for x in sends.counts),
            unknown_sends=unknown,
            carried=sum(hi - lo for lo, hi in union(ranges)),
            carried_at=at,
            segments=len(counted),
            retransmitted=int(pk.payload[mine[pk.retransmission[mine]]].sum()),
            read=sum(x for x in recvs.counts if x is not None and x > 0),
            recvs=len(recvs.ids),
            copied=int(copied.sum()),
            copies=len(copied),
            complete=not gaps and not cut_short,
            notes=tuple(notes),
        )


def _rel(seq: np.ndarray, isn: int) -> np.ndarray:
    return (seq - isn) % (1 << 32) if isn >= 0 else seq


def _rows(ids: np.ndarray, keys: np.ndarray, counts: np.ndarray, has: np.ndarray
          ) -> MessageRows:
    return MessageRows(ids=ids.tolist(), keys=keys.tolist(),
                       counts=[x if h else None for x, h in zip(counts.tolist(), has.tolist(),
                                                                  strict=True)])


def _counting_probe(c: EventColumns, r: EventRules, pt: ProbeTable, endpoint: np.ndarray,
                    src: np.ndarray, ev: np.ndarray) -> str | None:
    """accounting._counting_probe: __tcp_transmit_skb when it saw a data
    segment; else the deepest transmit layer, else the first receive layer,
    the most frequent probe there (ties: by name)."""
    if not len(ev):
        return None
    probes = c.probe[ev]
    if pt.origin_probe[probes].any():
        return ORIGIN_PROBE
    tx = (r.direction[ev] == TX) & (endpoint[ev] == src)
    rank = np.where(tx, 0, 1) * 16 - r.layer[ev].astype(np.int64)
    best = rank == rank.min()
    names, counts = np.unique(probes[best], return_counts=True)
    by_name = sorted((c.probe_names[int(p)], int(k)) for p, k in zip(names, counts, strict=True))
    return max(by_name, key=lambda it: it[1])[0]


def _hop_stats(rows: np.ndarray, flow: np.ndarray, sender: np.ndarray, pp: PacketPoints
               ) -> dict[int, list[HopStats]]:
    """latency_stats of the packets `rows` (whole flows): per flow number,
    the distributions per (sender, class, hop) in latency_stats' order."""
    has = pp.has_hop[rows]
    p_idx, h_idx = np.nonzero(has)
    if not len(p_idx):
        return {}
    rows = rows[p_idx]
    fl, snd, kl, gap = flow[rows], sender[rows], pp.klass[rows], pp.gap[rows]
    val = pp.hops[rows, h_idx]
    order = np.lexsort((val, gap, h_idx, kl, snd, fl))
    fl, snd, kl, h_idx, gap, val = (a[order] for a in (fl, snd, kl, h_idx, gap, val))
    grp = ((fl * 2 + snd) * len(CLASSES) + kl) * len(HOPS) + h_idx
    starts = np.flatnonzero(np.r_[True, grp[1:] != grp[:-1]])
    ends = np.r_[starts[1:], len(grp)]
    gaps = np.add.reduceat(gap.astype(np.int64), starts)
    n = ends - starts - gaps  # measured values come first in each group (gap sorts last)
    some = n > 0
    first = val[starts]
    last = val[np.maximum(starts + n - 1, 0)]
    mid = starts + n // 2
    hi_mid = val[np.minimum(mid, len(val) - 1)]
    lo_mid = val[np.maximum(mid - 1, 0)]
    # statistics.median, then round(): halves go to the even neighbour
    pair_sum = lo_mid + hi_mid
    even_median = pair_sum // 2 + ((pair_sum % 2 == 1) & ((pair_sum // 2) % 2 == 1))
    median = np.where(n % 2 == 1, hi_mid, even_median)
    rank = np.maximum(np.ceil(0.99 * n).astype(np.int64) - 1, 0)
    p99 = val[np.minimum(starts + rank, len(val) - 1)]
    out: dict[int, list[HopStats]] = {}
    for i, (f, s_, k, h, cnt, g, ok) in enumerate(zip(
            fl[starts].tolist(), snd[starts].tolist(), kl[starts].tolist(),
            h_idx[starts].tolist(), n.tolist(), gaps.tolist(), some.tolist(), strict=True)):
        out.setdefault(f + 1, []).append(HopStats(
            flow=f + 1, sender=ROLES[s_], klass=CLASSES[k], hop=HOPS[h], count=cnt,
            min_ns=int(first[i]) if ok else 0, median_ns=int(median[i]) if ok else 0,
            p99_ns=int(p99[i]) if ok else 0, max_ns=int(last[i]) if ok else 0, gaps=g))
    return out


def _flow_packets(prow: np.ndarray, step: np.ndarray, sender: np.ndarray, flags: np.ndarray,
                  payload: np.ndarray, pp: PacketPoints) -> FlowPackets:
    labels: dict[tuple[int, int], str] = {}
    label_list = []
    for fl, pay in zip(flags[prow].tolist(), payload[prow].tolist(), strict=True):
        label = labels.get((fl, pay))
        if label is None:
            label = labels[(fl, pay)] = _label(fl, pay)
        label_list.append(label)
    return FlowPackets(step=step[prow].tolist(), label=label_list,
                       sender=[ROLES[x] for x in sender[prow].tolist()],
                       klass=[CLASSES[x] for x in pp.klass[prow].tolist()],
                       hops=pp.hops[prow], has_hop=pp.has_hop[prow], gap=pp.gap[prow].tolist())


def _label(flags: int, payload: int) -> str:
    probe = Segment(Endpoint("0.0.0.0", 0), Endpoint("0.0.0.0", 0), 0, 0, flags, None, payload)
    return probe.label
