"""Per-packet time points and hops on columns (tracer/timeline/latency.py):
packet_points, the hops between present points, loss windows, and the
per-hop distributions of latency_stats."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from tracer.timeline.columnar.columns import EventColumns
from tracer.timeline.columnar.event_table import EventRules
from tracer.timeline.columnar.flow_table import FlowTable
from tracer.timeline.columnar.grouping import distinct
from tracer.timeline.columnar.probe_table import DEVICE, DRIVER, IP, ProbeTable
from tracer.timeline.columnar.step_table import StepTable
from tracer.timeline.latency import _SPANS, UNORDERED_HOPS, Hop, Point
from tracer.timeline.model import Role

POINTS = tuple(Point)
POINT_COL = {pt: i for i, pt in enumerate(POINTS)}
HOPS = tuple(Hop)
# PacketClass codes, in PacketClass order (the order of the distributions).
DATA, ACK, CONTROL, RETRANS = range(4)


@dataclass(frozen=True, slots=True)
class PacketPoints:
    points: np.ndarray  # (packets, len(POINTS)) event index of each point, -1 absent
    hops: np.ndarray  # (packets, len(HOPS)) ns, valid where has_hop
    has_hop: np.ndarray  # (packets, len(HOPS)) bool
    gap: np.ndarray  # (packets,) bool
    klass: np.ndarray  # (packets,) class code


def _first_per_packet(cond: np.ndarray, pkt_of: np.ndarray, npk: int) -> np.ndarray:
    rows = np.flatnonzero(cond)
    out = np.full(npk, -1, dtype=np.int64)
    if len(rows):
        first = np.full(npk, len(pkt_of), dtype=np.int64)
        np.minimum.at(first, pkt_of[rows], rows)
        out = np.where(first < len(pkt_of), first, -1)
    return out


def _last_per_packet(cond: np.ndarray, pkt_of: np.ndarray, npk: int) -> np.ndarray:
    rows = np.flatnonzero(cond)
    out = np.full(npk, -1, dtype=np.int64)
    if len(rows):
        np.maximum.at(out, pkt_of[rows], rows)
    return out


def wire_points(c: EventColumns, r: EventRules, pt: ProbeTable, ft: FlowTable,
                st: StepTable) -> np.ndarray:
    """Points the packets' own events provide (all but syscall and copy)."""
    pk = st.packets
    npk = len(pk.creator)
    pkt_of = pk.of_event
    points = np.full((npk, len(POINTS)), -1, dtype=np.int64)
    if not npk:  # no packet (a part of a trace without flows)
        return points
    entry = (pkt_of >= 0) & ~c.is_return
    row = np.maximum(pkt_of, 0)
    src_ep, dst_ep = c.src[pk.segment], c.dst[pk.segment]
    at_src = entry & (ft.endpoint == src_ep[row])
    at_dst = entry & ~at_src & (ft.endpoint == dst_ep[row])
    origin = pt.origin[c.probe]
    layer = r.layer
    points[:, POINT_COL[Point.TCP]] = _first_per_packet(at_src & origin, pkt_of, npk)
    points[:, POINT_COL[Point.IP]] = _first_per_packet(at_src & ~origin & (layer == IP),
                                                       pkt_of, npk)
    device = _first_per_packet(at_src & ~origin & (layer == DEVICE), pkt_of, npk)
    driver = _first_per_packet(at_src & ~origin & (layer == DRIVER), pkt_of, npk)
    points[:, POINT_COL[Point.DEVICE]] = np.where(device >= 0, device, driver)
    below_tcp = (layer == DEVICE) | (layer == IP)
    rx = points[:, POINT_COL[Point.RX]] = _first_per_packet(at_dst & below_tcp, pkt_of, npk)
    # Received on another host (a merged trace): where it left the sender.
    left = _last_per_packet(at_src & ~origin & ((layer == DEVICE) | (layer == DRIVER)),
                            pkt_of, npk)
    crossed = (left >= 0) & (rx >= 0) & (c.source[np.maximum(left, 0)]
                                         != c.source[np.maximum(rx, 0)])
    points[:, POINT_COL[Point.WIRE]] = np.where(crossed, left, -1)
    queue = np.full(npk, -1, dtype=np.int64)
    rank = pt.queue_rank[c.probe]
    for k in range(int(pt.queue_rank.max(initial=-1)), -1, -1):
        found = _first_per_packet(at_dst & ~below_tcp & (rank == k), pkt_of, npk)
        queue = np.where(found >= 0, found, queue)
    points[:, POINT_COL[Point.QUEUE]] = queue
    return points


def packet_points(ts: np.ndarray, st: StepTable, points: np.ndarray,
                  gap_ends: np.ndarray, gap_starts: np.ndarray) -> PacketPoints:
    """Hops between present points (a spanning hop only where the points it
    spans are absent), the loss mark, the packet class; `ts`: the events'
    times."""
    pk = st.packets
    npk = len(pk.creator)
    hops = np.zeros((npk, len(HOPS)), dtype=np.int64)
    has = np.zeros((npk, len(HOPS)), dtype=bool)
    present = points >= 0
    for h, hop in enumerate(HOPS):
        a = points[:, POINT_COL[hop.points[0]]]
        b = points[:, POINT_COL[hop.points[1]]]
        ok = (a >= 0) & (b >= 0) & ((a < b) | (hop in UNORDERED_HOPS))
        for spanned in _SPANS.get(hop, ()):
            ok &= ~present[:, POINT_COL[spanned]]
        has[:, h] = ok
        hops[:, h] = np.where(ok, ts[np.maximum(b, 0)] - ts[np.maximum(a, 0)], 0)
    gap = np.zeros(npk, dtype=bool)
    if len(gap_ends):
        stamps = np.where(present, ts[np.maximum(points, 0)], 0)
        big = np.iinfo(np.int64).max
        first = np.where(present, stamps, big).min(axis=1)
        last = np.where(present, stamps, np.iinfo(np.int64).min).max(axis=1)
        any_point = present.any(axis=1)
        j = np.searchsorted(gap_ends, first, side="left")
        inside = j < len(gap_ends)
        gap[inside] = gap_starts[j[inside]] < last[inside]
        gap &= any_point
    klass = np.where(pk.retransmission, RETRANS,
                     np.where(pk.payload > 0, DATA, np.where(pk.pure_ack, ACK, CONTROL)))
    return PacketPoints(points=points, hops=hops, has_hop=has, gap=gap, klass=klass)


def stabbing_min(intervals: list[tuple[int, int, int, int]], queries: list[int]
                 ) -> list[int]:
    """For each query position q, the payload of the interval (lo, hi,
    order, payload) holding q (lo <= q < hi) with the smallest order; -1."""
    items = sorted(intervals)
    los = [it[0] for it in items]
    longest = max((it[1] - it[0] for it in items), default=0)
    out = []
    for q in queries:
        best: tuple[int, int] | None = None
        j = bisect.bisect_right(los, q) - 1
        while j >= 0 and los[j] + longest > q:
            lo, hi, order, payload = items[j]
            if lo <= q < hi and (best is None or order < best[0]):
                best = (order, payload)
            j -= 1
        out.append(best[1] if best is not None else -1)
    return out


def loss_windows(gap_stamps: np.ndarray, start_ns: int, window_ns: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """latency.loss_windows on the loss records' timestamps, on arrays (a
    trace with a million loss records makes them once, for all its parts)."""
    ends = distinct(np.asarray(gap_stamps, dtype=np.int64))
    prev = np.empty(len(ends), dtype=np.int64)
    prev[:1] = start_ns - 1
    prev[1:] = ends[:-1]
    return ends, np.maximum(prev, ends - window_ns)


ROLE_OF = (Role.CLIENT, Role.SERVER)
