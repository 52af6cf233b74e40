"""`kpath replay --stats` text from the columnar statistics
(tracer/timeline/columnar/stats.py): the same text as viz/stats_text.py
prints from a Timeline, line for line. The latency and per-packet tables
of a run of flows are made together (viz/stats_tables.py)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tracer.timeline.columnar.stats import FlowStats, TraceStats
from viz.stats_tables import distribution_texts, per_packet_texts
from viz.stats_text import _direction_of, account_lines, head_lines, socket_lines

# The tables of this many flows, or of flows with this many packets in
# all, are made together (the flows are held until then).
BATCH_FLOWS = 256
BATCH_PACKETS = 1 << 15


def render_trace_stats(ts: TraceStats) -> str:
    return "".join(trace_stats_text(ts, ts.flows))


def trace_stats_text(head: TraceStats, flows: Iterable[FlowStats]) -> Iterator[str]:
    """render_trace_stats in pieces: the header, then each flow's text as
    its run of flows is made (`head.flows` is not read), so a caller may
    write each piece and drop it."""
    lines = head_lines(head.path, head.events, head.flow_count, head.lost_total,
                       head.cut_short, head.gaps,
                       head.sources)
    yield "\n".join(lines) + "\n"
    none = True
    batch: list[FlowStats] = []
    packets = 0
    for fl in flows:
        none = False
        batch.append(fl)
        packets += len(fl.packets.step)
        if len(batch) >= BATCH_FLOWS or packets >= BATCH_PACKETS:
            yield from _batch_text(batch)
            batch, packets = [], 0
    yield from _batch_text(batch)
    if none:
        yield "\nno TCP flow in this trace\n"


def _batch_text(flows: list[FlowStats]) -> Iterator[str]:
    if not flows:
        return
    dists = distribution_texts([fl.hop_stats for fl in flows])
    per_packet = per_packet_texts([fl.packets for fl in flows])
    for fl, dist, pkts in zip(flows, dists, per_packet, strict=True):
        # A blank line before each flow: the pieces join into one text.
        yield "\n" + "\n".join(_flow_lines(fl, dist, pkts)) + "\n"


def _flow_lines(fl: FlowStats, dist: list[str], per_packet: list[str]) -> list[str]:
    out = [f"flow {fl.number}: {fl.title}"]
    out.extend(socket_lines(fl.netns, fl.socks[:2], fl.socks[2]))
    out.append("")
    out.extend(account_lines(fl.accounts))
    for note in fl.streams:
        how = note.anchor.text if note.anchor is not None else "no send placed"
        out.append(f"  {_direction_of(note.sender)} send ranges: {how}")
        out.extend(f"    !! {problem}" for problem in note.problems)
    out.append("")
    out.extend(dist)
    out.append("")
    out.extend(per_packet)
    return out
