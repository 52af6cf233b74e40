"""Per-probe facts as arrays indexed by a trace's probe codes.

Events store a probe code (an index into the trace's probe dictionary); the
per-event rules of the reconstruction (layer, side, capture kind) become
one array lookup per column instead of a dictionary lookup per event. The
table is built from the probe names and a `lookup(name) -> ProbeSpec | None`
function, so it can be fed from the catalog (BY_NAME.get) or from the probe
metadata a trace carries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from probes.catalog import (
    HEADER_CAPTURES,
    LAYER_ORDER,
    SOCK_ONLY_CAPTURES,
    STREAM_POS_CAPTURES,
    WRITE_SEQ_CAPTURES,
    Capture,
    Direction,
    Layer,
    ProbeSpec,
    Returns,
)
from tracer.timeline.accounting import ORIGIN_PROBE
from tracer.timeline.event_rules import SOCKET_CAPTURES
from tracer.timeline.latency import QUEUE_PROBES
from tracer.timeline.segments import ORIGIN_CAPTURES, PACKET_CAPTURES
from tracer.timeline.steps import RETRANSMIT_PROBES

# Layer codes: position in LAYER_ORDER (deeper is larger), NO_LAYER for an
# unknown probe.
NO_LAYER = -1
LAYER_CODE = {layer: i for i, layer in enumerate(LAYER_ORDER)}
SYSCALL, IP, DEVICE, DRIVER = (LAYER_CODE[x] for x in (Layer.SYSCALL, Layer.IP, Layer.DEVICE,
                                                        Layer.DRIVER))
# Direction codes.
NO_DIRECTION, TX, RX = -1, 0, 1


@dataclass(frozen=True, slots=True)
class ProbeTable:
    """One entry per probe code; booleans are capture classes the rules test."""

    names: tuple[str, ...]
    specs: tuple[ProbeSpec | None, ...]  # what the lookup said of each
    known: np.ndarray  # the lookup knew the probe
    layer: np.ndarray  # int8 layer code
    direction: np.ndarray  # int8 direction code
    packet: np.ndarray  # sees one segment (PACKET_CAPTURES)
    header: np.ndarray  # reads packet headers (HEADER_CAPTURES)
    socket: np.ndarray  # teaches the sk -> flow map (SOCKET_CAPTURES)
    origin: np.ndarray  # a segment's birth (ORIGIN_CAPTURES)
    datagram_iter: np.ndarray  # copy to user
    softirq: np.ndarray  # softirq run marker (net_rx_action)
    noack: np.ndarray  # TCP_SKB_CB without the ack (tcp_retransmit_skb)
    sock_or_socket: np.ndarray  # sock/socket argument only
    stream_pos: np.ndarray  # records the kernel's stream position (STREAM_POS_CAPTURES)
    write_pos: np.ndarray  # ... where a write goes (WRITE_SEQ_CAPTURES)
    sock_skb_l3: np.ndarray  # a sock argument with the skb (its sk is trusted on receive)
    ret_value: np.ndarray  # the return value counts bytes
    ret_count: np.ndarray  # a syscall whose return is no byte count (sendmmsg, io_uring)
    splice_read: np.ndarray  # a splice out of a socket (tcp_splice_read: tp->copied_seq)
    queue_rank: np.ndarray  # preference among QUEUE_PROBES, -1 when not one
    retransmit: np.ndarray  # announces a retransmission
    origin_probe: np.ndarray  # __tcp_transmit_skb (where accounting counts first)

    @classmethod
    def build(cls, names: Sequence[str],
              lookup: Callable[[str], ProbeSpec | None]) -> ProbeTable:
        specs = [lookup(name) for name in names]

        def flag(test: Callable[[ProbeSpec], bool]) -> np.ndarray:
            return np.array([s is not None and test(s) for s in specs], dtype=bool)

        def capture_in(captures: frozenset[Capture]) -> np.ndarray:
            return flag(lambda s: s.capture in captures)

        return cls(
            names=tuple(names),
            specs=tuple(specs),
            known=np.array([s is not None for s in specs], dtype=bool),
            layer=np.array([LAYER_CODE[s.layer] if s is not None else NO_LAYER for s in specs],
                           dtype=np.int8),
            direction=np.array([NO_DIRECTION if s is None else
                                TX if s.direction is Direction.TX else RX for s in specs],
                               dtype=np.int8),
            packet=capture_in(PACKET_CAPTURES),
            header=capture_in(HEADER_CAPTURES),
            socket=capture_in(SOCKET_CAPTURES),
            origin=capture_in(ORIGIN_CAPTURES),
            datagram_iter=capture_in(frozenset({Capture.DATAGRAM_ITER})),
            softirq=capture_in(frozenset({Capture.SOFTIRQ})),
            noack=capture_in(frozenset({Capture.SOCK_SKB_CB_NOACK})),
            sock_or_socket=capture_in(SOCK_ONLY_CAPTURES),
            stream_pos=capture_in(STREAM_POS_CAPTURES),
            write_pos=capture_in(WRITE_SEQ_CAPTURES),
            sock_skb_l3=capture_in(frozenset({Capture.SOCK_SKB_L3})),
            ret_value=flag(lambda s: s.ret is Returns.VALUE),
            ret_count=flag(lambda s: s.ret is Returns.COUNT),
            splice_read=capture_in(frozenset({Capture.SOCKET_COPIED_SEQ})),
            queue_rank=np.array([QUEUE_PROBES.index(n) if n in QUEUE_PROBES else -1
                                 for n in names], dtype=np.int8),
            retransmit=np.array([n in RETRANSMIT_PROBES for n in names], dtype=bool),
            origin_probe=np.array([n == ORIGIN_PROBE for n in names], dtype=bool),
        )
