"""Byte accounting per flow and direction: what the writer wrote, what data
segments carried, what the reader read. For validation: on a complete trace
of a healthy connection, written == carried == read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from probes.catalog import LAYER_ORDER, Direction
from tracer.timeline.byte_ranges import copy_range, message_bytes, spliced_ranges, union
from tracer.timeline.model import (
    ByteRange,
    LossSummary,
    Message,
    Packet,
    Role,
    StreamWays,
    Timeline,
)

ORIGIN_PROBE = "__tcp_transmit_skb"


@dataclass(frozen=True, slots=True)
class ByteAccount:
    flow: int
    sender: Role
    written: int  # sum of successful send returns
    sends: int  # send syscalls seen
    failed_sends: int  # returned -errno
    unknown_sends: int  # no return value seen: their bytes are not in `written`
    carried: int  # unique payload bytes of data segments at `carried_at`
    carried_at: str | None  # probe counted: __tcp_transmit_skb, else the lowest layer present
    segments: int  # data segments counted there, retransmissions excluded
    retransmitted: int  # payload bytes of retransmissions (not in `carried`)
    read: int  # sum of successful recv returns of the peer
    recvs: int
    # bytes the peer took off the receive queue: __skb_datagram_iter lengths
    # (copies to user), and tcp_splice_read returns (splices to a pipe)
    copied: int
    copies: int
    complete: bool  # no loss noticed during the flow and the trace is not cut short
    notes: tuple[str, ...] = field(default=())
    # With the kernel's stream positions (tp->write_seq, tp->copied_seq):
    # bytes that entered (left) the stream by no traced call, and every way
    # bytes went, traced calls by syscall first ("send", "sendfile", ...).
    other_written: int = 0
    other_read: int = 0
    written_by: tuple[tuple[str, int], ...] = ()
    read_by: tuple[tuple[str, int], ...] = ()
    # the stretches of the stream written (read) another way, and which way
    written_other: tuple[tuple[ByteRange, str], ...] = ()
    read_other: tuple[tuple[ByteRange, str], ...] = ()

    @property
    def written_total(self) -> int:
        return self.written + self.other_written

    @property
    def read_total(self) -> int:
        return self.read + self.other_read

    @property
    def balanced(self) -> bool:
        """written == carried == read (and == copied when copies were traced),
        counting bytes written and read another way."""
        return self.written_total == self.carried == self.read_total and \
            (self.copies == 0 or self.copied == self.read)


def account_bytes(timeline: Timeline, flow: int, sender: Role) -> ByteAccount:
    """The byte accounting of one direction (`sender`'s writes) of a flow."""
    fl = timeline.flow(flow)
    src = fl.endpoint_of(sender)
    msgs = [st for st in fl.steps if isinstance(st, Message)]
    sends = [m for m in msgs if m.op == "send" and m.side is sender]
    recvs = [m for m in msgs if m.op == "recv" and m.side is sender.peer]
    send_counts = [message_bytes(m) for m in sends]
    recv_counts = [message_bytes(m) for m in recvs]
    packets = [st for st in fl.steps if isinstance(st, Packet) and st.segment.src == src]

    at = _counting_probe(packets)
    ranges: list[ByteRange] = []
    counted: set[int] = set()
    for p in packets:
        for te in p.events:
            seg = te.segment
            if te.probe != at or seg is None or not seg.payload or not seg.length_known:
                continue
            lo = fl.rel(src, seg.seq)
            ranges.append(ByteRange(lo, lo + seg.payload))
            if not p.retransmission:
                counted.add(p.id)
    copies = [r for st in fl.steps for te in st.events
              if (r := copy_range(te, fl, src)) is not None] + spliced_ranges(fl, src)
    unknown = sum(c is None for c in send_counts)
    stream = fl.streams.get(src)
    ways, why = way_fields(stream.ways if stream is not None else None)
    notes = account_notes(unknown, LossSummary.of(fl.gaps),
                          bool(timeline.trace.cut_short), why)
    return ByteAccount(
        flow=fl.number, sender=sender,
        written=sum(c for c in send_counts if c is not None and c > 0),
        sends=len(sends),
        failed_sends=sum(c is not None and c < 0 for c in send_counts),
        unknown_sends=unknown,
        carried=sum(r.size for r in union(ranges)),
        carried_at=at,
        segments=len(counted),
        retransmitted=sum(p.segment.payload for p in packets if p.retransmission),
        read=sum(c for c in recv_counts if c is not None and c > 0),
        recvs=len(recvs),
        copied=sum(r.size for r in copies),
        copies=len(copies),
        complete=not fl.gaps and not timeline.trace.cut_short,
        notes=notes,
        **ways,
    )


def way_fields(ways: StreamWays | None) -> tuple[dict[str, Any], list[str]]:
    """ByteAccount's fields on the ways bytes went, and the notes saying
    why written or read differs from the traced calls' sums."""
    if ways is None:
        return {}, []
    if not ways.written_other and not ways.read_other:  # most flows: traced calls alone
        return {"written_by": tuple(ways.written_by.items()), "other_written": 0,
                "written_other": (), "read_by": tuple(ways.read_by.items()), "other_read": 0,
                "read_other": ()}, []
    fields: dict[str, Any] = {}
    for verb, by, other in (("written", ways.written_by, ways.written_other),
                            ("read", ways.read_by, ways.read_other)):
        rest = _by_way(other)
        fields[f"{verb}_by"] = tuple(by.items()) + tuple(rest.items())
        fields[f"other_{verb}"] = sum(rest.values())
        fields[f"{verb}_other"] = tuple(other)
    return fields, other_way_notes(ways.written_other, ways.read_other)


def _by_way(other: Sequence[tuple[ByteRange, str]]) -> dict[str, int]:
    rest: dict[str, int] = {}
    for r, way in other:
        rest[way] = rest.get(way, 0) + r.size
    return rest


def other_way_notes(written_other: Sequence[tuple[ByteRange, str]],
                    read_other: Sequence[tuple[ByteRange, str]]) -> list[str]:
    """'N B written by WAY' for the bytes no traced call wrote (read)."""
    return [f"{n} B {verb} by {way}"
            for verb, other in (("written", written_other), ("read", read_other))
            for way, n in _by_way(other).items()]


def account_notes(unknown_sends: int, losses: LossSummary, cut_short: bool,
                  why: Sequence[str] = ()) -> tuple[str, ...]:
    """ByteAccount.notes: what keeps the counts from closing (the losses
    during the flow) and the other ways bytes went (why)."""
    notes = []
    if unknown_sends:
        notes.append(f"{unknown_sends} send(s) without a return value")
    if losses.lost:
        notes.append(f"{losses.lost} event(s) lost during the flow")
    if losses.blind:
        notes.append(f"kprobes blind {losses.blind} time(s) during the flow "
                     "(events skipped uncounted)")
    if cut_short:
        notes.append("trace cut short")
    return (*notes, *why)


def account_all(timeline: Timeline) -> list[ByteAccount]:
    """Both directions of every flow, client's writes first."""
    return [account_bytes(timeline, fl.number, role)
            for fl in timeline.flows for role in (Role.CLIENT, Role.SERVER)]


def _counting_probe(packets: list[Packet]) -> str | None:
    """Where data segments are counted: at their birth (__tcp_transmit_skb);
    without it, at the lowest transmit layer present (it sees every segment
    the sender put on the wire), else at the first receive layer."""
    seen: dict[tuple[int, int], dict[str, int]] = {}
    for p in packets:
        if not p.segment.payload:
            continue
        for te in p.events:
            if te.segment is None or not te.segment.payload or te.layer is None:
                continue
            if te.probe == ORIGIN_PROBE:
                return ORIGIN_PROBE
            tx = te.direction is Direction.TX and te.endpoint == p.segment.src
            depth = LAYER_ORDER.index(te.layer)
            # deepest layer first, transmit before receive
            rank = (0 if tx else 1, -depth)
            by_probe = seen.setdefault(rank, {})
            by_probe[te.probe] = by_probe.get(te.probe, 0) + 1
    if not seen:
        return None
    best = seen[min(seen)]
    return max(sorted(best), key=lambda name: best[name])
