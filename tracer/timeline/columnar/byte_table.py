"""Byte ranges and accounting of one flow direction, on the rows the step
table produced (tracer/timeline/byte_ranges.py and accounting.py).

Messages and packets of one direction are walked in Python here: the rules
are sequential (stream order) and these rows are a small part of a trace.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from tracer.timeline.byte_ranges import (
    Calls,
    KernelPiece,
    attribute,
    kernel_ranges,
    place_starts,
)
from tracer.timeline.model import ByteRange, RangeSource, StreamWays

_Range = tuple[int, int]


@dataclass(frozen=True, slots=True)
class MessageRows:
    """The send or recv messages of one direction, by step id."""

    ids: list[int]
    keys: list[int]  # first event of each
    counts: list[int | None]  # message_bytes
    ways: list[str] = field(default_factory=list)  # byte_ranges.way_of, when known


@dataclass(frozen=True, slots=True)
class PacketRows:
    """The packets of one direction (sender's segments), by step id."""

    ids: list[int]
    los: list[int]  # byte range start, -1 without a range
    payloads: list[int]
    retrans: list[bool]
    messages: list[int]  # step id of the send that transmitted it, -1


@dataclass(kw_only=True)
class Placement:
    """Message ranges of one direction: the ByteStream text and the ranges."""

    ranges: dict[int, _Range] = field(default_factory=dict)  # message id -> range
    anchor: RangeSource | None = None
    problems: list[str] = field(default_factory=list)
    ways: StreamWays = field(default_factory=StreamWays)


def union(ranges: Sequence[_Range]) -> list[_Range]:
    out: list[_Range] = []
    for lo, hi in sorted(ranges):
        if hi - lo <= 0:
            continue
        if out and lo <= out[-1][1]:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _text(r: _Range) -> str:
    return f"{r[0]}:{r[1]}"


def place_direction(sends: MessageRows, recvs: MessageRows, packets: PacketRows,
                    copies: dict[int, list[_Range]], start: int | None,
                    writes: Sequence[KernelPiece] = (),
                    kernel_reads: Sequence[KernelPiece] = ()
                    ) -> tuple[Placement, Placement]:
    """(sends' placement with the stream's anchor, problems and ways, recvs'
    ranges); copies: recv id -> ranges its copies returned; writes, reads:
    the kernel's stream positions (byte_ranges.kernel_pieces)."""
    stream = Placement()
    anchors: dict[int, int] = {}
    for lo, msg, retrans in zip(packets.los, packets.messages, packets.retrans, strict=True):
        if msg >= 0 and not retrans and lo >= 0:
            anchors.setdefault(msg, lo)
    sent = _tuples(kernel_ranges(sends.ids, sends.counts, writes, stream.problems, "send"))
    first_src = _place(sends, start, sent, anchors, stream, "send", sent.keys())
    stream.anchor = first_src
    spans = sorted((lo, pid, lo + size) for lo, pid, size, retrans
                   in zip(packets.los, packets.ids, packets.payloads, packets.retrans,
                          strict=True) if lo >= 0 and not retrans)
    sent_in: dict[int, list[tuple[int, int]]] = {}
    for pid, lo, size, msg in zip(packets.ids, packets.los, packets.payloads, packets.messages,
                                  strict=True):
        if msg >= 0:
            sent_in.setdefault(msg, []).append((pid, lo + size if lo >= 0 else -1))
    longest = max((hi - lo for lo, _, hi in spans), default=0)
    los = [lo for lo, _, _ in spans]
    for mid in sends.ids:
        r = stream.ranges.get(mid)
        if r is None:
            continue
        for pid, hi in sent_in.get(mid, []):
            if hi >= 0 and hi > r[1]:
                stream.problems.append(
                    f"send #{mid} wrote {_text(r)} but segment #{pid} it sent carries up to "
                    f"{hi}: events lost, send ranges may be shifted")
                break
        first = _first_overlapping(los, spans, longest, r)
        if first is not None and first[0] > r[0]:
            stream.problems.append(
                f"send #{mid} wrote {_text(r)} but its first segment #{first[1]} starts at "
                f"{first[0]}")
    reads = Placement()
    exact: dict[int, _Range] = {}
    for mid, count in zip(recvs.ids, recvs.counts, strict=True):
        pieces = union(copies.get(mid, []))
        if not pieces:
            continue
        whole = exact[mid] = (pieces[0][0], pieces[-1][1])
        if len(pieces) > 1:
            stream.problems.append(f"recv #{mid} copied non-contiguous ranges "
                                   + ", ".join(_text(x) for x in pieces))
        if count is not None and count >= 0 and count != whole[1] - whole[0]:
            stream.problems.append(f"recv #{mid} returned {count} B but its copies cover "
                                   f"{_text(whole)} ({whole[1] - whole[0]} B)")
    reads.problems = stream.problems
    left = [i for i, mid in enumerate(recvs.ids) if mid not in exact]
    kernel = _tuples(kernel_ranges([recvs.ids[i] for i in left], [recvs.counts[i] for i in left],
                                   kernel_reads, stream.problems, "recv"))
    _place(recvs, start, exact | kernel, {}, reads, "recv", kernel.keys())
    if writes or kernel_reads:
        carried = [ByteRange(lo, lo + size) for lo, size, retrans
                   in zip(packets.los, packets.payloads, packets.retrans, strict=True)
                   if lo >= 0 and not retrans]
        attribute(stream.ways, _calls(sends, stream), _calls(recvs, reads), carried, start,
                  writes, kernel_reads)
    return stream, reads


def _tuples(ranges: dict[int, ByteRange]) -> dict[int, _Range]:
    return {k: (r.lo, r.hi) for k, r in ranges.items()}


def _calls(msgs: MessageRows, placed: Placement) -> Calls:
    return Calls(msgs.ids, msgs.ways, msgs.counts,
                 [ByteRange(*r) if (r := placed.ranges.get(mid)) is not None else None
                  for mid in msgs.ids])


def _first_overlapping(los: list[int], spans: list[tuple[int, int, int]], longest: int,
                       r: _Range) -> tuple[int, int] | None:
    """PacketSpans.overlapping(r)[0]: the (start, id) of the lowest overlapping span."""
    import bisect

    j = bisect.bisect_left(los, r[1]) - 1
    best: tuple[int, int] | None = None
    while j >= 0 and los[j] + longest > r[0]:
        lo, pid, hi = spans[j]
        if hi > r[0]:
            best = (lo, pid)
        j -= 1
    return best


def _place(msgs: MessageRows, start: int | None, exact: dict[int, _Range],
           anchors: dict[int, int], out: Placement, what: str,
           kernel: Collection[int] = ()) -> RangeSource | None:
    """byte_ranges._place on rows; returns the first placed message's source."""
    counts = msgs.counts
    starts, srcs = place_starts(msgs.ids, counts, start, exact, anchors, out.problems, what,
                                kernel)
    first: RangeSource | None = None
    for i, mid in enumerate(msgs.ids):
        ex = exact.get(mid)
        count, at = counts[i], starts[i]
        if ex is not None:
            out.ranges[mid] = ex
            source: RangeSource | None = srcs[i]
        elif at is not None and count is not None and count > 0:
            out.ranges[mid] = (at, at + count)
            source = srcs[i]
        else:
            continue
        if first is None:
            first = source
    return first
