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

Beyond one arrow per event:
- every arrow carries its execution context (task, softirq, ksoftirqd,
  hardirq): renderers colour by it and show a legend;
- an event that runs in another context than the previous event of its step
  is a hand-off, labelled with the context it hands off to ("softirq NET_RX");
- a reader blocked in recv when its data arrives is woken: a "wake-up" arrow
  (no event of its own) goes from the packet's last receive event to the
  reader's lifeline;
- activation bars: a call is active from its entry to its return, or for an
  entry-only probe until the next related event of its context (viz/spans.py);
- a View (viz/select.py) picks steps and folds repeated blocks: a folded
  block is drawn once inside a frame that says how often it repeats ("x37").
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field, replace

from probes.catalog import LAYER_ORDER, Capture, Direction, Layer
from tracer.events import Context, Event, Kind, ProbeStatus
from tracer.timeline import (
    ByteRange,
    Flow,
    LostGap,
    Message,
    Packet,
    Role,
    Step,
    TEvent,
    Timeline,
    blind_summary,
    capture_of,
    context_key,
    writers,
)
from viz.escape import printable, printable_items
from viz.select import Block, Selection, View, select
from viz.spans import call_ends

APP = "app"
LAYER_LABELS = {
    Layer.SYSCALL: "syscall", Layer.SOCKET: "socket", Layer.TCP: "TCP", Layer.IP: "IP",
    Layer.DEVICE: "qdisc/device", Layer.DRIVER: "driver",
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


# Execution contexts in legend order.
CONTEXTS = (Context.TASK, Context.SOFTIRQ, Context.KSOFTIRQD, Context.HARDIRQ)
CONTEXT_MEANING = {
    Context.TASK: "task: process context (the syscall path)",
    Context.SOFTIRQ: "softirq: run on irq exit / bh enable, in whatever thread was there",
    Context.KSOFTIRQD: "ksoftirqd: softirq work deferred to the per-CPU thread",
    Context.HARDIRQ: "hardirq: interrupt handler",
}


def context_short(ev: Event) -> str:
    """'task', 'softirq NET_RX', 'ksoftirqd NET_RX', 'hardirq'."""
    if ev.ctx in (Context.SOFTIRQ, Context.KSOFTIRQD):
        return f"{ev.ctx} {ev.softirq or '?'}"
    return str(ev.ctx)


@dataclass(frozen=True, slots=True)
class Lifeline:
    key: str  # "client_tcp": stable, usable as an identifier
    role: Role
    layer: str  # "app" or a Layer value
    label: str  # "client TCP"
    observable: bool = True  # False: no probe of this layer could attach on the kernel traced

    @property
    def caption(self) -> str:
        """The label, saying so when the layer could not be observed."""
        return self.label if self.observable else f"{self.label} (not observable on this kernel)"


@dataclass(frozen=True, slots=True)
class Arrow:
    src: str  # Lifeline.key
    dst: str
    text: str  # function and details, e.g. "__sys_sendto len 2"
    time: str  # "+1.234567 ms"
    dashed: bool  # a return
    wire: bool  # the packet crossing from sender to receiver
    handoff: bool  # runs in another execution context than the event before it in its step
    event: int  # TEvent.index (for a wake-up: the reader's event it leads to)
    step: int
    role: Role
    ctx: str = "task"  # Context value of the event: the colour
    context: str = ""  # full context label: "softirq NET_RX chat-client[186]"
    kind: str = "call"  # call | return | wire | wakeup
    handoff_label: str = ""  # "softirq NET_RX" (hand-offs), "wake-up" (wake-ups)
    flow: int | None = None
    reps: int = 1  # > 1: stands for that many repetitions (folded block)
    probe: str = ""  # the function of the event ("" for a wake-up)
    source: str = ""  # its file:line when the trace header has it (debug info)

    @property
    def is_self(self) -> bool:
        return self.src == self.dst

    @property
    def is_link(self) -> bool:
        """A link between two steps (wake-up, bytes), not an event of its own."""
        return self.kind in LINK_KINDS

    @property
    def element_id(self) -> str:
        """Unique per drawn arrow: an event's, or a link's with its kind."""
        return f"{LINK_KINDS.get(self.kind, 'ev')}{self.event}"


# link kind -> id prefix; the event a link is keyed by also has its own arrow
LINK_KINDS = {"wakeup": "wk", "bytes": "by"}


@dataclass(frozen=True, slots=True)
class Note:
    text: str
    kind: str  # "flow" | "lost" | "info"


@dataclass(frozen=True, slots=True)
class Frame:
    """Start (end=False) or end of a folded block: the rows between are drawn
    once and stand for `reps` repetitions."""

    text: str
    end: bool
    reps: int
    kind: str = "fold"


Row = Arrow | Note | Frame


@dataclass(frozen=True, slots=True)
class Activation:
    """A call active on a lifeline from row `start` to row `end` (inclusive,
    indexes into SequenceDiagram.rows); depth 0 is the outermost bar."""

    lifeline: str
    start: int
    end: int
    depth: int
    ctx: str
    event: int


@dataclass(eq=False)
class SequenceDiagram:
    title: str
    lifelines: list[Lifeline]
    rows: list[Row] = field(default_factory=list)
    activations: list[Activation] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # folds and cuts, for stderr

    @property
    def arrows(self) -> list[Arrow]:
        """One arrow per drawn event (wake-ups excluded)."""
        return [r for r in self.rows if isinstance(r, Arrow) and not r.is_link]

    @property
    def all_arrows(self) -> list[Arrow]:
        return [r for r in self.rows if isinstance(r, Arrow)]

    @property
    def contexts(self) -> list[str]:
        """Execution contexts drawn, in legend order."""
        used = {a.ctx for a in self.all_arrows}
        return [str(c) for c in CONTEXTS if str(c) in used]

    def index_of(self, key: str) -> int:
        return next(i for i, ll in enumerate(self.lifelines) if ll.key == key)

    def depth_at(self, lifeline: str, row: int) -> int:
        """Depth of the innermost bar on `lifeline` covering `row` (-1: none)."""
        return max((a.depth for a in self.activations
                    if a.lifeline == lifeline and a.start <= row <= a.end), default=-1)


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


def _gap_note(g: LostGap) -> Note:
    return Note(f"{printable(g.text)}, noticed at {fmt_offset(g.offset_ns)}", "lost")


def probe_sources(probes: list[ProbeStatus]) -> dict[str, str]:
    """Probe name -> file:line of its function, for the probes whose source
    the trace header records (kpath trace --vmlinux), made printable."""
    return {p.name: printable(p.source) for p in probes
            if p.source and isinstance(p.name, str)}


def build_sequence(timeline: Timeline, flow: int | None = None,
                   view: View | None = None, unattributed: int | None = None
                   ) -> SequenceDiagram:
    """The diagram for a view (default: one flow, 1-based number, or all
    flows, everything: no folding, no cap), each flow introduced by a note. Raises KeyError for an
    unknown flow. `unattributed`: the whole trace's events of no flow, when
    the timeline holds only some parts of it (viz/exportgroups.py)."""
    if view is None:
        if flow is not None:
            timeline.flow(flow)  # KeyError for an unknown flow
        view = select(timeline, Selection(flow=flow, fold=False, cap=False))
    trace = timeline.trace
    name = trace.path.rsplit("/", 1)[-1] if trace.path else "trace"
    title = f"kpath: {printable(name, None)} ({printable(trace.header.kernel_release)})"
    if view.selection.flow is not None:
        title += f", flow {view.selection.flow}"
    builder = _RowBuilder(timeline, view)
    for fv in view.flows:
        shown = fv.total_steps
        note = f"flow {fv.flow.number}: {fv.flow.title}"
        if shown != len(fv.flow.steps):
            note += f" ({shown} of {len(fv.flow.steps)} steps selected)"
        builder.rows.append(Note(note, "flow"))
        builder.flow_rows(fv.flow, fv.blocks)
    if not timeline.flows:
        builder.rows.append(Note("no TCP flow in this trace", "info"))
    elif not view.flows:
        builder.rows.append(Note("nothing selected: no step of a flow in this selection", "info"))
    if unattributed is None:
        unattributed = sum(len(st.events) for g in timeline.unattributed for st in g.steps)
    if view.selection.flow is None and unattributed:
        builder.rows.append(Note(f"{unattributed} event(s) without a flow not drawn "
                                 "(kpath replay lists them)", "info"))
    if view.cut_note:
        builder.rows.append(Note(view.cut_note, "info"))
    if trace.cut_short:
        builder.rows.append(Note(f"trace cut short: {printable(trace.cut_short, None)}",
                                 "lost"))
    rows = builder.rows
    cov = printable_items(trace.header.coverage)
    partial = [layer for layer, c in cov if c == "partial"]
    if partial and timeline.flows:
        rows.insert(0, Note("partly observable on this kernel: " + ", ".join(partial)
                            + " (missing probes: kpath replay)", "info"))
    used = {k for r in rows if isinstance(r, Arrow) for k in (r.src, r.dst)}
    used |= {lifeline_key(Role.CLIENT, APP), lifeline_key(Role.SERVER, APP)}
    # Layers the trace asked for but could not see are drawn, greyed, so a
    # reader does not take their absence for the kernel skipping them.
    unseen = {layer for layer, c in cov if c == "none"} if timeline.flows else set()
    lifelines = [ll if ll.key in used else replace(ll, observable=False)
                 for ll in all_lifelines() if ll.key in used or ll.layer in unseen]
    return SequenceDiagram(title=title, lifelines=lifelines, rows=rows,
                           activations=_activations(timeline, rows),
                           notices=list(view.notices))


def _lifeline_of(te: TEvent, role: Role) -> str:
    layer = te.layer if te.layer is not None else Layer.TCP
    return lifeline_key(role, str(layer))


class _RowBuilder:
    """Turns the blocks of each flow into rows (one arrow per event)."""

    def __init__(self, timeline: Timeline, view: View) -> None:
        self.tl = timeline
        self.view = view
        self.sources = probe_sources(timeline.trace.header.probes)
        self.rows: list[Row] = []

    def flow_rows(self, fl: Flow, blocks: list[Block]) -> None:
        gaps = collections.deque(g for g in fl.gaps if not g.is_blind)
        self.at_step: dict[int, str] = {}  # where each step left off
        self.at_ctx: dict[tuple[int, int, str, str | None], str] = {}  # where each context left off
        self.came_from: dict[int, str] = {}  # event index -> source lifeline of its arrow
        # Consecutive unfolded blocks are drawn together in time order; a
        # folded block is drawn on its own, inside its frame.
        pending: list[Step] = []
        for b in blocks:
            if not b.folded:
                pending.extend(b.steps)
                continue
            self._events(fl, pending, gaps, 1)
            pending = []
            first = f"#{b.covered[0]}..#{b.covered[-1]}"
            span = f"{fmt_offset(b.start_ns - self.tl.start_ns)} .. " \
                   f"{fmt_offset(b.end_ns - self.tl.start_ns)}"
            what = "step" if len(b.steps) == 1 else f"{len(b.steps)} steps"
            self.rows.append(Frame(f"x{b.reps}: this {what} repeated {b.reps} times "
                                   f"(steps {first}, {span}); the first is drawn",
                                   end=False, reps=b.reps))
            self._events(fl, b.steps, gaps, b.reps)
            self.rows.append(Frame(f"x{b.reps}", end=True, reps=b.reps))
        self._events(fl, pending, gaps, 1)
        for g in gaps:
            self.rows.append(_gap_note(g))
        blind = blind_summary(fl.gaps)
        if blind:
            self.rows.append(Note(printable(blind), "lost"))

    def _events(self, fl: Flow, steps: list[Step], gaps: collections.deque[LostGap],
                reps: int) -> None:
        if not steps:
            return
        view = self.view
        events = sorted((te for st in steps for te in st.events if view.shows(te.index)),
                        key=lambda te: te.index)
        ids = {st.id for st in steps}
        wakeups = _wakeups(self.tl, steps, ids, view)
        links = _bytes_links(self.tl, steps, view)
        for te in events:
            while gaps and gaps[0].ts_ns < te.ev.ts_ns:
                g = gaps.popleft()
                self.rows.append(_gap_note(g))
            for msg, part in links.get(te.index, []):
                self.rows.append(self._bytes_link(fl, te, msg, part, reps))
            self.rows.append(self._arrow(fl, te, reps))
            for reader in wakeups.get(te.index, []):
                self.rows.append(self._wakeup(fl, te, reader, reps))

    def _arrow(self, fl: Flow, te: TEvent, reps: int) -> Arrow:
        step = self.tl.step_of(te)
        role = te.side or step.side or Role.CLIENT
        here = _lifeline_of(te, role)
        ck = context_key(te.ev)
        kind = "call"
        crossing = ""  # the wire between two hosts (a merged trace): its time
        if te.is_return:
            kind = "return"
            src = here
            if te.layer is Layer.SYSCALL:
                dst = lifeline_key(role, APP)
            else:
                dst = self.came_from.get(te.pair, self.at_step.get(step.id, here)) \
                    if te.pair is not None else self.at_step.get(step.id, here)
        elif te.layer is Layer.SYSCALL:
            src, dst = lifeline_key(role, APP), here
        elif isinstance(step, Packet) and te is _first_rx(step):
            tx = [t for t in step.tx_events if self.view.shows(t.index)]
            src = _lifeline_of(tx[-1], tx[-1].side or role.peer) if tx else here
            dst = here
            kind = "wire" if tx else "call"
        elif step.id in self.at_step:
            src, dst = self.at_step[step.id], here
        else:
            prev = self.at_ctx.get(ck)
            src = prev if prev is not None and prev.startswith(f"{role}_") else here
            dst = here
        self.came_from[te.index] = src
        self.at_step[step.id] = dst
        self.at_ctx[ck] = dst
        text = printable(te.probe) if te.layer is not Layer.SYSCALL or not te.is_return else ""
        details = event_details(te, fl)
        wire_ns = wire_crossing(step, te)
        if wire_ns is not None:
            crossing = f"[wire {wire_ns / 1e3:.1f} us]"
        label = " ".join(p for p in (text, details, crossing) if p)
        return Arrow(src=src, dst=dst, text=label, time=fmt_offset(te.offset_ns),
                     dashed=te.is_return, wire=kind == "wire", handoff=te.handoff,
                     event=te.index, step=step.id, role=role, ctx=str(te.ev.ctx),
                     context=te.context, kind=kind,
                     handoff_label=context_short(te.ev) if te.handoff else "",
                     flow=fl.number, reps=reps, probe=printable(te.probe),
                     source=self.sources.get(te.probe, ""))

    def _wakeup(self, fl: Flow, waker: TEvent, reader: TEvent, reps: int) -> Arrow:
        step = self.tl.step_of(reader)
        role = reader.side or step.side or Role.CLIENT
        src = _lifeline_of(waker, waker.side or role)
        dst = _lifeline_of(reader, role)
        who = f"{printable(reader.ev.comm)}[{reader.ev.tid}]"
        return Arrow(src=src, dst=dst, text=f"wake-up: #{waker.step} data ready for "
                     f"#{step.id} ({who} in {printable(step.events[0].probe)})",
                     time=fmt_offset(waker.offset_ns), dashed=True, wire=False, handoff=True,
                     event=reader.index, step=step.id, role=role, ctx=str(waker.ev.ctx),
                     context=waker.context, kind="wakeup", handoff_label="wake-up",
                     flow=fl.number, reps=reps)


    def _bytes_link(self, fl: Flow, first: TEvent, msg: Message, part: ByteRange,
                    reps: int) -> Arrow:
        pkt = self.tl.step_of(first)
        role = msg.side or first.side or Role.CLIENT
        return Arrow(src=lifeline_key(role, APP), dst=_lifeline_of(first, role),
                     text=f"bytes {part} of #{msg.id} ({msg.op} {msg.nbytes} B) leave in #{pkt.id}",
                     time=fmt_offset(first.offset_ns), dashed=True, wire=False, handoff=True,
                     event=first.index, step=pkt.id, role=role, ctx=str(first.ev.ctx),
                     context=first.context, kind="bytes", handoff_label="bytes",
                     flow=fl.number, reps=reps)


def _bytes_links(tl: Timeline, steps: list[Step], view: View
                 ) -> dict[int, list[tuple[Message, ByteRange]]]:
    """Packet's first drawn event -> the sends whose bytes it carries when it
    left outside their calls (later, from softirq when an ACK opened the
    window, or in a later call after Nagle held them): nothing else in the
    diagram connects those bytes to their send."""
    out: dict[int, list[tuple[Message, ByteRange]]] = {}
    for st in steps:
        if not isinstance(st, Packet):
            continue
        shown = [te for te in st.tx_events if view.shows(te.index)]
        later = [(m, r) for m, r in writers(tl, st) if m.id != st.message]
        if shown and later:
            out[shown[0].index] = later
    return out


def _wakeups(tl: Timeline, steps: list[Step], ids: set[int], view: View
             ) -> dict[int, list[TEvent]]:
    """Packet's last receive event -> reader events it wakes: a recv whose
    data came with that packet, entered before the packet arrived (the
    reader was waiting) and copying it after."""
    out: dict[int, list[TEvent]] = {}
    for st in steps:
        if not isinstance(st, Message) or st.op != "recv" or not st.data_from:
            continue
        entry = st.events[0]
        copy = next((te for te in st.events if capture_of(te.ev) is Capture.DATAGRAM_ITER
                     and view.shows(te.index)), None)
        if copy is None:
            continue
        for pid in st.data_from:
            pkt = tl.steps[pid]
            rx = [te for te in pkt.events if te.endpoint is not None
                  and isinstance(pkt, Packet) and te.endpoint == pkt.segment.dst]
            if pid not in ids or not rx or not view.shows(rx[-1].index):
                continue
            last = rx[-1]
            if entry.index < last.index < copy.index and \
                    context_key(last.ev) != context_key(copy.ev):
                out.setdefault(last.index, []).append(copy)
    return out


def _activations(timeline: Timeline, rows: list[Row]) -> list[Activation]:
    """Bars for the calls drawn: entry row to the row of the event ending the
    call (viz/spans.py) when that one is drawn, else a bar one row high."""
    ends = call_ends(timeline)
    row_of = {r.event: i for i, r in enumerate(rows)
              if isinstance(r, Arrow) and not r.is_link}
    spans: list[tuple[str, int, int, str, int]] = []
    for i, r in enumerate(rows):
        if not isinstance(r, Arrow) or r.kind == "return" or r.is_link:
            continue
        end = ends.get(r.event)
        j = row_of.get(end, i) if end is not None else i
        spans.append((r.dst, i, max(i, j), r.ctx, r.event))
    out: list[Activation] = []
    open_: dict[str, list[tuple[int, int]]] = {}  # lifeline -> (end row, depth) of open bars
    for ll, start, end, ctx, ev in sorted(spans, key=lambda s: (s[1], -s[2])):
        # bars that ended on or before this row are closed; a bar still open
        # encloses this one: draw it one step further in
        live = [b for b in open_.get(ll, []) if b[0] > start]
        depth = max((d for _, d in live), default=-1) + 1
        out.append(Activation(ll, start, end, depth, ctx, ev))
        open_[ll] = live + [(end, depth)]
    return out


def wire_crossing(step: Step, te: TEvent) -> int | None:
    """A merged trace: the wire's time when `te` is where its packet arrived
    on another host than the one that sent it (its first receive event that
    sees the segment), from the sender's last device-layer event."""
    if not isinstance(step, Packet) or te.segment is None or te.direction is not Direction.RX:
        return None
    if te is not next((r for r in step.rx_events if r.segment is not None), None):
        return None
    sent = [t for t in step.tx_events
            if t.ev.source != te.ev.source and t.layer in (Layer.DEVICE, Layer.DRIVER)]
    return te.ev.ts_ns - sent[-1].ev.ts_ns if sent else None


def _first_rx(pkt: Packet) -> TEvent | None:
    rx = pkt.rx_events
    return rx[0] if rx else None
