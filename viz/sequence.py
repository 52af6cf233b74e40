"""Sequence-diagram model computed from a timeline, shared by all diagram
renderers (graphviz, mermaid, ...), plus the event wording they share with
the text timeline.

Lifelines are (side, layer): client app, client syscall ... client device |
server device ... server syscall, server app. Each event is one arrow, in
time order:
- a syscall entry goes app -> syscall;
- a return goes back up, dashed, to where its entry came from (a syscall
  return to the app, labelled "ret N");
- the first event of a packet's receive side comes from the lifeline of the
  sender's last transmit event (its device when probed): the wire hop;
- any other event comes from where the previous event of its step left off,
  or, for the first event of a step, from the previous event in the same
  execution context on the same side (a self-arrow when it is the same
  lifeline, or when there is nothing before it).
Losses are notes across the diagram, at the time they were noticed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from probes.catalog import LAYER_ORDER, Capture, Direction, Layer
from tracer.events import Kind
from tracer.timeline import (
    Flow,
    LostGap,
    Packet,
    Role,
    TEvent,
    Timeline,
    capture_of,
    context_key,
)

APP = "app"
LAYER_LABELS = {
    Layer.SYSCALL: "syscall", Layer.SOCKET: "socket", Layer.TCP: "TCP", Layer.IP: "IP",
    Layer.DEVICE: "device", Layer.DRIVER: "driver",
}


def fmt_offset(ns: int) -> str:
    """'+1.234567 ms' (nanosecond resolution)."""
    return f"+{ns / 1e6:.6f} ms"


def fmt_duration(ns: int) -> str:
    return f"{ns / 1e9:.3f} s" if ns >= 10**9 else f"{ns / 1e6:.6f} ms"


def event_details(te: TEvent, flow: Flow | None) -> str:
    """What an event knows beyond its name: bytes, seq range, ack, flags.

    Sequence numbers are relative to the flow's base for the byte stream they
    belong to (Flow.rel). A copy to user (__skb_datagram_iter) reads the
    peer's stream, so its range is the sender's (the event's dst).
    """
    ev = te.ev
    parts: list[str] = []
    if ev.kind is Kind.RETURN:
        if ev.ret is not None:
            parts.append(f"ret {ev.ret}")
        return " ".join(parts)
    seg = te.segment
    if seg is not None:
        parts.append(seg.flags_label)
        if flow is not None:
            lo, hi = flow.rel(seg.src, seg.seq), flow.rel(seg.src, seg.end_seq)
        else:
            lo, hi = seg.seq, seg.end_seq
        parts.append(f"seq {lo}:{hi}")
        if seg.ack is not None:
            ack = flow.rel(seg.dst, seg.ack) if flow is not None else seg.ack
            parts.append(f"ack {ack}")
        if seg.payload:
            parts.append(f"len {seg.payload}")
        return " ".join(parts)
    if ev.length is not None:
        if capture_of(ev) is Capture.DATAGRAM_ITER:
            parts.append(f"{ev.length} B")
        elif te.direction is Direction.RX:
            parts.append(f"buf {ev.length}")  # receive calls get a buffer size
        else:
            parts.append(f"len {ev.length}")
    if ev.seq is not None:
        owner = ev.dst if capture_of(ev) is Capture.DATAGRAM_ITER else ev.src
        end = ev.end_seq if ev.end_seq is not None else ev.seq + (ev.length or 0)
        if flow is not None and owner is not None:
            parts.append(f"seq {flow.rel(owner, ev.seq)}:{flow.rel(owner, end)}")
        else:
            parts.append(f"seq {ev.seq}:{end}")
    return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Lifeline:
    key: str  # "client_tcp": stable, usable as an identifier
    role: Role
    layer: str  # "app" or a Layer value
    label: str  # "client TCP"


@dataclass(frozen=True, slots=True)
class Arrow:
    src: str  # Lifeline.key
    dst: str
    text: str  # function and details, e.g. "__sys_sendto len 2"
    time: str  # "+1.234567 ms"
    dashed: bool  # a return
    wire: bool  # the packet crossing from sender to receiver
    handoff: bool  # runs in another execution context than the event before it in its step
    event: int  # TEvent.index
    step: int
    role: Role

    @property
    def is_self(self) -> bool:
        return self.src == self.dst


@dataclass(frozen=True, slots=True)
class Note:
    text: str
    kind: str  # "flow" | "lost" | "info"


Row = Arrow | Note


@dataclass(eq=False)
class SequenceDiagram:
    title: str
    lifelines: list[Lifeline]
    rows: list[Row] = field(default_factory=list)

    @property
    def arrows(self) -> list[Arrow]:
        return [r for r in self.rows if isinstance(r, Arrow)]

    def index_of(self, key: str) -> int:
        return next(i for i, ll in enumerate(self.lifelines) if ll.key == key)


def lifeline_key(role: Role, layer: str) -> str:
    return f"{role}_{layer}"


def all_lifelines() -> list[Lifeline]:
    """Every possible lifeline, left to right."""
    def ll(role: Role, layer: str) -> Lifeline:
        name = "app" if layer == APP else LAYER_LABELS[Layer(layer)]
        return Lifeline(lifeline_key(role, layer), role, layer, f"{role} {name}")

    left = [ll(Role.CLIENT, APP)] + [ll(Role.CLIENT, str(lay)) for lay in LAYER_ORDER]
    right = [ll(Role.SERVER, str(lay)) for lay in reversed(LAYER_ORDER)] + [ll(Role.SERVER, APP)]
    return left + right


def build_sequence(timeline: Timeline, flow: int | None = None) -> SequenceDiagram:
    """The diagram for one flow (1-based number) or all flows, one after the
    other, each introduced by a note. Raises KeyError for an unknown flow."""
    flows = [timeline.flow(flow)] if flow is not None else timeline.flows
    trace = timeline.trace
    name = trace.path.rsplit("/", 1)[-1] if trace.path else "trace"
    title = f"kpath: {name} ({trace.header.kernel_release})"
    if flow is not None:
        title += f", flow {flow}"
    rows: list[Row] = []
    for fl in flows:
        rows.append(Note(f"flow {fl.number}: {fl.title}", "flow"))
        rows.extend(_flow_rows(timeline, fl))
    if not flows:
        rows.append(Note("no TCP flow in this trace", "info"))
    unattributed = sum(len(st.events) for g in timeline.unattributed for st in g.steps)
    if flow is None and unattributed:
        rows.append(Note(f"{unattributed} event(s) without a flow not drawn "
                         "(kpath replay lists them)", "info"))
    if trace.cut_short:
        rows.append(Note(f"trace cut short: {trace.cut_short}", "lost"))
    used = {k for r in rows if isinstance(r, Arrow) for k in (r.src, r.dst)}
    used |= {lifeline_key(Role.CLIENT, APP), lifeline_key(Role.SERVER, APP)}
    lifelines = [ll for ll in all_lifelines() if ll.key in used]
    return SequenceDiagram(title=title, lifelines=lifelines, rows=rows)


def _lifeline_of(te: TEvent, role: Role) -> str:
    layer = te.layer if te.layer is not None else Layer.TCP
    return lifeline_key(role, str(layer))


def _flow_rows(timeline: Timeline, fl: Flow) -> list[Row]:
    rows: list[Row] = []
    gaps: list[LostGap] = list(fl.gaps)
    at_step: dict[int, str] = {}  # where each step left off
    at_ctx: dict[tuple[int, str, str | None], str] = {}  # where each context left off
    came_from: dict[int, str] = {}  # event index -> source lifeline of its arrow
    for te in fl.events:
        while gaps and gaps[0].ts_ns < te.ev.ts_ns:
            g = gaps.pop(0)
            rows.append(Note(f"{g.text}, noticed at {fmt_offset(g.offset_ns)}", "lost"))
        step = timeline.step_of(te)
        role = te.side or step.side or Role.CLIENT
        here = _lifeline_of(te, role)
        ck = context_key(te.ev)
        wire = False
        if te.is_return:
            src = here
            if te.layer is Layer.SYSCALL:
                dst = lifeline_key(role, APP)
            else:
                dst = came_from.get(te.pair, at_step.get(step.id, here)) \
                    if te.pair is not None else at_step.get(step.id, here)
        elif te.layer is Layer.SYSCALL:
            src, dst = lifeline_key(role, APP), here
        elif isinstance(step, Packet) and te is _first_rx(step):
            tx = step.tx_events
            src = _lifeline_of(tx[-1], tx[-1].side or role.peer) if tx else here
            dst, wire = here, bool(tx)
        elif step.id in at_step:
            src, dst = at_step[step.id], here
        else:
            prev = at_ctx.get(ck)
            src = prev if prev is not None and prev.startswith(f"{role}_") else here
            dst = here
        came_from[te.index] = src
        at_step[step.id] = dst
        at_ctx[ck] = dst
        text = te.probe if te.layer is not Layer.SYSCALL or not te.is_return else ""
        details = event_details(te, fl)
        label = " ".join(p for p in (text, details) if p)
        rows.append(Arrow(src=src, dst=dst, text=label, time=fmt_offset(te.offset_ns),
                          dashed=te.is_return, wire=wire, handoff=te.handoff,
                          event=te.index, step=step.id, role=role))
    for g in gaps:
        rows.append(Note(f"{g.text}, noticed at {fmt_offset(g.offset_ns)}", "lost"))
    return rows


def _first_rx(pkt: Packet) -> TEvent | None:
    rx = pkt.rx_events
    return rx[0] if rx else None

