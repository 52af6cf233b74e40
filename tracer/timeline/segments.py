"""TCP segments as the probes see them, and what a segment is (SYN, data,
pure ACK...). See docs/correlation.md for how they are linked into packets.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum

from probes.catalog import SEGMENT_CAPTURES, Capture
from tracer.events import (
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    Endpoint,
    Event,
    tcp_flag_names,
)
from tracer.timeline.event_rules import capture_of, dst_of, src_of

SEQ_MOD = 1 << 32
HALF_SEQ = 1 << 31

# Flags compared when linking a segment across layers. ECE/CWR/URG are left
# out: ECN may add them between TCP_SKB_CB and the header on the wire.
KEY_FLAGS_MASK = TCP_FIN | TCP_SYN | TCP_RST | TCP_PSH | TCP_ACK
# Flags every piece of a segment split below TCP (GSO/TSO) keeps: PSH and FIN
# go to the last piece only.
SPLIT_FLAGS_MASK = TCP_SYN | TCP_RST | TCP_ACK

# Captures that see one segment (seq/flags of a packet in flight).
PACKET_CAPTURES = SEGMENT_CAPTURES
# Where a segment is born: a second birth with the same key is a new packet.
ORIGIN_CAPTURES = frozenset({Capture.SOCK_SKB_CB, Capture.SYNACK_REQ})


class SegmentType(StrEnum):
    SYN = "SYN"
    SYN_ACK = "SYN-ACK"
    RST = "RST"
    DATA = "data"  # carries payload (FIN or PSH may be set too)
    FIN = "FIN"  # no payload
    ACK = "ACK"  # pure ACK: no payload, no SYN/FIN/RST
    OTHER = "other"  # no flag at all


@dataclass(frozen=True, slots=True)
class Segment:
    """A TCP segment as one event saw it; end_seq derived when not reported."""

    src: Endpoint
    dst: Endpoint
    seq: int
    end_seq: int
    flags: int
    ack: int | None  # only when the ACK flag is set
    payload: int
    # False when the event's length was impossible (an IP header read before
    # tot_len was set): payload is then 0 and the segment is linked without it.
    length_known: bool = True

    @property
    def flags_label(self) -> str:
        """'SYN', 'SYN-ACK', 'ACK', 'PSH|ACK', 'FIN|ACK'; '(no flags)' if none."""
        return _flags_label(self.flags)

    @property
    def label(self) -> str:
        """Flags plus payload size: 'SYN', 'ACK', 'PSH|ACK 2 B'."""
        return f"{self.flags_label} {self.payload} B" if self.payload else self.flags_label

    @property
    def type(self) -> SegmentType:
        f = self.flags
        if f & TCP_RST:
            return SegmentType.RST
        if f & TCP_SYN:
            return SegmentType.SYN_ACK if f & TCP_ACK else SegmentType.SYN
        if self.payload:
            return SegmentType.DATA
        if f & TCP_FIN:
            return SegmentType.FIN
        if f & TCP_ACK:
            return SegmentType.ACK
        return SegmentType.OTHER

    @property
    def is_pure_ack(self) -> bool:
        return self.length_known and self.type is SegmentType.ACK


@functools.lru_cache(maxsize=256)
def _flags_label(flags: int) -> str:
    # Asked for every packet event a renderer describes: one per flags byte.
    names = tcp_flag_names(flags).split("|") if flags else ["(no flags)"]
    if "SYN" in names and "ACK" in names:
        names = ["SYN-ACK" if n == "SYN" else n for n in names if n != "ACK"]
    return "|".join(names)


_cache: dict[tuple[object, ...], Segment] = {}


def forget_segments() -> None:
    """Empty the segment cache (a trace rebuilt in parts of groups: one
    part's segments are not another's, and a full cache holds ~90 MB)."""
    _cache.clear()


def segment_of(ev: Event) -> Segment | None:
    """The segment a packet-capture event carries (None for other events).

    The payload comes from `length` (header payload or CB range) when known,
    else from end_seq - seq minus the SYN/FIN sequence slots. A length of
    2^31 or more is a negative number read from a header not filled in yet:
    the payload is unknown (`length_known` False).
    """
    if ev.seq is None or capture_of(ev) not in PACKET_CAPTURES:
        return None
    raw = (ev.saddr, ev.sport, ev.daddr, ev.dport, ev.seq, ev.end_seq, ev.tcp_flags, ev.ack,
           ev.length)
    seg = _cache.get(raw)
    if seg is not None:
        return seg
    src, dst = src_of(ev), dst_of(ev)
    if src is None or dst is None:
        return None
    flags = ev.tcp_flags or 0
    slots = (1 if flags & TCP_SYN else 0) + (1 if flags & TCP_FIN else 0)
    if ev.length is not None:
        known = ev.length < HALF_SEQ
        payload = ev.length if known else 0
    elif ev.end_seq is not None:
        payload = (ev.end_seq - ev.seq - slots) % SEQ_MOD
        known = payload < HALF_SEQ
        payload = payload if known else 0
    else:
        payload, known = 0, True
    end_seq = ev.end_seq if known and ev.end_seq is not None else \
        (ev.seq + payload + slots) % SEQ_MOD
    ack = ev.ack if flags & TCP_ACK else None
    seg = Segment(src, dst, ev.seq, end_seq, flags, ack, payload, known)
    if len(_cache) > 1 << 18:  # bounded: a trace's segments repeat ~15 times, then never
        _cache.clear()
    _cache[raw] = seg
    return seg


@dataclass(frozen=True, slots=True)
class PacketKey:
    """Links one segment across layers and skb clones.

    __tcp_transmit_skb sees the queued skb, the IP layer and below its fast
    clone: addresses differ, the segment does not. Pure ACKs repeat the same
    seq, so the ack number is part of the key. `scope` is the flow key's
    (see FlowKey): 0 unless one 4-tuple is used in several namespaces.
    """

    scope: int
    src: Endpoint
    dst: Endpoint
    seq: int
    payload: int
    flags: int  # masked with KEY_FLAGS_MASK
    ack: int | None


def signed_seq_delta(a: int, b: int) -> int:
    """a - b in sequence space (RFC 1982 style): negative when a is before b."""
    d = (a - b) % SEQ_MOD
    return d - SEQ_MOD if d >= HALF_SEQ else d
