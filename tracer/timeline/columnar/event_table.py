"""Rules that need one event only (tracer/timeline/event_rules.py and
segment_of), applied to whole columns: probe facts, the side an event
belongs to, its normalised 4-tuple and the segment it sees."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracer.events import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN
from tracer.timeline.columnar.columns import NO_EP, EventColumns
from tracer.timeline.columnar.probe_table import RX, ProbeTable
from tracer.timeline.segments import HALF_SEQ, KEY_FLAGS_MASK, SEQ_MOD

PORT_MASK = 0xFFFF


@dataclass(frozen=True, slots=True)
class EventRules:
    layer: np.ndarray  # int8 layer code per event
    direction: np.ndarray  # int8 direction code per event
    is_seg: np.ndarray  # segment_of(ev) is not None
    payload: np.ndarray  # int64 segment payload (0 when unknown)
    known: np.ndarray  # segment length known
    key_flags: np.ndarray  # flags & KEY_FLAGS_MASK
    ack_key: np.ndarray  # ack when the ACK flag is set, else -1 (Segment.ack None)
    pure_ack: np.ndarray  # Segment.is_pure_ack


@dataclass(frozen=True, slots=True)
class EventTuples:
    """The connection each event names: only the flows are made of these,
    so they are not kept with EventRules (25 bytes an event)."""

    own_side: np.ndarray  # side_endpoint(ev) as an endpoint code, NO_EP when None
    tuple_lo: np.ndarray  # normalised 4-tuple (lower, higher endpoint); valid where has_tuple
    tuple_hi: np.ndarray
    has_tuple: np.ndarray


def event_tuples(c: EventColumns, pt: ProbeTable) -> EventTuples:
    probe = c.probe
    rx_header = pt.header[probe] & (pt.direction[probe] == RX)
    has_tuple = ((c.src != NO_EP) & (c.dst != NO_EP) & ((c.src & PORT_MASK) != 0)
                 & ((c.dst & PORT_MASK) != 0))
    return EventTuples(own_side=np.where(rx_header, c.dst, c.src),
                       tuple_lo=np.minimum(c.src, c.dst), tuple_hi=np.maximum(c.src, c.dst),
                       has_tuple=has_tuple)


def event_rules(c: EventColumns, pt: ProbeTable) -> EventRules:
    probe = c.probe
    is_seg = (c.seq >= 0) & pt.packet[probe] & (c.src != NO_EP) & (c.dst != NO_EP)
    flags = c.flags
    slots = ((flags & TCP_SYN) != 0).astype(np.int64) + ((flags & TCP_FIN) != 0)
    from_end = (c.end_seq - c.seq - slots) % SEQ_MOD
    known = np.where(c.has_length, c.length < HALF_SEQ,
                     np.where(c.end_seq >= 0, from_end < HALF_SEQ, True))
    payload = np.where(c.has_length, c.length, np.where(c.end_seq >= 0, from_end, 0))
    payload = np.where(known, payload, 0)
    pure_ack = (known & ((flags & (TCP_RST | TCP_SYN | TCP_FIN)) == 0) & (payload == 0)
                & ((flags & TCP_ACK) != 0))
    return EventRules(
        layer=pt.layer[probe],
        direction=pt.direction[probe],
        is_seg=is_seg,
        payload=payload,
        known=known,
        key_flags=flags & KEY_FLAGS_MASK,
        ack_key=np.where((flags & TCP_ACK) != 0, c.ack, -1),
        pure_ack=pure_ack,
    )
