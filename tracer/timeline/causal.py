"""The causal graph: which event led to which.

Nodes are events (TEvent.index, with their attributes); every edge points
forward in time and has a `kind`:
- "next": the next event in the same execution context (why "context"), or
  an entry to its return (why "return": call nesting);
- "handoff": work changing execution context: the sender's last device
  event to the first receive event of the same segment (why "wire"), a step
  continuing in another context, such as the backlog handing a segment to
  the NET_RX softirq (why "context"), and the wake-up of a reader: the
  event that queued bytes (sock_def_readable, else tcp_queue_rcv /
  tcp_data_queue / tcp_v4_rcv) to the __skb_datagram_iter that copied them
  (why "wake-up");
- "bytes": a send syscall's entry to the transmission of each data segment
  carrying its bytes (why "send"), and that transmission to the return of
  each recv that returned some of them (why "recv").
When a pair of events is linked for several reasons, `kind` is the most
specific (bytes, then handoff, then next) and `kinds`/`whys` list them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from probes.catalog import Layer
from tracer.events import Kind
from tracer.timeline.byte_ranges import PacketSpans, copy_range, data_packets
from tracer.timeline.event_rules import context_key
from tracer.timeline.model import Message, Packet, TEvent, Timeline
from tracer.timeline.segments import SEQ_MOD, Segment

_PRIORITY = {"bytes": 0, "handoff": 1, "next": 2}
DEVICE_LAYERS = (Layer.DEVICE, Layer.DRIVER)
QUEUE_PROBES = ("tcp_queue_rcv", "tcp_data_queue")
WAKE_PROBES = ("sock_def_readable",)


def build_graph(tl: Timeline) -> Any:
    """The causal DiGraph of a timeline (see the module docstring)."""
    edges: dict[tuple[int, int], list[tuple[str, str]]] = {}

    def link(a: int, b: int, kind: str, why: str) -> None:
        if a < b:  # causality runs forward; a backward candidate is a misattribution
            edges.setdefault((a, b), []).append((kind, why))

    last_in_ctx: dict[tuple[int, int, str, str | None], int] = {}
    for te in tl.events:
        ck = context_key(te.ev)
        if ck in last_in_ctx:
            link(last_in_ctx[ck], te.index, "next", "context")
        last_in_ctx[ck] = te.index
        if te.is_return and te.pair is not None:
            link(te.pair, te.index, "next", "return")
    for st in tl.steps:
        for prev, te in zip(st.events, st.events[1:], strict=False):
            if te.handoff:
                link(prev.index, te.index, "handoff", "context")
        if isinstance(st, Packet):
            for a, b in wire_hops(st):
                link(a.index, b.index, "handoff", "wire")
    for fl in tl.flows:
        packets = {st.id: st for st in fl.steps if isinstance(st, Packet)}
        spans = {ep: PacketSpans(data_packets(fl, ep)) for ep in (fl.client, fl.server)}
        for st in fl.steps:
            if not isinstance(st, Message):
                continue
            if st.op == "send":
                first = _syscall_event(st, Kind.ENTRY) or st.events[0]
                for pid in st.carried_by:
                    link(first.index, origin_event(packets[pid]).index, "bytes", "send")
                continue
            last = _syscall_event(st, Kind.RETURN) or st.events[-1]
            for pid in st.data_from:
                link(origin_event(packets[pid]).index, last.index, "bytes", "recv")
            if st.side is None:
                continue
            sender = fl.endpoint_of(st.side.peer)
            for te in st.events:
                copied = copy_range(te, fl, sender)
                if copied is None:
                    continue
                for pkt in spans[sender].overlapping(copied):
                    queued = queue_event(pkt, before=te.index)
                    if queued is not None:
                        link(queued.index, te.index, "handoff", "wake-up")

    # networkx is imported on first use: it is most of kpath's start-up time,
    # which counts under TCG, and most commands never build the graph.
    import networkx as nx

    g = nx.DiGraph()
    g.add_nodes_from((te.index, _node_attrs(te)) for te in tl.events)
    g.add_edges_from((a, b, _edge_attrs(why)) for (a, b), why in edges.items())
    return g


def _edge_attrs(why: list[tuple[str, str]]) -> dict[str, Any]:
    if len(why) == 1:
        kind = why[0][0]
        return {"kind": kind, "kinds": [kind], "whys": [why[0][1]]}
    kinds = sorted({k for k, _ in why}, key=_PRIORITY.__getitem__)
    return {"kind": kinds[0], "kinds": kinds, "whys": [w for _, w in why]}


def _node_attrs(te: TEvent) -> dict[str, Any]:
    return {
        "probe": te.probe, "kind": str(te.ev.kind), "ts_ns": te.ev.ts_ns,
        "offset_ns": te.offset_ns, "layer": str(te.layer) if te.layer else None,
        "side": str(te.side) if te.side else None, "flow": te.flow, "step": te.step,
        "context": te.context, "handoff": te.handoff,
    }


def _syscall_event(msg: Message, kind: Kind) -> TEvent | None:
    return next((te for te in msg.events
                 if te.layer is Layer.SYSCALL and te.ev.kind is kind), None)


def origin_event(pkt: Packet) -> TEvent:
    """Where the segment was transmitted: its first sender-side event that
    sees the segment (__tcp_transmit_skb when probed), else its first event."""
    src = pkt.segment.src
    return next((te for te in pkt.events if te.segment is not None and te.endpoint == src),
                pkt.events[0])


def _holds(outer: Segment, inner: Segment) -> bool:
    return (inner.seq - outer.seq) % SEQ_MOD + inner.payload <= outer.payload


def wire_hops(pkt: Packet) -> list[tuple[TEvent, TEvent]]:
    """(sender's last device-layer event, first receive event) for each piece
    of the segment the receiver saw (one piece unless split by GSO/TSO).
    Without device probes the sender's last transmit event stands in."""
    tx = [te for te in pkt.tx_events if te.segment is not None]
    device = [te for te in tx if te.layer in DEVICE_LAYERS] or tx
    firsts: dict[tuple[int, int], TEvent] = {}
    for te in pkt.rx_events:
        if te.segment is not None:
            firsts.setdefault((te.segment.seq, te.segment.payload), te)
    out = []
    for rx in firsts.values():
        assert rx.segment is not None
        src = None
        for te in device:
            if te.index < rx.index and te.segment is not None and _holds(te.segment, rx.segment):
                src = te
        if src is not None:
            out.append((src, rx))
    return out


def queue_event(pkt: Packet, before: int) -> TEvent | None:
    """The receive event that made a segment's bytes readable, before event
    index `before`: the wake-up (sock_def_readable), else the queueing
    (tcp_queue_rcv, tcp_data_queue), else tcp_v4_rcv."""
    rx = [te for te in pkt.rx_events if te.index < before]
    for names in (WAKE_PROBES, QUEUE_PROBES, ("tcp_v4_rcv",)):
        found = [te for te in rx if te.probe in names]
        if found:
            return found[-1]
    return None


def edges_of_kind(graph: Any, kind: str) -> Sequence[tuple[int, int]]:
    """Edges whose kinds include `kind` ("next", "handoff", "bytes")."""
    return [(a, b) for a, b, data in graph.edges(data=True) if kind in data["kinds"]]
