"""`kpath replay --stats` text from the columnar statistics
(tracer/timeline/columnar/stats.py): the same text as viz/stats_text.py
prints from a Timeline, line for line. The latency and per-packet tables
of a run of flows are made together (viz/stats_tables.py).

A flow's text is made in two steps: flow_pieces, where its statistics
are made (for a trace rebuilt in parts, in the part, maybe in a worker
process), leaves out only what needs the whole trace (the flow's number,
its packets' step numbers); piece_text prints the rest."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import numpy as np

from tracer.timeline.columnar import PartedStats, PreparedStats
from tracer.timeline.columnar.stats import FlowStats, TraceStats
from viz.stats_tables import PacketTable, distribution_texts, packet_lines, per_packet_texts
from viz.stats_text import _direction_of, account_lines, head_lines, socket_lines

# The tables of this many flows, or of flows with this many packets in
# all, are made together (the flows are held until then).
BATCH_FLOWS = 256
BATCH_PACKETS = 1 << 15
_STEP_ID = re.compile(r"#(\d+)")  # step numbers in the stream problems' text


class FlowPiece(NamedTuple):
    """A flow's text but its number and its steps' numbers: from its title
    (": ...") to the accounting table; the stream lines (their problems
    name steps: `renumber`); the latency table with the blank lines around
    it; the per-packet table (None: no packet)."""

    head: str
    streams: str
    renumber: bool
    tables: str
    packets: PacketTable | None


def render_trace_stats(ts: TraceStats) -> str:
    return "".join(trace_stats_text(ts, ts.flows))


def head_text(head: TraceStats) -> str:
    lines = head_lines(head.path, head.events, head.flow_count, head.lost_total,
                       head.cut_short, head.losses, head.sources)
    return "\n".join(lines) + "\n"


def trace_stats_text(head: TraceStats, flows: Iterable[FlowStats]) -> Iterator[str]:
    """render_trace_stats in pieces: the header, then each flow's text as
    its run of flows is made (`head.flows` is not read), so a caller may
    write each piece and drop it."""
    yield head_text(head)
    none = True
    for batch in _batches(flows):
        none = False
        for fl, piece in zip(batch, flow_pieces(batch), strict=True):
            yield piece_text(fl.number, piece)
    if none:
        yield NO_FLOW


NO_FLOW = "\nno TCP flow in this trace\n"


def _batches(flows: Iterable[FlowStats]) -> Iterator[list[FlowStats]]:
    batch: list[FlowStats] = []
    packets = 0
    for fl in flows:
        batch.append(fl)
        packets += len(fl.packets)
        if len(batch) >= BATCH_FLOWS or packets >= BATCH_PACKETS:
            yield batch
            batch, packets = [], 0
    if batch:
        yield batch


def prepared_stats_text(prepared: PreparedStats | PartedStats, flow: int | None = None
                        ) -> Iterator[str]:
    """trace_stats_text of a trace's columnar statistics, all flows or
    flow `flow` (KeyError if there is none); a trace rebuilt in parts
    from the pieces its parts made (pieces_of)."""
    if isinstance(prepared, PreparedStats):
        yield from trace_stats_text(*prepared.stats_by_flow(flow))
        return
    head, pieces = prepared.pieces(flow)
    yield head_text(head)
    none = True
    for number, piece, step_number in pieces:
        none = False
        yield piece_text(number, piece, step_number)
    if none:
        yield NO_FLOW


def pieces_of(flows: Iterable[FlowStats]) -> Iterator[FlowPiece]:
    """flow_pieces of flows a run at a time (PartedStats' render)."""
    for batch in _batches(flows):
        yield from flow_pieces(batch)


def flow_pieces(flows: Sequence[FlowStats]) -> list[FlowPiece]:
    """Each flow's text, but the numbers only the whole trace knows."""
    if len(flows) > BATCH_FLOWS:
        return [piece for batch in _batches(flows) for piece in flow_pieces(batch)]
    dists = distribution_texts([fl.hop_stats for fl in flows])
    per_packet = per_packet_texts([fl.packets for fl in flows])
    out = []
    for fl, dist, packets in zip(flows, dists, per_packet, strict=True):
        head = [f": {fl.title}"]
        head.extend(socket_lines(fl.netns, fl.socks[:2], fl.socks[2]))
        head.append("")
        head.extend(account_lines(fl.accounts))
        streams = []
        for note in fl.streams:
            how = note.anchor.text if note.anchor is not None else "no send placed"
            streams.append(f"  {_direction_of(note.sender)} send ranges: {how}")
            streams.extend(f"    !! {problem}" for problem in note.problems)
        out.append(FlowPiece("\n".join(head), "\n".join(streams),
                             any(note.problems for note in fl.streams),
                             "\n" + "\n".join(dist) + "\n", packets))
    return out


def piece_text(number: int, piece: FlowPiece, step_number: Sequence[int] | np.ndarray | None = None
               ) -> str:
    """Flow `number`'s text (a blank line before it: the pieces join into
    one text), its steps numbered by `step_number` (the piece's step ->
    the trace's; None: as they are)."""
    streams = piece.streams
    if piece.renumber and step_number is not None:
        streams = _STEP_ID.sub(lambda m: f"#{step_number[int(m[1])]}", streams)
    return (f"\nflow {number}{piece.head}\n{streams}\n{piece.tables}\n"
            f"{packet_lines(piece.packets, step_number)}\n")
