"""`kpath replay --stats` text from the columnar statistics
(tracer/timeline/columnar/stats.py): the same text as viz/stats_text.py
prints from a Timeline, line for line."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from tracer.timeline.columnar.latency_table import HOPS
from tracer.timeline.columnar.stats import (
    CLASSES,
    ROLES,
    FlowPackets,
    FlowStats,
    HopTable,
    TraceStats,
)
from tracer.timeline.latency import PacketClass
from tracer.timeline.model import Role
from viz.stats_text import (
    GAP_MARK,
    _direction_of,
    account_lines,
    distribution_lines,
    head_lines,
    socket_lines,
    table_lines,
)


def render_trace_stats(ts: TraceStats) -> str:
    return "".join(trace_stats_text(ts, ts.flows))


def trace_stats_text(head: TraceStats, flows: Iterable[FlowStats]) -> Iterator[str]:
    """render_trace_stats in pieces: the header, then each flow's text as
    the flow comes (`head.flows` is not read), so a caller may write each
    piece and drop it."""
    lines = head_lines(head.path, head.events, head.flow_count, head.lost_total,
                       head.cut_short, head.lost_noticed if head.has_gaps else None,
                       head.sources)
    yield "\n".join(lines) + "\n"
    none = True
    for fl in flows:
        none = False
        # A blank line before each flow: the pieces join into one text.
        yield "\n" + "\n".join(_flow_lines(fl)) + "\n"
    if none:
        yield "\nno TCP flow in this trace\n"


def _flow_lines(fl: FlowStats) -> list[str]:
    out = [f"flow {fl.number}: {fl.title}"]
    out.extend(socket_lines(fl.netns, fl.socks[:2], fl.socks[2]))
    out.append("")
    out.extend(account_lines(fl.accounts))
    for note in fl.streams:
        how = note.anchor.text if note.anchor is not None else "no send placed"
        out.append(f"  {_direction_of(note.sender)} send ranges: {how}")
        out.extend(f"    !! {problem}" for problem in note.problems)
    out.append("")
    out.extend(_distributions(fl.hop_stats))
    out.append("")
    out.extend(_per_packet(fl.packets))
    return out


def _per_packet(packets: FlowPackets) -> list[str]:
    if not packets.step:
        return ["  per packet: no packet"]
    cols = np.flatnonzero(packets.has_hop.any(axis=0)).tolist()
    head = ("  per packet (us)", "direction", "class", *[str(HOPS[h]) for h in cols], "")
    # Made a column at a time (a large flow has tens of thousands of rows;
    # a trace of small flows, thousands of flows: one tolist each).
    hops, has_hop = packets.hops[:, cols].T.tolist(), packets.has_hop[:, cols].T.tolist()
    cells = [[f"{v / 1e3:.1f}" if ok else "-" for v, ok in zip(vals, oks, strict=True)]
             for vals, oks in zip(hops, has_hop, strict=True)]  # f"...": fmt_us, inlined
    rows: list[Sequence[str]] = [head]
    rows.extend(zip([f"  #{step} {label}" for step, label in zip(packets.step, packets.label,
                                                                   strict=True)],
                    [_DIRECTION[s] for s in packets.sender],
                    [_CLASS[k] for k in packets.klass], *cells,
                    [GAP_MARK if g else "" for g in packets.gap], strict=True))
    return table_lines(rows, right=range(3, 3 + len(cols)))


def _distributions(table: HopTable) -> list[str]:
    return distribution_lines(
        (_DIRECTION_AT[s], _CLASS_AT[k], _HOP_AT[h], n, (lo, mid, p99, hi), gaps)
        for s, k, h, n, lo, mid, p99, hi, gaps in table.values.tolist())


_DIRECTION = {role: _direction_of(role) for role in (Role.CLIENT, Role.SERVER)}
_CLASS = {klass: str(klass) for klass in PacketClass}
# by HopTable index
_DIRECTION_AT = tuple(_DIRECTION[role] for role in ROLES)
_CLASS_AT = tuple(str(klass) for klass in CLASSES)
_HOP_AT = tuple(str(hop) for hop in HOPS)
