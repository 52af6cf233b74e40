"""`kpath replay --stats` computed on columns: per flow, the byte accounting
of each direction, the latency distribution of each hop and every packet's
hops, as the object path computes them (viz/stats_text.render_stats over
build_timeline), with Python objects only for what is printed.

Stages, each returning new data: columns_of (columns.py) -> event_rules ->
flow_table -> step_table -> wire_points, then per flow the byte placement
(byte_table.py), the syscall and copy points, the accounting; last the
hops and their distributions (latency_table.py).

Memory: the whole trace is held as per-event columns while the tables are
made (about 200 bytes an event at the peak, step_table's); each column is
let go after the last stage that reads it, and the per-flow statistics
keep only the times and per-packet and per-message rows. The batches are
read one at a time; the text is made flow by flow (stats_by_flow). A large
file is rebuilt a part at a time instead (parts.py: PreparedStats.of_part).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np
import pyarrow as pa

from probes.catalog import BY_NAME, ProbeSpec
from tracer.events import Endpoint
from tracer.timeline.accounting import ORIGIN_PROBE, ByteAccount, account_notes, way_fields
from tracer.timeline.byte_ranges import KernelPiece, piece_way, way_of
from tracer.timeline.columnar.byte_table import (
    MessageRows,
    PacketRows,
    place_direction,
)
from tracer.timeline.columnar.columns import EventColumns, columns_of, release_freed_memory
from tracer.timeline.columnar.event_table import EventRules, event_rules
from tracer.timeline.columnar.flow_table import FlowTable, flow_table
from tracer.timeline.columnar.group_sums import (
    ListGroups,
    distinct_counts,
    message_sums,
    union_lengths,
)
from tracer.timeline.columnar.grouping import factorize_firsts, sort_order, take_or
from tracer.timeline.columnar.latency_table import (
    HOPS,
    POINT_COL,
    PacketPoints,
    packet_points,
    wire_points,
)
from tracer.timeline.columnar.loss_times import LossTimes
from tracer.timeline.columnar.probe_table import SYSCALL, TX, ProbeTable
from tracer.timeline.columnar.regular_bytes import (
    ByteColumns,
    message_direction,
    regular_placement,
)
from tracer.timeline.columnar.stabbing import stabbing_min_grouped
from tracer.timeline.columnar.step_table import StepTable, step_table
from tracer.timeline.latency import Hop, PacketClass, Point
from tracer.timeline.model import ByteRange, LossSummary, RangeSource, Role, StreamWays
from tracer.timeline.segments import Segment
from tracer.tracefile import Source
from tracer.tracefile.loss_columns import LossColumns

ROLES = (Role.CLIENT, Role.SERVER)
CLASSES = tuple(PacketClass)


@dataclass(frozen=True, slots=True)
class StatsInput:
    """What --stats reads of a trace: its events as one Arrow table
    (EVENT_SCHEMA) and the records about it."""

    path: str
    events: pa.Table | Iterable[pa.RecordBatch]  # read once
    lost: LossColumns
    lost_total: int
    cut_short: str | None
    sources: Sequence[Source] = ()  # the header's hosts


class StatsSource(Protocol):
    """What PreparedStats reads: the events once, then the records about
    them (read after the events: a scanned file knows them only then)."""

    @property
    def path(self) -> str: ...
    @property
    def events(self) -> pa.Table | Iterable[pa.RecordBatch]: ...
    @property
    def lost(self) -> LossColumns: ...
    @property
    def lost_total(self) -> int: ...
    @property
    def cut_short(self) -> str | None: ...
    @property
    def sources(self) -> Sequence[Source]: ...


@dataclass(frozen=True, slots=True)
class FlowPackets:
    """One flow's packets in step order, as columns (one row per packet):
    slices of its part's (a renderer joins a run of flows' again)."""

    step: np.ndarray  # int64
    label: list[str]
    sender: np.ndarray  # index in ROLES
    klass: np.ndarray  # index in CLASSES
    hops: np.ndarray  # (packets, len(HOPS)) ns
    has_hop: np.ndarray  # (packets, len(HOPS)) bool
    gap: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.step)


class HopRow(NamedTuple):
    """HopStats of one flow's (sender, class, hop): a tuple, as there are
    tens of thousands on a large trace."""

    sender: Role
    klass: PacketClass
    hop: Hop
    measured: int  # HopStats.count (gaps excluded)
    min_ns: int
    median_ns: int
    p99_ns: int
    max_ns: int
    gaps: int


HOP_FIELDS = len(HopRow._fields)


@dataclass(frozen=True, slots=True)
class HopTable:
    """The HopRows of a flow as one array, a row per (sender, class, hop):
    the members as their indices in ROLES, CLASSES, HOPS, then the counts
    and ns of HopRow (a trace of small flows has tens of rows per flow)."""

    values: np.ndarray  # (rows, HOP_FIELDS) int64

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[HopRow]:
        for s, k, h, *spread in self.values.tolist():
            yield HopRow(ROLES[s], CLASSES[k], HOPS[h], *spread)


NO_HOPS = HopTable(np.zeros((0, HOP_FIELDS), dtype=np.int64))


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
    socks: tuple[list[int], list[int], list[int]]  # client's, server's, the kernel's replies
    accounts: tuple[ByteAccount, ByteAccount]
    streams: tuple[StreamNote, StreamNote]
    hop_stats: HopTable
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
    losses: LossSummary  # the loss records
    flows: list[FlowStats]  # the flows asked for
    # The header's hosts (a merged trace: with each one's clock shift).
    sources: tuple[Source, ...] = ()


def endpoint_of(code: int) -> Endpoint:
    # str(ipaddress.IPv4Address(addr)), without building the address object
    addr = code >> 16
    return Endpoint(f"{addr >> 24}.{addr >> 16 & 255}.{addr >> 8 & 255}.{addr & 255}",
                    code & 0xFFFF)


class PreparedStats:
    """The tables of one trace (flows, steps, packets); statistics of any
    flow from them. Irregular when the trace needs a rule the columnar path
    does not reproduce."""

    def __init__(self, inp: StatsSource,
                 lookup: Callable[[str], ProbeSpec | None] = BY_NAME.get) -> None:
        c = columns_of(inp.events)
        release_freed_memory()
        # The batches are not kept; the records are complete once they are read.
        records = StatsInput(path=inp.path, events=(), lost=inp.lost,
                             lost_total=inp.lost_total, cut_short=inp.cut_short,
                             sources=inp.sources)
        self._prepare(c, ProbeTable.build(c.probe_names, lookup), records, None)

    @classmethod
    def of_part(cls, c: EventColumns, pt: ProbeTable, records: StatsInput,
                losses: LossTimes) -> PreparedStats:
        """The tables of a part of a trace, in columns: steps numbered from
        0 (the caller adds the steps of the parts before it), the loss
        windows and the losses during each flow from `losses` (the whole
        trace's)."""
        self = cls.__new__(cls)
        self._prepare(c, pt, records, losses)
        return self

    def _prepare(self, c: EventColumns, pt: ProbeTable, records: StatsInput,
                 losses: LossTimes | None) -> None:
        self.inp = records
        self._losses = losses
        r = event_rules(c, pt)
        c = _without(c, "end_seq", "ack")  # read by the rules only
        ft = flow_table(c, r, pt)
        c = _without(c, "sk", "netns", "has_saddr")  # read by the flows only
        st = step_table(c, r, pt, ft)
        work = _FlowWork(c, r, pt, ft, st)
        # Of the per-event columns, the statistics of any flow need only the
        # times (and, for the syscall points, each event's message): the
        # rest goes now, with the points the packets' own events give.
        self._wire = wire_points(c, r, pt, ft, st)
        self.ts = c.ts
        del c, r
        work.drop_per_event()
        self._work = work

    @property
    def flow_count(self) -> int:
        return self._work.ft.count

    @property
    def flow_firsts(self) -> np.ndarray:
        """Each flow's first event (its number's order)."""
        return self._work.ft.first

    @property
    def step_keys(self) -> np.ndarray:
        """Each step's first event, in step order."""
        return self._work.st.keys

    def flow_span(self, f: int) -> tuple[int, int]:
        """Flow f's (0-based) start_ns and end_ns."""
        st = self._work.st
        return int(st.flow_start[f]), int(st.flow_end[f])

    def stats(self, flow: int | None = None) -> TraceStats:
        """All flows, or flow `flow` (1-based; KeyError if there is none)."""
        head, flows = self.stats_by_flow(flow)
        return dataclasses.replace(head, flows=list(flows))

    def stats_by_flow(self, flow: int | None = None) -> tuple[TraceStats, Iterator[FlowStats]]:
        """stats(flow) with its flows made one at a time, as they are
        printed: the TraceStats (its `flows` empty) and the flows asked for.
        Only the flows' rows in the tables are held, not their printed
        cells."""
        inp, work, ts = self.inp, self._work, self.ts
        if flow is not None and not 1 <= flow <= self.flow_count:
            raise KeyError(flow)
        # A part is given the whole trace's losses (the same for every
        # part: made once); the whole trace has its times here.
        losses = self._losses if self._losses is not None else LossTimes.of(
            inp.lost, [ts], int(ts[0]) if len(ts) else None)
        wanted = [flow - 1] if flow is not None else list(range(self.flow_count))
        placed, ranges = work.place(wanted)
        points = work.with_byte_points(self._wire, wanted, ranges)
        pp = packet_points(ts, work.st, points, losses.window_ends, losses.window_starts)
        del points
        head = TraceStats(path=inp.path, events=len(ts), flow_count=self.flow_count,
                          lost_total=inp.lost_total, cut_short=inp.cut_short,
                          losses=losses.summary, flows=[], sources=tuple(inp.sources))

        def flows() -> Iterator[FlowStats]:
            bounds, pk = work.pk_bounds, work.st.packets
            packets = _packet_rows(work.pk_order, pk, pp)
            hop_stats: dict[int, HopTable] = {}
            made = 0  # the distributions of the flows below this are made
            for f in wanted:
                if f >= made:
                    made = int(np.searchsorted(bounds, bounds[f] + HOP_CHUNK_PACKETS))
                    made = min(max(made, f + 1), wanted[-1] + 1)
                    hop_stats = _hop_stats(work.pk_order[bounds[f]:bounds[made]], pk.flow,
                                           pk.sender, pp)
                yield work.flow_stats(f, placed.pop(f), packets.rows(bounds[f], bounds[f + 1]),
                                      hop_stats.pop(f + 1, NO_HOPS),
                                      losses.during(*self.flow_span(f)), inp.cut_short)

        return head, flows()


def _without(c: EventColumns, *names: str) -> EventColumns:
    """The columns but `names`, which no later stage reads: they are let go
    (as empty arrays: a later use fails loudly instead of reading them)."""
    gone: dict[str, Any] = dict.fromkeys(names, np.zeros(0, dtype=np.int64))
    return dataclasses.replace(c, **gone)


def trace_stats(inp: StatsSource, flow: int | None = None,
                lookup: Callable[[str], ProbeSpec | None] = BY_NAME.get) -> TraceStats:
    return PreparedStats(inp, lookup).stats(flow)


@dataclass(frozen=True, slots=True)
class _Placed:
    notes: tuple[StreamNote, StreamNote]
    ways: tuple[StreamWays, StreamWays]  # by sender


class _SendRanges(NamedTuple):
    """The placed ranges of sends, as columns: direction, range, step, key."""

    direction: list[int]
    lo: list[int]
    hi: list[int]
    step: list[int]
    key: list[int]

    def append(self, direction: int, lo: int, hi: int, step: int, key: int) -> None:
        for col, v in zip(self, (direction, lo, hi, step, key), strict=True):
            col.append(v)


class _FlowWork:
    """The per-flow inputs of the sequential rules, grouped by (flow,
    direction) once; the per-flow work then runs on list slices."""

    def __init__(self, c: EventColumns, r: EventRules, pt: ProbeTable, ft: FlowTable,
                 st: StepTable) -> None:
        self.pt, self.ft, self.st = pt, ft, st
        self.ts = c.ts
        pk, mt = st.packets, st.messages
        nf = ft.count
        self.pk_order = np.lexsort((pk.step, pk.flow))
        self.pk_bounds = np.searchsorted(pk.flow[self.pk_order], np.arange(nf + 1))
        # messages by (flow, side, op)
        m_key = np.where((mt.flow >= 0) & (mt.side >= 0), mt.flow * 4 + mt.side * 2 + mt.send,
                         -1)
        self.msgs = ListGroups(m_key, mt.step, 4 * nf, id=mt.step, key=mt.key,
                               count=np.where(mt.has_count, mt.count, _NO_COUNT),
                               probe=c.probe[mt.key])
        self.ways = [way_of(name, spec) for name, spec in zip(pt.names, pt.specs, strict=True)]
        pos = _positions(c, pt, ft, st, nf)
        self.positions = ListGroups(pos.group, pos.rank, 4 * nf, lo=pos.lo, hi=pos.hi,
                                    step=pos.step, probe=pos.probe)
        pos_key = pos.group
        self.isn_from_syn: list[list[bool]] = ft.isn_from_syn.tolist()
        self.piece_ways = [[piece_way(name, spec, write) for name, spec in
                            zip(pt.names, pt.specs, strict=True)] for write in (False, True)]
        # data packets by (flow, sender)
        data = pk.lo >= 0
        self.data = ListGroups(np.where(data, pk.flow * 2 + pk.sender, -1), pk.step, 2 * nf,
                               row=np.arange(len(pk.step)), id=pk.step, lo=pk.lo,
                               payload=pk.payload, retrans=pk.retransmission, message=pk.message)
        # copies to user of the sender's bytes inside the peer's recvs, by (flow, sender)
        copy = pt.datagram_iter[c.probe] & (c.seq >= 0) & c.has_length & (c.length > 0)
        rows = np.flatnonzero(copy & (mt.of_event >= 0))
        m = mt.of_event[rows]
        mf = mt.flow[m]
        sender = np.where(c.dst[rows] == take_or(ft.client, mf, -1), 0,
                          np.where(c.dst[rows] == take_or(ft.server, mf, -1), 1, -1))
        ok = (mf >= 0) & (sender >= 0) & ~mt.send[m] & (mt.side[m] == 1 - sender)
        lo = ft.rel(np.maximum(mf, 0), np.maximum(sender, 0), c.seq[rows])
        c_dir = np.where(ok, mf * 2 + sender, -1)
        self.copies = ListGroups(c_dir, rows, 2 * nf, msg=mt.step[m], lo=lo,
                                 hi=lo + c.length[rows])
        data_dir = np.where(data & (pk.flow >= 0), pk.flow * 2 + pk.sender, -1)
        d_rows = np.flatnonzero(data_dir >= 0)
        m_probe = c.probe[mt.key]
        self.bytes = ByteColumns(
            flows=nf, isn_from_syn=ft.isn_from_syn, m_flow=mt.flow, m_side=mt.side,
            m_send=mt.send.astype(bool), m_step=mt.step, m_count=mt.count,
            m_has_count=mt.has_count.astype(bool), m_way=m_probe, ways=self.ways,
            d_dir=data_dir[d_rows], d_lo=pk.lo[d_rows], d_payload=pk.payload[d_rows],
            d_retrans=pk.retransmission[d_rows].astype(bool), d_message=pk.message[d_rows],
            p_group=pos.group, p_lo=pos.lo, p_hi=pos.hi, p_step=pos.step,
            c_dir=c_dir, c_step=mt.step[m], c_lo=lo, c_hi=lo + c.length[rows])
        self.d_rows, self.c_event, self.m_key = d_rows, rows, mt.key
        self.regular = regular_placement(self.bytes)
        # accounting: every copy of the flow's steps, by (flow, sender)
        rows = np.flatnonzero(copy & (st.step_flow >= 0))
        sf = st.step_flow[rows]
        sender = np.where(c.dst[rows] == ft.client[sf], 0,
                          np.where(c.dst[rows] == ft.server[sf], 1, -1))
        grp = np.where(sender >= 0, sf * 2 + sender, 2 * nf)
        # ... and every splice out of the peer's socket (tcp_splice_read: the
        # bytes at tp->copied_seq left the queue for a pipe, no copy to user)
        spliced = pt.splice_read[c.probe[st.positions.entry]] & (pos_key >= 0)
        grp = np.concatenate([grp, pos_key[spliced] // 2])  # a splice is no write
        self.copied = np.zeros(2 * nf + 1, dtype=np.int64)
        np.add.at(self.copied, grp, np.concatenate([c.length[rows],
                                                    st.positions.count[spliced]]))
        self.copies_n = np.bincount(grp, minlength=2 * nf + 1)
        # accounting: events seeing a data segment of a data packet, by (flow, sender)
        seg_pkt = pk.seg_of_event
        count_ev = (seg_pkt >= 0) & r.is_seg & (r.payload > 0) & pt.known[c.probe]
        count_ev &= take_or(pk.payload, seg_pkt, 0) > 0
        rows = np.flatnonzero(count_ev)
        grp = pk.flow[seg_pkt[rows]] * 2 + pk.sender[seg_pkt[rows]]
        origin = np.zeros(2 * nf, dtype=bool)
        origin[grp[pt.origin_probe[c.probe[rows]]]] = True
        self.count_events = ListGroups(grp, rows, 2 * nf, event=rows)
        self.at = [ORIGIN_PROBE if o else None for o in origin.tolist()]
        for g in np.flatnonzero(~origin & (np.bincount(grp, minlength=2 * nf) > 0)).tolist():
            ev = np.array(self.count_events.get(g, "event"), dtype=np.int64)
            src = c.src[pk.segment[seg_pkt[ev]]]
            self.at[g] = _counting_probe(c, r, ft.endpoint, src, ev)
        at_code = np.array([c.probe_names.index(a) if a is not None else -1 for a in self.at]
                           + [-1], dtype=np.int64)
        hit = c.probe[rows] == at_code[grp]
        lo = ft.rel(pk.flow[seg_pkt[rows]], pk.sender[seg_pkt[rows]], c.seq[rows])
        hi = lo + r.payload[rows]
        carried_grp = np.where(hit, grp, -1)
        self.carried_bytes = union_lengths(carried_grp, lo, hi, 2 * nf)
        kept = (carried_grp >= 0) & ~pk.retransmission[seg_pkt[rows]]
        self.segments = distinct_counts(carried_grp[kept], seg_pkt[rows][kept], 2 * nf)
        self.msg_sums = message_sums(m_key, mt.count, mt.has_count, 4 * nf)
        retrans = pk.retransmission
        self.retransmitted = np.bincount(pk.flow[retrans] * 2 + pk.sender[retrans],
                                         weights=pk.payload[retrans], minlength=2 * nf)
        # per direction, as Python ints: read a flow at a time (_account)
        self._counts = list(zip(self.retransmitted.astype(np.int64).tolist(),
                                self.copied.tolist(), self.copies_n.tolist(), strict=False))
        entry = (r.layer == SYSCALL) & ~c.is_return
        self.entry_key = np.where(entry[mt.key], mt.key, -1)

    def drop_per_event(self) -> None:
        """Lets go of the tables' per-event columns the per-flow work does
        not read (they are replaced by empty arrays: a later use fails
        loudly instead of reading stale rows)."""
        gone = np.zeros(0, dtype=np.int64)
        self.ft = dataclasses.replace(self.ft, flow=gone, endpoint=gone, side=gone)
        self.st = dataclasses.replace(
            self.st, placement=gone, step_flow=gone,
            packets=dataclasses.replace(self.st.packets, of_event=gone, seg_of_event=gone))

    def place(self, wanted: list[int]) -> tuple[dict[int, _Placed], _SendRanges]:
        """Byte placement of both directions of the wanted flows: the
        regular directions from the columns (regular_bytes.py), the others
        one by one; with the ranges of the sends placed one by one."""
        rp = self.regular
        dirs = [f * 2 + s for f in wanted for s in (0, 1)]
        regular = rp.regular[dirs].tolist() if dirs else []
        ways = rp.ways(self.bytes, [d for d, r in zip(dirs, regular, strict=True) if r])
        ranges = _SendRanges([], [], [], [], [])
        out: dict[int, _Placed] = {}
        for i, f in enumerate(wanted):
            notes: list[StreamNote] = []
            streams: list[StreamWays] = []
            for s in (0, 1):
                d = f * 2 + s
                if regular[2 * i + s]:
                    note, way = StreamNote(sender=ROLES[s], anchor=rp.anchor[d], problems=()), \
                        ways[d]
                else:
                    note, way = self._place_direction(f, s, ranges)
                notes.append(note)
                streams.append(way)
            out[f] = _Placed(notes=(notes[0], notes[1]), ways=(streams[0], streams[1]))
        return out, ranges

    def _place_direction(self, f: int, s: int, ranges: _SendRanges
                         ) -> tuple[StreamNote, StreamWays]:
        """place_direction on one direction's rows; its sends' ranges go to
        `ranges`."""
        sm = self._message_rows(f * 4 + s * 2 + 1)
        rm = self._message_rows(f * 4 + (1 - s) * 2)
        g = f * 2 + s
        d = self.data
        data = PacketRows(ids=d.get(g, "id"), los=d.get(g, "lo"), payloads=d.get(g, "payload"),
                          retrans=d.get(g, "retrans"), messages=d.get(g, "message"))
        cp = self.copies
        copies: dict[int, list[tuple[int, int]]] = {}
        for mid, lo, hi in zip(cp.get(g, "msg"), cp.get(g, "lo"), cp.get(g, "hi"), strict=True):
            copies.setdefault(mid, []).append((lo, hi))
        start = 1 if self.isn_from_syn[f][s] else None
        stream, _ = place_direction(sm, rm, data, copies, start, self._pieces(g, True),
                                    self._pieces(g, False))
        for mid, key in zip(sm.ids, sm.keys, strict=True):
            if (r := stream.ranges.get(mid)) is not None:
                ranges.append(g, r[0], r[1], mid, key)
        return (StreamNote(sender=ROLES[s], anchor=stream.anchor,
                           problems=tuple(stream.problems)), stream.ways)

    def _message_rows(self, group: int) -> MessageRows:
        keys = self.msgs.get(group, "key")
        return MessageRows(ids=self.msgs.get(group, "id"), keys=keys,
                           counts=[None if x == _NO_COUNT else x
                                   for x in self.msgs.get(group, "count")],
                           ways=[self.ways[p] for p in self.msgs.get(group, "probe")])

    def _pieces(self, g: int, write: bool) -> list[KernelPiece]:
        """byte_ranges.kernel_pieces of (flow, sender) group g."""
        pos, k = self.positions, g * 2 + write
        ways = self.piece_ways[write]
        # in (range, step) order already (_positions)
        return [KernelPiece(ByteRange(lo, hi), step, ways[p])
                for lo, hi, step, p in zip(pos.get(k, "lo"), pos.get(k, "hi"),
                                           pos.get(k, "step"), pos.get(k, "probe"), strict=True)]

    def with_byte_points(self, points: np.ndarray, wanted: list[int], ranges: _SendRanges
                         ) -> np.ndarray:
        """The points with Point.SYSCALL (the entry of the lowest-id send
        whose range holds a data packet's first byte) and Point.COPY (the
        earliest copy in the peer's recvs holding it) of the wanted flows'
        data packets, all at once (stabbing.py)."""
        out = points.copy()
        bc, rp = self.bytes, self.regular
        asked = np.zeros(2 * bc.flows + 1, dtype=bool)
        asked[np.array(wanted, dtype=np.int64) * 2] = True
        asked[np.array(wanted, dtype=np.int64) * 2 + 1] = True
        q = np.flatnonzero(asked[bc.d_dir])
        if not len(q):
            return out
        m_dir = message_direction(bc)
        regular = np.append(rp.regular, False)
        sends = np.flatnonzero((rp.send_lo >= 0) & regular[m_dir] & asked[m_dir])
        more = np.array(ranges, dtype=np.int64).reshape(5, -1)
        syscall = stabbing_min_grouped(
            np.r_[m_dir[sends], more[0]], np.r_[rp.send_lo[sends], more[1]],
            np.r_[rp.send_hi[sends], more[2]], np.r_[bc.m_step[sends], more[3]],
            np.r_[self.m_key[sends], more[4]], bc.d_dir[q], bc.d_lo[q])
        cps = np.flatnonzero(asked[bc.c_dir])
        copy = stabbing_min_grouped(bc.c_dir[cps], bc.c_lo[cps], bc.c_hi[cps],
                                    self.c_event[cps], self.c_event[cps], bc.d_dir[q],
                                    bc.d_lo[q])
        rows = self.d_rows[q]
        has = syscall >= 0
        out[rows[has], POINT_COL[Point.SYSCALL]] = self.entry_key[
            self.st.messages.of_event[syscall[has]]]
        out[rows, POINT_COL[Point.COPY]] = copy
        return out

    def flow_stats(self, f: int, placed: _Placed, packets: FlowPackets, hop_stats: HopTable,
                   losses: LossSummary, cut_short: str | None) -> FlowStats:
        ft = self.ft
        accounts = tuple(self._account(f, s, placed, losses, cut_short) for s in (0, 1))
        return FlowStats(
            number=f + 1, client=endpoint_of(int(ft.client[f])),
            server=endpoint_of(int(ft.server[f])),
            netns=(int(ft.netns[f, 0]), int(ft.netns[f, 1])), socks=ft.socks[f],
            accounts=(accounts[0], accounts[1]), streams=placed.notes,
            hop_stats=hop_stats, packets=packets)

    def _account(self, f: int, s: int, placed: _Placed, losses: LossSummary,
                 cut_short: str | None) -> ByteAccount:
        g = f * 2 + s
        sends = self.msg_sums[f * 4 + s * 2 + 1]
        recvs = self.msg_sums[f * 4 + (1 - s) * 2]
        ways, why = way_fields(placed.ways[s])
        retransmitted, copied, copies = self._counts[g]
        return ByteAccount(
            flow=f + 1, sender=ROLES[s],
            written=sends.positive,
            sends=sends.calls,
            failed_sends=sends.failed,
            unknown_sends=sends.unknown,
            carried=self.carried_bytes[g],
            carried_at=self.at[g],
            segments=self.segments[g],
            retransmitted=retransmitted,
            read=recvs.positive,
            recvs=recvs.calls,
            copied=copied,
            copies=copies,
            complete=not losses.records and not cut_short,
            notes=account_notes(sends.unknown, losses, bool(cut_short), why),
            **ways,
        )


class _Positions(NamedTuple):
    group: np.ndarray  # (flow * 2 + sender) * 2 + write, -1
    rank: np.ndarray  # order within the group
    lo: np.ndarray
    hi: np.ndarray
    step: np.ndarray
    probe: np.ndarray


def _positions(c: EventColumns, pt: ProbeTable, ft: FlowTable, st: StepTable,
               nf: int) -> _Positions:
    """The stream-position entries (byte_ranges.kernel_pieces) by (flow,
    sender, write): the sender's writes, or the peer's reads of its bytes;
    each with its range, the step of its message (-1 outside one) and probe,
    in order of range, then step (then event). Also each entry's group key
    ((flow * 2 + sender) * 2 + write, -1 in none), in st.positions' order."""
    e = st.positions.entry
    f = st.step_flow[e]
    fs = np.maximum(f, 0)
    local = np.where(c.src[e] == take_or(ft.client, f, -1), 0,
                     np.where(c.src[e] == take_or(ft.server, f, -1), 1, -1))
    write = pt.write_pos[c.probe[e]]
    sender = np.where(write, local, 1 - local)
    ok = (f >= 0) & (local >= 0)
    lo = ft.rel(fs, np.where(ok, sender, 0), c.seq[e])
    mrow = st.messages.of_event[e]
    step = np.where(mrow >= 0, take_or(st.messages.step, mrow, -1), -1)
    hi = lo + st.positions.count
    rank = np.empty(len(e), dtype=np.int64)
    rank[np.lexsort((e, step, hi, lo))] = np.arange(len(e))
    return _Positions(np.where(ok, (fs * 2 + sender) * 2 + write, -1), rank, lo, hi, step,
                      c.probe[e])


# message_bytes unknown (no return value seen); a real count is above -2**40
_NO_COUNT = np.iinfo(np.int64).min


def _rel(seq: np.ndarray, isn: int) -> np.ndarray:
    return (seq - isn) % (1 << 32) if isn >= 0 else seq


def _rows(ids: np.ndarray, keys: np.ndarray, counts: np.ndarray, has: np.ndarray
          ) -> MessageRows:
    return MessageRows(ids=ids.tolist(), keys=keys.tolist(),
                       counts=[x if h else None for x, h in zip(counts.tolist(), has.tolist(),
                                                                  strict=True)])


def _counting_probe(c: EventColumns, r: EventRules, endpoint: np.ndarray, src: np.ndarray,
                    ev: np.ndarray) -> str:
    """accounting._counting_probe without __tcp_transmit_skb: the deepest
    transmit layer, else the first receive layer, the most frequent probe
    there (ties: by name)."""
    probes = c.probe[ev]
    tx = (r.direction[ev] == TX) & (endpoint[ev] == src)
    rank = np.where(tx, 0, 1) * 16 - r.layer[ev].astype(np.int64)
    best = rank == rank.min()
    names, counts = np.unique(probes[best], return_counts=True)
    by_name = sorted((c.probe_names[int(p)], int(k)) for p, k in zip(names, counts, strict=True))
    return max(by_name, key=lambda it: it[1])[0]


# The flows' latency distributions are made for runs of whole flows of about
# this many packets at a time: the sort of their hop values, and the rows
# made of it, then stay bounded whatever the trace's size.
HOP_CHUNK_PACKETS = 1 << 18


def _hop_stats(rows: np.ndarray, flow: np.ndarray, sender: np.ndarray, pp: PacketPoints
               ) -> dict[int, HopTable]:
    has = pp.has_hop[rows]
    p_idx, h_idx = np.nonzero(has)
    if not len(p_idx):
        return {}
    rows = rows[p_idx]
    fl, snd, kl, gap = flow[rows], sender[rows], pp.klass[rows], pp.gap[rows]
    val = pp.hops[rows, h_idx]
    order = sort_order(fl, snd, kl, h_idx, gap, val)
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
    zero = np.zeros(len(starts), dtype=np.int64)
    table = np.stack([snd[starts], kl[starts], h_idx[starts], n,
                      *[np.where(some, a, zero) for a in (first, median, p99, last)], gaps],
                     axis=1).astype(np.int64)
    flows = fl[starts]
    cut = np.flatnonzero(np.r_[True, flows[1:] != flows[:-1], True])
    return {f + 1: HopTable(table[a:b]) for f, a, b in zip(
        flows[cut[:-1]].tolist(), cut[:-1].tolist(), cut[1:].tolist(), strict=True)}


class _PacketRows(NamedTuple):
    """A part's packets in (flow, step) order (pk_order), as FlowPackets'
    columns: a flow's are a slice of each (rows)."""

    step: np.ndarray
    label: list[str]
    sender: np.ndarray
    klass: np.ndarray
    hops: np.ndarray
    has_hop: np.ndarray
    gap: np.ndarray

    def rows(self, a: int, b: int) -> FlowPackets:
        return FlowPackets(step=self.step[a:b], label=self.label[a:b], sender=self.sender[a:b],
                           klass=self.klass[a:b], hops=self.hops[a:b],
                           has_hop=self.has_hop[a:b], gap=self.gap[a:b])


def _packet_rows(order: np.ndarray, pk: Any, pp: PacketPoints) -> _PacketRows:
    """The packets' columns in `order`, labelled once per distinct (flags,
    payload): a few recur in every flow."""
    flags, payload = pk.flags[order], pk.payload[order]
    which, _, firsts = factorize_firsts(flags, payload)
    texts = [_label(f, p) for f, p in zip(flags[firsts].tolist(), payload[firsts].tolist(),
                                            strict=True)]
    labels = [texts[i] for i in which.tolist()]
    return _PacketRows(step=pk.step[order], label=labels, sender=pk.sender[order],
                       klass=pp.klass[order], hops=pp.hops[order], has_hop=pp.has_hop[order],
                       gap=pp.gap[order])


def _label(flags: int, payload: int) -> str:
    probe = Segment(Endpoint("0.0.0.0", 0), Endpoint("0.0.0.0", 0), 0, 0, flags, None, payload)
    return probe.label
