"""Per-layer latency of each packet, and its distributions per flow.

A packet's time points are events it really has (profiles differ: minimal
has no IP or device probes); a hop is measured only between two present
points, never interpolated. Rules in docs/correlation.md ("Latency").
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from probes.catalog import Layer
from tracer.events import Endpoint, Kind
from tracer.timeline.byte_ranges import copy_range
from tracer.timeline.event_rules import capture_of
from tracer.timeline.model import Flow, LostGap, Message, Packet, Role, TEvent, Timeline
from tracer.timeline.segments import ORIGIN_CAPTURES
from tracer.tracefile import Lost


class Point(StrEnum):
    SYSCALL = "syscall"  # entry of the send syscall that wrote the segment's first byte
    TCP = "tcp"  # the segment's birth: __tcp_transmit_skb (tcp_v4_send_synack for a SYN-ACK)
    IP = "ip"  # first transmit event in the IP layer (__ip_queue_xmit, ip_build_and_send_pkt)
    DEVICE = "dev"  # first transmit event in the device layer (__dev_queue_xmit), else driver
    # A packet received on another host (a merged trace, kpath merge): the
    # sender's last transmit event in the device layer or below, where it
    # left for the wire.
    WIRE = "wire"
    RX = "rx"  # first receive event seeing the segment below TCP (__netif_rx, ip_rcv...)
    QUEUE = "queue"  # tcp_queue_rcv, else tcp_data_queue, tcp_v4_rcv, tcp_rcv_established
    COPY = "copy"  # the reader's __skb_datagram_iter that copied the first byte


class Hop(StrEnum):
    SYSCALL_TCP = "syscall>tcp"
    TCP_IP = "tcp>ip"
    IP_DEVICE = "ip>dev"
    DEVICE_RX = "dev>rx"
    DEVICE_WIRE = "dev>wire"  # merged traces: the sender's device layer to the wire
    WIRE = "wire"  # merged traces: from one host's device to the other's first receive
    RX_QUEUE = "rx>queue"
    QUEUE_COPY = "queue>copy"
    TCP_COPY = "tcp>copy"  # the whole kernel path, transmit to the reader's copy
    # Only where the points between were not observable (a kernel without
    # kprobes shows no TCP transmit and no IP): the hop says what it spans.
    SYSCALL_DEVICE = "syscall>dev"
    SYSCALL_COPY = "syscall>copy"

    @property
    def points(self) -> tuple[Point, Point]:
        return _HOP_POINTS[self]


_HOP_POINTS = {
    Hop.SYSCALL_TCP: (Point.SYSCALL, Point.TCP),
    Hop.TCP_IP: (Point.TCP, Point.IP),
    Hop.IP_DEVICE: (Point.IP, Point.DEVICE),
    Hop.DEVICE_RX: (Point.DEVICE, Point.RX),
    Hop.DEVICE_WIRE: (Point.DEVICE, Point.WIRE),
    Hop.WIRE: (Point.WIRE, Point.RX),
    Hop.RX_QUEUE: (Point.RX, Point.QUEUE),
    Hop.QUEUE_COPY: (Point.QUEUE, Point.COPY),
    Hop.TCP_COPY: (Point.TCP, Point.COPY),
    Hop.SYSCALL_DEVICE: (Point.SYSCALL, Point.DEVICE),
    Hop.SYSCALL_COPY: (Point.SYSCALL, Point.COPY),
}
# Points whose absence a spanning hop stands in for.
_SPANS = {Hop.SYSCALL_DEVICE: (Point.TCP, Point.IP), Hop.SYSCALL_COPY: (Point.TCP,),
          Hop.DEVICE_RX: (Point.WIRE,)}
# Between two hosts' clocks: measured whatever the order of its points, as
# the offset between the clocks is only known within its uncertainty.
UNORDERED_HOPS = (Hop.WIRE,)
# A merged trace's packets that crossed hosts: dev>rx split at the wire.
WIRE_HOPS = (Hop.DEVICE_WIRE, Hop.WIRE)
# The hops of a packet whose every point was observed, within one host.
PATH_HOPS = tuple(h for h in Hop if h not in (Hop.SYSCALL_DEVICE, Hop.SYSCALL_COPY, *WIRE_HOPS))
# In order of preference; tcp_rcv_established (tcp:tcp_probe on kernels
# without kprobes) is the last TCP receive point.
QUEUE_PROBES = ("tcp_queue_rcv", "tcp_data_queue", "tcp_v4_rcv", "tcp_rcv_established")


class PacketClass(StrEnum):
    DATA = "data"
    ACK = "ack"  # pure ACK
    CONTROL = "control"  # SYN, SYN-ACK, FIN, RST without data
    RETRANSMISSION = "retrans"


@dataclass(frozen=True, slots=True)
class HopTime:
    hop: Hop
    start: TEvent
    end: TEvent

    @property
    def ns(self) -> int:
        return self.end.ev.ts_ns - self.start.ev.ts_ns


@dataclass(eq=False, kw_only=True)
class PacketLatency:
    packet: Packet
    klass: PacketClass
    points: dict[Point, TEvent] = field(default_factory=dict)
    hops: dict[Hop, HopTime] = field(default_factory=dict)  # only hops with both points
    gap: bool = False  # events were lost during its span: shown, not used in statistics

    @property
    def flow(self) -> int | None:
        return self.packet.flow

    @property
    def sender(self) -> Role | None:
        return self.packet.sender


def classify(pkt: Packet) -> PacketClass:
    if pkt.retransmission:
        return PacketClass.RETRANSMISSION
    if pkt.segment.payload:
        return PacketClass.DATA
    if pkt.segment.is_pure_ack:
        return PacketClass.ACK
    return PacketClass.CONTROL


def packet_points(pkt: Packet, steps: dict[int, Message], copies: CopyIndex
                  ) -> dict[Point, TEvent]:
    """The time points a packet's events provide (see Point)."""
    src, dst = pkt.segment.src, pkt.segment.dst
    pts: dict[Point, TEvent] = {}

    def first(point: Point, te: TEvent) -> None:
        pts.setdefault(point, te)

    queued: dict[str, TEvent] = {}
    left: TEvent | None = None  # the last transmit event at the device layer or below
    for te in pkt.events:
        # Only events that see the segment: a lead-in such as net_rx_action
        # may belong to the packet without carrying it.
        if te.ev.kind is not Kind.ENTRY or te.segment is None:
            continue
        if te.endpoint == src:
            if te.layer in (Layer.DEVICE, Layer.DRIVER) \
                    and capture_of(te.ev) not in ORIGIN_CAPTURES:
                left = te
            if capture_of(te.ev) in ORIGIN_CAPTURES:
                first(Point.TCP, te)
            elif te.layer is Layer.IP:
                first(Point.IP, te)
            elif te.layer is Layer.DEVICE:
                first(Point.DEVICE, te)
            elif te.layer is Layer.DRIVER and Point.DEVICE not in pts:
                queued.setdefault("driver", te)
        elif te.endpoint == dst:
            if te.layer in (Layer.DEVICE, Layer.IP):
                first(Point.RX, te)
            elif te.probe in QUEUE_PROBES:
                queued.setdefault(te.probe, te)
    if Point.DEVICE not in pts and "driver" in queued:
        pts[Point.DEVICE] = queued["driver"]
    rx = pts.get(Point.RX)
    if left is not None and rx is not None and left.ev.source != rx.ev.source:
        pts[Point.WIRE] = left
    for name in QUEUE_PROBES:
        if name in queued:
            pts[Point.QUEUE] = queued[name]
            break
    r = pkt.byte_range
    if r is not None:
        for mid in pkt.written_by:
            m = steps[mid]
            if m.byte_range is not None and m.byte_range.lo <= r.lo < m.byte_range.hi:
                entry = m.events[0]
                if entry.layer is Layer.SYSCALL and entry.ev.kind is Kind.ENTRY:
                    pts[Point.SYSCALL] = entry
                break
        copy = copies.holding(pkt.segment.src, r.lo)
        if copy is not None:
            pts[Point.COPY] = copy
    return pts


class CopyIndex:
    """The copies to user (__skb_datagram_iter) of a flow's recvs, by the
    stream range they returned, to find the one holding a given byte."""

    def __init__(self, flow: Flow, steps: dict[int, Message]) -> None:
        self.by_sender: dict[Endpoint, tuple[list[int], list[tuple[int, int, TEvent]], int]] = {}
        for sender in (flow.client, flow.server):
            role = flow.role_of(sender)
            items = sorted(
                ((r.lo, r.hi, te) for m in steps.values()
                 if m.op == "recv" and role is not None and m.side is role.peer
                 for te in m.events if (r := copy_range(te, flow, sender)) is not None),
                key=lambda it: (it[0], it[2].index))
            longest = max((hi - lo for lo, hi, _ in items), default=0)
            self.by_sender[sender] = ([it[0] for it in items], items, longest)

    def holding(self, sender: Endpoint, byte: int) -> TEvent | None:
        """The earliest copy whose range holds `byte` of `sender`'s stream."""
        los, items, longest = self.by_sender.get(sender, ([], [], 0))
        best: TEvent | None = None
        j = bisect.bisect_right(los, byte) - 1
        while j >= 0 and los[j] + longest > byte:
            lo, hi, te = items[j]
            if lo <= byte < hi and (best is None or te.index < best.index):
                best = te
            j -= 1
        return best


def packet_latencies(tl: Timeline, flow: int | None = None) -> list[PacketLatency]:
    """Every packet's points and hops, in step order (one flow or all)."""
    flows = [tl.flow(flow)] if flow is not None else tl.flows
    windows = loss_windows(tl)
    out = []
    for fl in flows:
        msgs = {st.id: st for st in fl.steps if isinstance(st, Message)}
        copies = CopyIndex(fl, msgs)
        for st in fl.steps:
            if not isinstance(st, Packet):
                continue
            pl = PacketLatency(packet=st, klass=classify(st))
            pl.points = packet_points(st, msgs, copies)
            for hop in Hop:
                if any(p in pl.points for p in _SPANS.get(hop, ())):
                    continue
                a, b = (pl.points.get(p) for p in hop.points)
                if a is not None and b is not None and (a.index < b.index
                                                        or hop in UNORDERED_HOPS):
                    pl.hops[hop] = HopTime(hop, a, b)
            if windows[0] and pl.points:
                times = [te.ev.ts_ns for te in pl.points.values()]
                pl.gap = overlaps_loss(windows, min(times), max(times))
            out.append(pl)
    return out


# The tracer looks for losses every 0.5 s (LOSS_CHECK_S in tracer/session.py)
# and records them when it notices them: a loss noticed at T happened in the
# second before T, and after the previous loss record.
LOSS_WINDOW_NS = 1_000_000_000


def counted_stamps(gaps: Iterable[LostGap | Lost]) -> list[int]:
    """When the losses that mark packets were noticed: not blind windows'.
    A window's skipped events are what its CPU's interrupt or softirq ran
    in it; a packet of theirs lacks those points, and its hops through
    them are not measured. Marking every packet whose span meets a window
    instead would empty the distributions (under TCG, half the packets of
    a traced transfer: a window every few ms, packets 20 ms long)."""
    return [g.ts_ns for g in gaps if g.since_ns is None]


def loss_windows(tl: Timeline) -> tuple[list[int], list[int]]:
    """(ends, starts): for each distinct time losses were noticed, the span
    in which those events were lost, sorted and disjoint."""
    ends = sorted(set(counted_stamps(tl.gaps)))
    starts = []
    prev = tl.start_ns - 1
    for t in ends:
        starts.append(max(prev, t - LOSS_WINDOW_NS))
        prev = t
    return ends, starts


def overlaps_loss(windows: tuple[list[int], list[int]], start: int, end: int) -> bool:
    """Whether [start, end] meets a loss window (ends[i] exclusive of starts[i])."""
    ends, starts = windows
    j = bisect.bisect_left(ends, start)
    return j < len(ends) and starts[j] < end


@dataclass(frozen=True, slots=True)
class HopStats:
    """One hop's distribution for one flow, direction and packet class."""

    flow: int
    sender: Role | None
    klass: PacketClass
    hop: Hop
    count: int  # packets measured (gaps excluded)
    min_ns: int
    median_ns: int
    p99_ns: int  # nearest rank
    max_ns: int
    gaps: int  # packets with this hop left out because events were lost around them


def latency_stats(tl: Timeline, flow: int | None = None,
                  latencies: list[PacketLatency] | None = None) -> list[HopStats]:
    """Distributions per flow, direction (sender), packet class and hop."""
    if latencies is None:
        latencies = packet_latencies(tl, flow)
    groups: dict[tuple[int, Role | None, PacketClass, Hop], tuple[list[int], list[int]]] = {}
    for pl in latencies:
        if pl.flow is None:
            continue
        for hop, ht in pl.hops.items():
            vals, gaps = groups.setdefault((pl.flow, pl.sender, pl.klass, hop), ([], []))
            (gaps if pl.gap else vals).append(ht.ns)
    klass_order = list(PacketClass)
    hop_order = list(Hop)
    out = []
    for (fno, sender, klass, hop), (vals, gaps) in sorted(
            groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]),
                                           klass_order.index(kv[0][2]),
                                           hop_order.index(kv[0][3]))):
        vals.sort()
        n = len(vals)
        out.append(HopStats(
            flow=fno, sender=sender, klass=klass, hop=hop, count=n,
            min_ns=vals[0] if n else 0,
            median_ns=round(statistics.median(vals)) if n else 0,
            p99_ns=vals[max(math.ceil(0.99 * n) - 1, 0)] if n else 0,
            max_ns=vals[-1] if n else 0,
            gaps=len(gaps),
        ))
    return out
