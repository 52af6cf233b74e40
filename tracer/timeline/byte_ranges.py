"""Byte ranges: which stream bytes each send wrote and each recv returned,
which segments carried them, and `follow_bytes` from a write to its reads.

Positions are relative sequence numbers of the sender's stream (Flow.rel),
compared as plain integers: no wrap-around within 4 GiB of a direction.
Rules in docs/correlation.md ("Messages and byte ranges").
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from probes.catalog import (
    STREAM_POS_CAPTURES,
    WRITE_SEQ_CAPTURES,
    Capture,
    Layer,
    ProbeSpec,
    Returns,
)
from tracer.events import Endpoint
from tracer.timeline.event_rules import capture_of, dst_of, probe_spec, src_of
from tracer.timeline.model import (
    ByteRange,
    ByteStream,
    Flow,
    Message,
    Packet,
    RangeSource,
    Role,
    StreamWays,
    TEvent,
    Timeline,
)

_S = TypeVar("_S", Message, Packet)


def message_bytes(msg: Message) -> int | None:
    """Bytes a syscall moved: its return value, else what the byte-counting
    calls inside it (tcp_sendmsg_locked, tcp_recvmsg) returned, when the
    syscall's return was lost or counts messages (sendmmsg). Negative:
    -errno, nothing moved."""
    if msg.nbytes is not None:
        return msg.nbytes
    return inner_bytes(msg.events)


def inner_bytes(events: Iterable[TEvent]) -> int | None:
    """The sum of the byte counts returned by calls inside a syscall (the
    first return, 0 or -errno, when none moved a byte), None when none
    returned."""
    rets = [te.ev.ret for te in events
            if te.is_return and te.ev.ret is not None
            and (spec := probe_spec(te.probe)) is not None
            and spec.ret is Returns.VALUE and spec.layer is not Layer.SYSCALL]
    moved = [r for r in rets if r > 0]
    return sum(moved) if moved else (rets[0] if rets else None)


@dataclass(frozen=True, slots=True)
class KernelPiece:
    """Bytes one call wrote or read where the kernel says: its entry's
    stream position (tp->write_seq, tp->copied_seq) and its return value."""

    byte_range: ByteRange
    step: int  # the step holding the entry
    way: str  # piece_way: how its bytes went when no traced syscall holds it


def kernel_pieces(fl: Flow, captures: Collection[Capture] = STREAM_POS_CAPTURES
                  ) -> dict[tuple[Endpoint, bool], list[KernelPiece]]:
    """The stream positions of a flow, by (sender, write): the sender's
    writes (write=True) or the peer's reads of its bytes, in stream order;
    of the calls of `captures`. One pass over the flow's events."""
    pos = [te for st in fl.steps for te in st.events
           if (spec := probe_spec(te.probe)) is not None and spec.capture in captures]
    returned = {te.index: te.ev.ret for te in pos if te.is_return}
    out: dict[tuple[Endpoint, bool], list[KernelPiece]] = {}
    for te in pos:
        ret = returned.get(te.pair) if te.pair is not None else None
        if te.is_return or te.ev.seq is None or ret is None or ret <= 0:
            continue
        spec = probe_spec(te.probe)
        local = src_of(te.ev)
        role = fl.role_of(local)
        if role is None or spec is None:
            continue
        write = spec.capture in WRITE_SEQ_CAPTURES
        sender = fl.endpoint_of(role if write else role.peer)
        lo = fl.rel(sender, te.ev.seq)
        out.setdefault((sender, write), []).append(
            KernelPiece(ByteRange(lo, lo + ret), te.step, piece_way(te.probe, spec, write)))
    for pieces in out.values():
        pieces.sort(key=lambda p: (p.byte_range, p.step))
    return out


def copy_range(te: TEvent, flow: Flow, sender: Endpoint) -> ByteRange | None:
    """The range of `sender`'s stream a copy to user returned
    (__skb_datagram_iter: TCP_SKB_CB(skb)->seq + offset, len), or None."""
    ev = te.ev
    if capture_of(ev) is not Capture.DATAGRAM_ITER or ev.seq is None or ev.length is None \
            or ev.length <= 0 or dst_of(ev) != sender:
        return None
    lo = flow.rel(sender, ev.seq)
    return ByteRange(lo, lo + ev.length)


def spliced_ranges(flow: Flow, sender: Endpoint) -> list[ByteRange]:
    """The ranges of `sender`'s stream the peer spliced out of its socket
    into a pipe (tcp_splice_read: tp->copied_seq at entry, its return):
    bytes off the receive queue with no copy to user."""
    pieces = kernel_pieces(flow, (Capture.SOCKET_COPIED_SEQ,)).get((sender, False), [])
    return [p.byte_range for p in pieces]


def copied_pieces(msg: Message, flow: Flow, sender: Endpoint) -> list[ByteRange]:
    """The ranges of `sender`'s stream the copies inside a recv returned."""
    return [r for te in msg.events if (r := copy_range(te, flow, sender)) is not None]


def union(ranges: Iterable[ByteRange]) -> list[ByteRange]:
    """Sorted, merged, non-empty ranges."""
    out: list[ByteRange] = []
    for r in sorted(ranges):
        if r.size <= 0:
            continue
        if out and r.lo <= out[-1].hi:
            if r.hi > out[-1].hi:
                out[-1] = ByteRange(out[-1].lo, r.hi)
        else:
            out.append(r)
    return out


def _uncovered(want: tuple[int, int], have: list[tuple[int, int]]) -> list[ByteRange]:
    """uncovered() of (lo, hi) tuples."""
    w_lo, w_hi = want
    out = []
    pos = w_lo
    merged: list[list[int]] = []
    for lo, hi in sorted(h for h in have if h[0] < w_hi and w_lo < h[1]):
        if hi - lo <= 0:
            continue
        if merged and lo <= merged[-1][1]:
            if hi > merged[-1][1]:
                merged[-1][1] = hi
        else:
            merged.append([lo, hi])
    for lo, hi in merged:
        if lo > pos:
            out.append(ByteRange(pos, min(lo, w_hi)))
        pos = max(pos, hi)
    if pos < w_hi:
        out.append(ByteRange(pos, w_hi))
    return out


def uncovered(want: ByteRange, have: Iterable[ByteRange]) -> list[ByteRange]:
    """The parts of `want` no range in `have` covers."""
    out = []
    pos = want.lo
    for r in union(h for h in have if h.overlaps(want)):
        if r.lo > pos:
            out.append(ByteRange(pos, min(r.lo, want.hi)))
        pos = max(pos, r.hi)
    if pos < want.hi:
        out.append(ByteRange(pos, want.hi))
    return out


class PacketSpans:
    """Data packets of one direction by start, for overlap queries that
    touch only the packets near the range asked for."""

    def __init__(self, packets: Iterable[Packet]) -> None:
        items = sorted(((p.byte_range.lo, p.byte_range.hi, p) for p in packets
                        if p.byte_range is not None), key=lambda it: (it[0], it[2].id))
        self.los = [it[0] for it in items]
        self.items = items
        self.longest = max((hi - lo for lo, hi, _ in items), default=0)

    def overlapping(self, r: ByteRange) -> list[Packet]:
        out = []
        j = bisect.bisect_left(self.los, r.hi) - 1  # last packet starting before r.hi
        while j >= 0 and self.los[j] + self.longest > r.lo:
            lo, hi, pkt = self.items[j]
            if hi > r.lo:
                out.append(pkt)
            j -= 1
        out.reverse()
        return out


def data_packets(flow: Flow, sender: Endpoint) -> list[Packet]:
    return [st for st in flow.steps if isinstance(st, Packet) and st.byte_range is not None
            and st.segment.src == sender]


def assign_byte_ranges(flows: Sequence[Flow]) -> None:
    """Set Message.byte_range/range_from, Flow.streams, and the links between
    messages and the packets carrying their bytes."""
    for fl in flows:
        msgs = [st for st in fl.steps if isinstance(st, Message)]
        positions = kernel_pieces(fl)
        for sender in (fl.client, fl.server):
            role = fl.role_of(sender)
            assert role is not None
            stream = ByteStream(sender=sender, receiver=fl.endpoint_of(role.peer))
            fl.streams[sender] = stream
            sends = [m for m in msgs if m.op == "send" and m.side is role]
            recvs = [m for m in msgs if m.op == "recv" and m.side is role.peer]
            packets = data_packets(fl, sender)
            start = 1 if fl.isn_from_syn.get(sender) else None
            writes = positions.get((sender, True), [])
            reads = positions.get((sender, False), [])
            _place_sends(sends, packets, start, stream, writes)
            _place_recvs(fl, sender, recvs, start, stream, reads)
            if writes or reads:
                carried = [p.byte_range for p in packets
                           if p.byte_range is not None and not p.retransmission]
                attribute(stream.ways, _calls(sends), _calls(recvs), carried, start, writes,
                          reads)
            _link(sends, recvs, packets)


def _kernel_ranges(msgs: list[Message], pieces: list[KernelPiece], problems: list[str],
                   what: str) -> dict[int, ByteRange]:
    return kernel_ranges([m.id for m in msgs], [message_bytes(m) for m in msgs], pieces,
                         problems, what)


def kernel_ranges(ids: Sequence[int], counts: Sequence[int | None],
                  pieces: Sequence[KernelPiece], problems: list[str], what: str
                  ) -> dict[int, ByteRange]:
    """Message id -> the stream bytes the kernel placed for the calls inside
    it (both reconstructions use this)."""
    by_step: dict[int, list[ByteRange]] = {}
    for p in pieces:
        by_step.setdefault(p.step, []).append(p.byte_range)
    out = {}
    for mid, count in zip(ids, counts, strict=True):
        parts = union(by_step.get(mid, []))
        if not parts:
            continue
        whole = out[mid] = ByteRange(parts[0].lo, parts[-1].hi)
        if len(parts) > 1:
            problems.append(f"{what} #{mid}: the kernel placed non-contiguous ranges "
                            + ", ".join(map(str, parts)))
        size = sum(r.size for r in parts)
        if count is not None and count >= 0 and count != size:
            problems.append(f"{what} #{mid} returned {count} B but the kernel placed "
                            f"{size} B at {whole}")
    return out


def _place_sends(sends: list[Message], packets: list[Packet], start: int | None,
                 stream: ByteStream, pieces: list[KernelPiece]) -> None:
    anchors: dict[int, int] = {}
    for p in packets:  # in id (time) order
        if p.message is not None and not p.retransmission and p.byte_range is not None:
            anchors.setdefault(p.message, p.byte_range.lo)
    exact = _kernel_ranges(sends, pieces, stream.problems, "send")
    _place(sends, start, exact, anchors, stream, "send", kernel=exact.keys())
    placed = [m for m in sends if m.range_from is not None]
    stream.anchor = placed[0].range_from if placed else None
    spans = PacketSpans(p for p in packets if not p.retransmission)
    sent_in: dict[int, list[Packet]] = {}
    for p in packets:
        if p.message is not None:
            sent_in.setdefault(p.message, []).append(p)
    for m in sends:
        r = m.byte_range
        if r is None:
            continue
        for p in sent_in.get(m.id, []):
            if p.byte_range is not None and p.byte_range.hi > r.hi:
                stream.problems.append(
                    f"send #{m.id} wrote {r} but segment #{p.id} it sent carries up to "
                    f"{p.byte_range.hi}: events lost, send ranges may be shifted")
                break
        carriers = spans.overlapping(r)
        if carriers and carriers[0].byte_range is not None and carriers[0].byte_range.lo > r.lo:
            stream.problems.append(
                f"send #{m.id} wrote {r} but its first segment #{carriers[0].id} starts at "
                f"{carriers[0].byte_range.lo}")


def _place_recvs(fl: Flow, sender: Endpoint, recvs: list[Message], start: int | None,
                 stream: ByteStream, kernel_reads: list[KernelPiece]) -> None:
    exact: dict[int, ByteRange] = {}
    for m in recvs:
        pieces = union(copied_pieces(m, fl, sender))
        if not pieces:
            continue
        exact[m.id] = ByteRange(pieces[0].lo, pieces[-1].hi)
        if len(pieces) > 1:
            stream.problems.append(f"recv #{m.id} copied non-contiguous ranges "
                                   + ", ".join(map(str, pieces)))
        count = message_bytes(m)
        if count is not None and count >= 0 and count != exact[m.id].size:
            stream.problems.append(f"recv #{m.id} returned {count} B but its copies cover "
                                   f"{exact[m.id]} ({exact[m.id].size} B)")
    # Without the copies (__skb_datagram_iter not traced or lost), the
    # kernel's tp->copied_seq at tcp_recvmsg's entry places the recv.
    kernel = _kernel_ranges([m for m in recvs if m.id not in exact], kernel_reads,
                            stream.problems, "recv")
    _place(recvs, start, exact | kernel, {}, stream, "recv", kernel=kernel.keys())


def way_of(syscall: str, spec: ProbeSpec | None) -> str:
    """How a traced syscall moves bytes: 'send', 'sendfile', 'read', ..."""
    return spec.way if spec is not None and spec.way else syscall


def piece_way(probe: str, spec: ProbeSpec | None, write: bool) -> str:
    """The way of bytes a stream-position call moved outside any traced syscall."""
    if spec is not None and spec.capture is Capture.SOCK_PAGE_WRITE_SEQ:
        return "sendfile/splice (page-send path, syscall not traced)"
    if write:
        return f"{probe} outside a traced send (sendfile/splice since 6.5, io_uring, ...)"
    return f"{probe} outside a traced recv (io_uring, in-kernel reader)"


@dataclass(frozen=True, slots=True)
class Calls:
    """The send (or recv) messages of one direction as plain data, for
    `attribute` in both reconstructions."""

    ids: Sequence[int]
    ways: Sequence[str]  # way_of
    counts: Sequence[int | None]  # message_bytes
    ranges: Sequence[ByteRange | None]  # placed byte ranges


def _calls(msgs: list[Message]) -> Calls:
    return Calls([m.id for m in msgs], [way_of(m.syscall, probe_spec(m.syscall)) for m in msgs],
                 [message_bytes(m) for m in msgs], [m.byte_range for m in msgs])


def attribute(ways: StreamWays, sends: Calls, recvs: Calls, carried: Sequence[ByteRange],
              start: int | None, writes: Sequence[KernelPiece],
              reads: Sequence[KernelPiece]) -> None:
    """Bytes by the way they were written and read. With the kernel's
    positions, the stretches of the stream no traced send wrote (no traced
    recv read) are bytes that went another way: a call seen only inside
    the kernel (sendfile's page-send path without its syscall, io_uring),
    else an untraced writer or reader. `carried`: the data packets' ranges
    (first transmissions)."""
    for calls, pieces, by, out, write, ends in (
            (sends, writes, ways.written_by, ways.written_other, True, carried),
            (recvs, reads, ways.read_by, ways.read_other, False, ())):
        by.update(way_totals(calls.ways, calls.counts))
        out.extend(other_ways(calls.ids, calls.ranges, pieces, start, ends, write))


def way_totals(ways: Sequence[str], counts: Sequence[int | None]) -> dict[str, int]:
    """Bytes moved by traced calls, by way, in order of first use."""
    out: dict[str, int] = {}
    for way, count in zip(ways, counts, strict=True):
        if count is not None and count > 0:
            out[way] = out.get(way, 0) + count
    return out


def other_ways(ids: Sequence[int], ranges: Sequence[ByteRange | None],
               pieces: Sequence[KernelPiece], start: int | None, ends: Sequence[ByteRange],
               write: bool) -> list[tuple[ByteRange, str]]:
    """The stretches of the stream that the messages (`ids`, their placed
    `ranges`) did not write (read), with the way their bytes went; empty
    without kernel positions (`pieces`). Both reconstructions use this."""
    if not pieces:
        return []
    # (lo, hi) tuples, not ByteRanges: this runs for every direction of
    # every flow, and tuples compare and sort natively.
    done = [(r.lo, r.hi) for r in ranges if r is not None]
    known = set(ids)
    lone = [p for p in pieces if p.step not in known]
    # Writes: every byte carried (`ends`) was written. Reads: up to the last
    # byte read (the rest may still wait in the receive queue).
    his = [hi for _, hi in done] + [p.byte_range.hi for p in pieces] + [r.hi for r in ends]
    if start is not None:
        lo = start
    else:
        lo = min([lo for lo, _ in done] + [p.byte_range.lo for p in pieces]
                 + [r.lo for r in ends])
    return _other_ways((lo, max(his)), done, lone, write)


def _other_ways(extent: tuple[int, int], done: list[tuple[int, int]],
                lone: list[KernelPiece], write: bool) -> list[tuple[ByteRange, str]]:
    """The stretches of `extent` no traced call covers, each with the way its
    bytes went: a call seen without its syscall, else an untraced one."""
    out: list[tuple[ByteRange, str]] = []
    untraced = "untraced writer" if write else "untraced reader"
    for gap in _uncovered(extent, done):
        pos = gap.lo
        for p in lone:
            r = p.byte_range
            if not r.overlaps(gap) or r.hi <= pos:
                continue
            if r.lo > pos:
                _add(out, ByteRange(pos, r.lo), untraced)
            _add(out, ByteRange(max(pos, r.lo), min(r.hi, gap.hi)), p.way)
            pos = min(r.hi, gap.hi)
        if pos < gap.hi:
            _add(out, ByteRange(pos, gap.hi), untraced)
    return out


def _add(out: list[tuple[ByteRange, str]], r: ByteRange, way: str) -> None:
    if out and out[-1][1] == way and out[-1][0].hi == r.lo:
        out[-1] = (ByteRange(out[-1][0].lo, r.hi), way)
    else:
        out.append((r, way))


def place_starts(ids: Sequence[int], counts: Sequence[int | None], start: int | None,
                 exact: Mapping[int, tuple[int, int]], anchors: Mapping[int, int],
                 problems: list[str], what: str, kernel: Collection[int] = ()
                 ) -> tuple[list[int | None], list[RangeSource | None]]:
    """Consecutive messages of one direction follow each other in the stream:
    walk forward from the first known position (ISN+1, an exact range (lo,
    hi), a segment anchor), then backward from the first placed message. Each
    message's start and what placed it; both reconstructions use this.
    Exact ranges come from the copies to user, or from the kernel's stream
    position for the ids in `kernel`: other writers may have put bytes
    between those, so a jump there is no problem."""
    n = len(ids)
    starts: list[int | None] = [None] * n
    srcs: list[RangeSource | None] = [None] * n
    pos: int | None = start
    src: RangeSource | None = RangeSource.ISN if start is not None else None
    for i, mid in enumerate(ids):
        ex = exact.get(mid)
        if ex is not None:
            by_kernel = mid in kernel
            if pos is not None and pos != ex[0] and not by_kernel:
                problems.append(
                    f"{what} #{mid} starts at {ex[0]}, stream order expected {pos} "
                    "(events lost, or MSG_PEEK)")
            starts[i] = ex[0]
            srcs[i] = RangeSource.KERNEL if by_kernel else RangeSource.COPY
            pos, src = ex[1], RangeSource.NEIGHBOUR
            continue
        if pos is None and mid in anchors:
            pos, src = anchors[mid], RangeSource.SEGMENT
        if pos is not None:
            starts[i], srcs[i] = pos, src
        count = counts[i]
        if count is None:
            pos, src = None, None  # bytes unknown: the stream position is lost
        elif pos is not None and count > 0:
            pos += count
    for i in range(n - 2, -1, -1):
        after, count = starts[i + 1], counts[i]
        if starts[i] is None and after is not None and count is not None:
            starts[i] = after - max(count, 0)
            nxt = srcs[i + 1]
            srcs[i] = RangeSource.NEIGHBOUR if nxt in _EXACT else nxt
    return starts, srcs


_EXACT = (RangeSource.COPY, RangeSource.KERNEL)


def _place(msgs: list[Message], start: int | None, exact: dict[int, ByteRange],
           anchors: dict[int, int], stream: ByteStream, what: str,
           kernel: Collection[int] = ()) -> None:
    counts = [message_bytes(m) for m in msgs]
    starts, srcs = place_starts([m.id for m in msgs], counts, start,
                                {k: (v.lo, v.hi) for k, v in exact.items()}, anchors,
                                stream.problems, what, kernel)
    for i, m in enumerate(msgs):
        ex = exact.get(m.id)
        count, at = counts[i], starts[i]
        if ex is not None:
            m.byte_range, m.range_from = ex, srcs[i]
        elif at is not None and count is not None and count > 0:
            m.byte_range, m.range_from = ByteRange(at, at + count), srcs[i]


def _link(sends: list[Message], recvs: list[Message], packets: list[Packet]) -> None:
    spans = PacketSpans(packets)
    for m in recvs:
        m.data_from.extend(_overlaps(spans, m, lambda p: p.read_by))
    for m in sends:
        m.carried_by.extend(_overlaps(spans, m, lambda p: p.written_by))
    for p in packets:
        p.read_by.sort()
        p.written_by.sort()


def _overlaps(
    spans: PacketSpans, m: Message, backlinks: Callable[[Packet], list[int]]
) -> list[int]:
    """Ids of the packets holding m's bytes; m is added to each one's backlinks."""
    if m.byte_range is None:
        return []
    found = spans.overlapping(m.byte_range)
    for p in found:
        backlinks(p).append(m.id)
    return sorted(p.id for p in found)


@dataclass(eq=False, kw_only=True)
class ByteTrail:
    """Where one send's bytes went."""

    send: Message
    byte_range: ByteRange | None
    segments: list[Packet] = field(default_factory=list)  # first transmissions carrying them
    retransmissions: list[Packet] = field(default_factory=list)
    reads: list[Message] = field(default_factory=list)  # recvs that returned some of them
    not_carried: list[ByteRange] = field(default_factory=list)  # no traced segment has them
    not_read: list[ByteRange] = field(default_factory=list)  # no traced recv returned them

    @property
    def complete(self) -> bool:
        """Every byte written was carried and read (as far as the trace shows)."""
        return self.byte_range is not None and not self.not_carried and not self.not_read


def follow_bytes(timeline: Timeline, flow: int, sender: Role) -> list[ByteTrail]:
    """For one flow and direction (the `sender`'s writes), each successful
    send message with the data segments and recv messages holding its bytes."""
    fl = timeline.flow(flow)
    ep = fl.endpoint_of(sender)
    packets = data_packets(fl, ep)
    spans = PacketSpans(packets)
    recvs = [st for st in fl.steps if isinstance(st, Message) and st.op == "recv"
             and st.side is sender.peer and st.byte_range is not None]
    recv_index = sorted(((m.byte_range.lo, m) for m in recvs if m.byte_range is not None),
                        key=lambda it: (it[0], it[1].id))
    recv_los = [lo for lo, _ in recv_index]
    longest = max((m.byte_range.size for m in recvs if m.byte_range is not None), default=0)
    trails = []
    for m in fl.steps:
        if not isinstance(m, Message) or m.op != "send" or m.side is not sender:
            continue
        count = message_bytes(m)
        if count is not None and count <= 0:
            continue
        trail = ByteTrail(send=m, byte_range=m.byte_range)
        trails.append(trail)
        r = m.byte_range
        if r is None:
            continue
        carriers = spans.overlapping(r)
        trail.segments = [p for p in carriers if not p.retransmission]
        trail.retransmissions = [p for p in carriers if p.retransmission]
        trail.not_carried = uncovered(r, (p.byte_range for p in carriers
                                          if p.byte_range is not None))
        j = bisect.bisect_left(recv_los, r.hi) - 1
        reads = []
        while j >= 0 and recv_los[j] + longest > r.lo:
            rm = recv_index[j][1]
            if rm.byte_range is not None and rm.byte_range.overlaps(r):
                reads.append(rm)
            j -= 1
        trail.reads = sorted(reads, key=lambda x: x.id)
        trail.not_read = uncovered(r, (x.byte_range for x in reads if x.byte_range is not None))
    return trails


def carriers(tl: Timeline, msg: Message) -> list[tuple[Packet, ByteRange]]:
    """A send's bytes, packet by packet: each packet that carried some of
    them and which (a packet sent again carries them again)."""
    return _shared(tl, msg.carried_by, msg.byte_range, Packet)


def writers(tl: Timeline, pkt: Packet) -> list[tuple[Message, ByteRange]]:
    """A data packet's payload, send by send: which send wrote which bytes."""
    return _shared(tl, pkt.written_by, pkt.byte_range, Message)


def _shared(tl: Timeline, ids: Sequence[int], rng: ByteRange | None, kind: type[_S]
            ) -> list[tuple[_S, ByteRange]]:
    """The linked steps (ids) with the part of rng each holds."""
    if rng is None:
        return []
    out = []
    for i in ids:
        st = tl.steps[i]
        assert isinstance(st, kind)
        part = st.byte_range.shared(rng) if st.byte_range is not None else None
        if part is not None:
            out.append((st, part))
    return out
