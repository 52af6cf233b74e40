"""Reconstruction: from a Trace's flat event list to flows, messages, packets.

Pure functions of a `Trace`; nothing here prints or formats for a terminal.

Vocabulary:
- flow: one TCP connection, keyed by (netns, normalized 4-tuple), with its
  two endpoints labelled client and server (see `_assign_roles`);
- step: the unit a reader follows; every event belongs to exactly one step:
  - `Message`: a send or recv syscall with the socket-level events nested in
    the same thread (process context) between its entry and its return;
  - `Packet`: one TCP segment, its events down the sender's stack and up the
    receiver's, linked by segment key (not skb address: see `PacketKey`);
  - `Lone`: an event that is neither and explains no packet (inet_csk_accept
    and its return, a tcp_write_xmit that sent nothing...); segment-less
    events next to a packet in their context join it (see `_make_steps`).
- side: which end of the flow an event belongs to (`side_endpoint`).
- unattributed: events with no flow (no socket, no addresses, not inside a
  syscall of a flow), kept per thread in `Timeline.unattributed`.

Time offsets are relative to the first record of the trace (event or loss).
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import networkx as nx

from probes.catalog import BY_NAME, HEADER_CAPTURES, SEGMENT_CAPTURES, Capture, Direction, Layer
from tracer.events import Context, Endpoint, Event, Kind, tcp_flag_names
from tracer.tracefile import Trace

SEQ_MOD = 1 << 32

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
# Flags compared when linking a segment across layers. ECE/CWR/URG are left
# out: ECN may add them between TCP_SKB_CB and the header on the wire.
KEY_FLAGS_MASK = TCP_FIN | TCP_SYN | TCP_RST | TCP_PSH | TCP_ACK

# Captures that see one segment (seq/flags of a packet in flight).
PACKET_CAPTURES = SEGMENT_CAPTURES
# Where a segment is born: a second birth with the same key is a new packet.
ORIGIN_CAPTURES = frozenset({Capture.SOCK_SKB_CB, Capture.SYNACK_REQ})
# Captures whose src is the local end of a socket that owns the flow; only
# these teach the sk -> flow map (a listener's tcp_v4_send_synack carries the
# request's flow, and skb->sk on packet captures is not reliable).
SOCKET_CAPTURES = frozenset(
    {Capture.SYSCALL_FD, Capture.SOCKET, Capture.SOCK, Capture.SOCK_SKB_CB,
     Capture.SOCK_SKB_CB_NOACK, Capture.SOCK_SKB_L4, Capture.DATAGRAM_ITER}
)


class Role(StrEnum):
    CLIENT = "client"
    SERVER = "server"

    @property
    def peer(self) -> Role:
        return Role.SERVER if self is Role.CLIENT else Role.CLIENT


class RolesFrom(StrEnum):
    HANDSHAKE = "handshake"  # SYN (client -> server) or SYN-ACK seen
    PORT = "port"  # no handshake in the trace: the lower port is the server


# ---------------------------------------------------------------------------
# Per-event rules (each in one place)


def side_endpoint(ev: Event) -> Endpoint | None:
    """The endpoint whose side of the connection an event belongs to.

    Socket-level captures (syscalls, socket/sock functions, the copy to user,
    tcp_v4_send_synack's request sock, transmit with a socket) report the
    socket's LOCAL endpoint as src, whatever the direction: the side is src.
    Only packet-header captures on receive (skb_l3 with direction rx:
    ip_rcv, tcp_v4_rcv) see the sender as src; their side is dst.
    """
    spec = BY_NAME.get(ev.probe)
    if spec is not None and spec.capture in HEADER_CAPTURES and spec.direction is Direction.RX:
        return ev.dst
    return ev.src


def layer_of(ev: Event) -> Layer | None:
    spec = BY_NAME.get(ev.probe)
    return spec.layer if spec is not None else None


def capture_of(ev: Event) -> Capture | None:
    spec = BY_NAME.get(ev.probe)
    return spec.capture if spec is not None else None


def context_key(ev: Event) -> tuple[int, str, str | None]:
    """One execution context: a thread in one mode (task, softirq vector, ...)."""
    return (ev.tid, str(ev.ctx), ev.softirq)


def context_label(ev: Event) -> str:
    """'task client[12]', 'softirq NET_RX client[12]', 'ksoftirqd NET_RX ksoftirqd/0[15]'."""
    who = f"{ev.comm}[{ev.tid}]"
    if ev.ctx is Context.TASK:
        return f"task {who}"
    if ev.ctx in (Context.SOFTIRQ, Context.KSOFTIRQD):
        return f"{ev.ctx} {ev.softirq or '?'} {who}"
    return f"{ev.ctx} {who}"


def _valid_endpoint(ep: Endpoint | None) -> bool:
    return ep is not None and ep.port != 0


@functools.lru_cache(maxsize=4096)
def _ep_order(ep: Endpoint) -> tuple[int, int, str, int]:
    try:
        ip = ipaddress.ip_address(ep.addr)
        return (ip.version, int(ip), "", ep.port)
    except ValueError:
        return (99, 0, ep.addr, ep.port)


def _tuple_of(ev: Event) -> tuple[Endpoint, Endpoint] | None:
    """The event's 4-tuple, normalized (lower endpoint first), or None."""
    src, dst = ev.src, ev.dst
    if src is None or dst is None or not _valid_endpoint(src) or not _valid_endpoint(dst):
        return None
    return (src, dst) if _ep_order(src) <= _ep_order(dst) else (dst, src)


@dataclass(frozen=True, slots=True)
class FlowKey:
    netns: int
    lo: Endpoint
    hi: Endpoint


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

    @property
    def flags_label(self) -> str:
        """'SYN', 'SYN-ACK', 'ACK', 'PSH|ACK', 'FIN|ACK'; '(no flags)' if none."""
        names = tcp_flag_names(self.flags).split("|") if self.flags else ["(no flags)"]
        if "SYN" in names and "ACK" in names:
            names = ["SYN-ACK" if n == "SYN" else n for n in names if n != "ACK"]
        return "|".join(names)

    @property
    def label(self) -> str:
        """Flags plus payload size: 'SYN', 'ACK', 'PSH|ACK 2 B'."""
        return f"{self.flags_label} {self.payload} B" if self.payload else self.flags_label


def segment_of(ev: Event) -> Segment | None:
    """The segment a packet-capture event carries (None for other events).

    The payload comes from `length` (header payload or CB range) when known,
    else from end_seq - seq minus the SYN/FIN sequence slots.
    """
    if capture_of(ev) not in PACKET_CAPTURES or ev.seq is None:
        return None
    src, dst = ev.src, ev.dst
    if src is None or dst is None:
        return None
    flags = ev.tcp_flags or 0
    slots = (1 if flags & TCP_SYN else 0) + (1 if flags & TCP_FIN else 0)
    if ev.length is not None:
        payload = ev.length
    elif ev.end_seq is not None:
        payload = (ev.end_seq - ev.seq - slots) % SEQ_MOD
    else:
        payload = 0
    end_seq = ev.end_seq if ev.end_seq is not None else (ev.seq + payload + slots) % SEQ_MOD
    ack = ev.ack if flags & TCP_ACK else None
    return Segment(src, dst, ev.seq, end_seq, flags, ack, payload)


@dataclass(frozen=True, slots=True)
class PacketKey:
    """Links one segment across layers and skb clones.

    __tcp_transmit_skb sees the queued skb, the IP layer and below its fast
    clone: addresses differ, the segment does not. Pure ACKs repeat the same
    seq, so the ack number is part of the key.
    """

    netns: int
    src: Endpoint
    dst: Endpoint
    seq: int
    payload: int
    flags: int  # masked with KEY_FLAGS_MASK
    ack: int | None


# ---------------------------------------------------------------------------
# Result types


@dataclass(eq=False, kw_only=True)
class TEvent:
    """An event placed in the timeline."""

    index: int  # position in time order (Timeline.events), node id in Timeline.graph
    ev: Event
    offset_ns: int  # from the start of the trace
    layer: Layer | None
    direction: Direction | None
    context: str  # context_label(ev)
    flow: int | None = None  # Flow.number
    side: Role | None = None
    endpoint: Endpoint | None = None  # side_endpoint(ev), or inherited from the step
    segment: Segment | None = None
    step: int = -1  # Step.id
    handoff: bool = False  # ran in another execution context than the previous event of its step
    pair: int | None = None  # index of the matching entry (for a return) or return (for an entry)

    @property
    def probe(self) -> str:
        return self.ev.probe

    @property
    def is_return(self) -> bool:
        return self.ev.kind is Kind.RETURN


class StepKind(StrEnum):
    MESSAGE = "message"
    PACKET = "packet"
    LONE = "event"


@dataclass(eq=False, kw_only=True)
class Step:
    id: int
    flow: int | None = None
    side: Role | None = None  # message: its side; packet: the sender; lone: the event's
    events: list[TEvent] = field(default_factory=list)

    kind = StepKind.LONE

    @property
    def start_ns(self) -> int:
        return self.events[0].ev.ts_ns

    @property
    def end_ns(self) -> int:
        return self.events[-1].ev.ts_ns

    @property
    def title(self) -> str:
        te = self.events[0]
        return f"{te.probe} ({te.ev.kind})"


@dataclass(eq=False, kw_only=True)
class Message(Step):
    """A send or recv syscall and what ran inside it in the same thread."""

    kind = StepKind.MESSAGE
    op: str  # "send" | "recv"
    syscall: str
    requested: int | None = None  # entry length (bytes asked to send / buffer size)
    nbytes: int | None = None  # syscall return value; None when no return was seen
    complete: bool = False  # entry and return both seen
    packets: list[int] = field(default_factory=list)  # Packet ids with events inside
    data_from: list[int] = field(default_factory=list)  # recv: Packet ids carrying the bytes read

    @property
    def title(self) -> str:
        who = f"{self.side} " if self.side else ""
        if self.nbytes is not None and self.nbytes >= 0:
            what = f"{self.op} {self.nbytes} B"
        elif self.nbytes is not None:
            what = f"{self.op} failed ({self.nbytes})"
        else:
            what = f"{self.op} (no return seen)"
        extra = []
        if self.requested is not None:
            extra.append(f"{'asked' if self.op == 'send' else 'buffer'} {self.requested}")
        if not self.complete and self.nbytes is not None:
            extra.append("entry not seen")
        tail = f" ({', '.join(extra)})" if extra else ""
        return f"{who}{what} via {self.syscall}{tail}"


@dataclass(eq=False, kw_only=True)
class Packet(Step):
    """One TCP segment from the sender's TCP down and up the receiver's stack."""

    kind = StepKind.PACKET
    key: PacketKey
    segment: Segment
    sender: Role | None = None
    receiver: Role | None = None
    again: bool = False  # same key already sent: retransmission (or duplicate ACK)
    message: int | None = None  # Message id whose syscall sent it, if any
    read_by: list[int] = field(default_factory=list)  # Message ids that copied its bytes

    @property
    def label(self) -> str:
        return self.segment.label

    @property
    def direction(self) -> str:
        if self.sender is None or self.receiver is None:
            return f"{self.segment.src} -> {self.segment.dst}"
        return f"{self.sender} -> {self.receiver}"

    @property
    def tx_events(self) -> list[TEvent]:
        return [te for te in self.events if te.endpoint == self.segment.src]

    @property
    def rx_events(self) -> list[TEvent]:
        return [te for te in self.events if te.endpoint == self.segment.dst]

    @property
    def title(self) -> str:
        title = f"{self.label} {self.direction}"
        if self.again:
            pure = self.segment.payload == 0 and not self.segment.flags & (TCP_SYN | TCP_FIN)
            title += " (duplicate ACK)" if pure else " (retransmission)"
        return title


@dataclass(eq=False, kw_only=True)
class Lone(Step):
    kind = StepKind.LONE


@dataclass(frozen=True, slots=True)
class LostGap:
    """Events the kernel dropped, noticed at ts_ns (they were lost before it)."""

    ts_ns: int
    offset_ns: int
    count: int
    probe: str | None
    cpu: int | None

    @property
    def text(self) -> str:
        what = f"from {self.probe}" if self.probe else "(probe unknown)"
        cpu = f" on cpu {self.cpu}" if self.cpu is not None else ""
        return f"lost {self.count} event{'s' if self.count != 1 else ''} {what}{cpu}"


@dataclass(eq=False, kw_only=True)
class Flow:
    number: int  # 1-based, in order of first event
    key: FlowKey
    client: Endpoint
    server: Endpoint
    roles_from: RolesFrom
    isn: dict[Endpoint, int] = field(default_factory=dict)  # base of relative seq numbers
    isn_from_syn: dict[Endpoint, bool] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    gaps: list[LostGap] = field(default_factory=list)  # losses noticed during the flow

    @property
    def netns(self) -> int:
        return self.key.netns

    @property
    def title(self) -> str:
        return f"{self.client} (client) <-> {self.server} (server)"

    def role_of(self, ep: Endpoint | None) -> Role | None:
        if ep == self.client:
            return Role.CLIENT
        if ep == self.server:
            return Role.SERVER
        return None

    def endpoint_of(self, role: Role) -> Endpoint:
        return self.client if role is Role.CLIENT else self.server

    def rel(self, sender: Endpoint, value: int) -> int:
        """A sequence number of `sender`'s byte stream, relative to its base."""
        base = self.isn.get(sender)
        return value if base is None else (value - base) % SEQ_MOD

    @property
    def events(self) -> list[TEvent]:
        return sorted((te for st in self.steps for te in st.events), key=lambda te: te.index)

    @property
    def start_ns(self) -> int:
        return min(st.start_ns for st in self.steps)

    @property
    def end_ns(self) -> int:
        return max(st.end_ns for st in self.steps)


@dataclass(eq=False, kw_only=True)
class ThreadGroup:
    """Events that could not be tied to a flow, for one thread."""

    tid: int
    tgid: int
    comm: str
    steps: list[Step] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.comm}[{self.tid}] (tgid {self.tgid})"


@dataclass(eq=False, kw_only=True)
class Timeline:
    trace: Trace
    start_ns: int  # ts of the first record (event or loss)
    events: list[TEvent]  # all, in time order
    steps: list[Step]  # all, by id (ids in order of each step's first event)
    flows: list[Flow]
    unattributed: list[ThreadGroup]
    gaps: list[LostGap]
    graph: Any  # networkx.DiGraph: nodes TEvent.index, edges "thread", "packet", "call"

    @property
    def duration_ns(self) -> int:
        if self.trace.trailer is not None and self.trace.trailer.duration_ns:
            return self.trace.trailer.duration_ns
        stamps = [te.ev.ts_ns for te in self.events] + [g.ts_ns for g in self.gaps]
        return max(stamps) - self.start_ns if stamps else 0

    def flow(self, number: int) -> Flow:
        """Flow by its 1-based number; KeyError if there is no such flow."""
        if 1 <= number <= len(self.flows):
            return self.flows[number - 1]
        raise KeyError(number)

    def step_of(self, te: TEvent) -> Step:
        return self.steps[te.step]


# ---------------------------------------------------------------------------
# Building


def build_timeline(trace: Trace) -> Timeline:
    """Rebuild flows, messages and packets from a trace (pure function)."""
    order = sorted(range(len(trace.events)), key=lambda i: (trace.events[i].ts_ns, i))
    raw = [trace.events[i] for i in order]
    stamps = [ev.ts_ns for ev in raw] + [rec.ts_ns for rec in trace.lost]
    start = min(stamps) if stamps else 0

    keys, sk_sides = _flow_keys(raw)
    tevents = [
        TEvent(
            index=i,
            ev=ev,
            offset_ns=ev.ts_ns - start,
            layer=layer_of(ev),
            direction=BY_NAME[ev.probe].direction if ev.probe in BY_NAME else None,
            context=context_label(ev),
            endpoint=side_endpoint(ev) or sk_sides[i],
            segment=segment_of(ev),
        )
        for i, ev in enumerate(raw)
    ]
    flows = _make_flows(tevents, keys)
    by_key = {fl.key: fl for fl in flows}
    for te, key in zip(tevents, keys, strict=True):
        if key is not None:
            fl = by_key[key]
            te.flow = fl.number
            te.side = fl.role_of(te.endpoint)
    _pair_returns(tevents)
    steps = _make_steps(tevents, keys, flows)
    for st in steps:
        _inherit_from_step(st, flows)
        _mark_handoffs(st)
    _link_reads(steps, flows)
    unattributed = _group(steps, flows)
    gaps = [
        LostGap(ts_ns=rec.ts_ns, offset_ns=rec.ts_ns - start, count=rec.count,
                probe=rec.probe, cpu=rec.cpu)
        for rec in sorted(trace.lost, key=lambda r: r.ts_ns)
    ]
    stamps_sorted = [te.ev.ts_ns for te in tevents]
    for fl in flows:
        # A loss is noticed after it happened: a flow owns the gaps noticed
        # from its first event up to the next event of the trace after its last.
        after = bisect.bisect_right(stamps_sorted, fl.end_ns)
        until = stamps_sorted[after] if after < len(stamps_sorted) else None
        fl.gaps = [g for g in gaps
                   if fl.start_ns <= g.ts_ns and (until is None or g.ts_ns <= until)]
    return Timeline(
        trace=trace,
        start_ns=start,
        events=tevents,
        steps=steps,
        flows=flows,
        unattributed=unattributed,
        gaps=gaps,
        graph=build_graph(tevents, steps),
    )


def _flow_keys(events: list[Event]) -> tuple[list[FlowKey | None], list[Endpoint | None]]:
    """Each event's flow key: its own 4-tuple, else its socket's (sk map);
    and, for events resolved through the sk map, the socket's local endpoint
    (their side).

    Packet captures may not know the netns (0) or know it from another
    source than the socket: a tuple seen in exactly one nonzero netns is
    taken to be in that netns.
    """
    tuples = [_tuple_of(ev) for ev in events]
    netns_of: dict[tuple[Endpoint, Endpoint], set[int]] = {}
    for ev, tup in zip(events, tuples, strict=True):
        if tup is not None and ev.netns:
            netns_of.setdefault(tup, set()).add(ev.netns)

    def key(ev: Event, tup: tuple[Endpoint, Endpoint]) -> FlowKey:
        netns = ev.netns
        known = netns_of.get(tup, set())
        if not netns and len(known) == 1:
            netns = next(iter(known))
        return FlowKey(netns, tup[0], tup[1])

    keys: list[FlowKey | None] = [
        key(ev, tup) if tup is not None else None
        for ev, tup in zip(events, tuples, strict=True)
    ]
    sides: list[Endpoint | None] = [None] * len(events)
    # sk -> (flow, local end) over time; sockets are recycled: take the latest
    # mapping before the event, else the first one after it.
    sk_map: dict[int, list[tuple[int, FlowKey, Endpoint]]] = {}
    for ev, k in zip(events, keys, strict=True):
        if k is not None and ev.sk and ev.src is not None and \
                capture_of(ev) in SOCKET_CAPTURES:
            seen = sk_map.setdefault(ev.sk, [])
            if not seen or seen[-1][1] != k:
                seen.append((ev.ts_ns, k, ev.src))
    for i, ev in enumerate(events):
        if keys[i] is None and ev.sk and ev.sk in sk_map:
            before = [m for m in sk_map[ev.sk] if m[0] <= ev.ts_ns]
            _, keys[i], local = before[-1] if before else sk_map[ev.sk][0]
            if capture_of(ev) in SOCKET_CAPTURES:
                sides[i] = local
    return keys, sides


def _make_flows(tevents: list[TEvent], keys: list[FlowKey | None]) -> list[Flow]:
    first: dict[FlowKey, list[TEvent]] = {}
    for te, k in zip(tevents, keys, strict=True):
        if k is not None:
            first.setdefault(k, []).append(te)
    flows = []
    for number, (k, evs) in enumerate(first.items(), start=1):
        client, server, how = _assign_roles(k, evs)
        fl = Flow(number=number, key=k, client=client, server=server, roles_from=how)
        for te in evs:
            seg = te.segment
            if seg is None:
                continue
            if seg.flags & TCP_SYN and not fl.isn_from_syn.get(seg.src):
                fl.isn[seg.src] = seg.seq
                fl.isn_from_syn[seg.src] = True
            else:
                fl.isn.setdefault(seg.src, seg.seq)
                fl.isn_from_syn.setdefault(seg.src, False)
        flows.append(fl)
    return flows


def _assign_roles(k: FlowKey, evs: list[TEvent]) -> tuple[Endpoint, Endpoint, RolesFrom]:
    """(client, server, how).

    Client = sender of a SYN without ACK, or receiver of a SYN-ACK (measured
    handshake wins). Without a handshake the endpoint with the lower port is
    the server: listeners sit on well-known or configured ports, connectors
    on ephemeral ones (32768-60999 on Linux); a tie goes to the lower address.
    """
    for te in evs:
        seg = te.segment
        if seg is None or not seg.flags & TCP_SYN:
            continue
        if seg.flags & TCP_ACK:
            return seg.dst, seg.src, RolesFrom.HANDSHAKE
        return seg.src, seg.dst, RolesFrom.HANDSHAKE
    server, client = sorted((k.lo, k.hi), key=lambda ep: (ep.port, _ep_order(ep)))
    return client, server, RolesFrom.PORT


def _pair_returns(tevents: list[TEvent]) -> None:
    """Pair each return with the latest unmatched entry of the same probe in
    the same execution context (entries nest like calls)."""
    open_: dict[tuple[tuple[int, str, str | None], str], list[TEvent]] = {}
    for te in tevents:
        slot = (context_key(te.ev), te.probe)
        if te.ev.kind is Kind.ENTRY:
            open_.setdefault(slot, []).append(te)
        elif open_.get(slot):
            entry = open_[slot].pop()
            entry.pair, te.pair = te.index, entry.index


class _Builder:
    def __init__(self) -> None:
        self.steps: list[Step] = []

    def add(self, step: Step, te: TEvent) -> Step:
        self.steps.append(step)
        self.put(step, te)
        return step

    def put(self, step: Step, te: TEvent) -> None:
        step.events.append(te)
        te.step = step.id

    @property
    def next_id(self) -> int:
        return len(self.steps)


_Ctx = tuple[int, str, str | None]


def _make_steps(
    tevents: list[TEvent], keys: list[FlowKey | None], flows: list[Flow]
) -> list[Step]:
    """Assign every event to one step.

    Besides messages (syscall nesting) and packets (segment key), events that
    carry no segment are attached where they explain something:
    - lead-ins wait for the next event of their execution context and join
      its packet: the NET_RX softirq run (net_rx_action) joins the packet it
      processes, a transmit-side socket call outside a syscall (tcp_send_ack,
      tcp_write_xmit from softirq, tcp_close) the packet it sends, and
      tcp_retransmit_skb (which cannot see the ack) the segment sent again;
    - trailers (receive-side socket calls outside a syscall, such as
      sock_def_readable) join the packet just processed in their context;
    - a return outside a syscall joins its entry's step.
    Anything else is a step of its own (Lone).
    """
    b = _Builder()
    by_key = {fl.key: fl for fl in flows}
    key_of = {te.index: k for te, k in zip(tevents, keys, strict=True)}
    open_msg: dict[int, Message] = {}  # tid -> syscall in progress
    latest: dict[PacketKey, Packet] = {}
    waiting: dict[_Ctx, list[TEvent]] = {}  # lead-ins per context
    last_step: dict[_Ctx, Step] = {}  # step of the previous event per context
    by_index = {te.index: te for te in tevents}

    def in_message(te: TEvent) -> Message | None:
        return open_msg.get(te.ev.tid) if te.ev.ctx is Context.TASK else None

    def own_step(te: TEvent) -> Step:
        fkey = key_of[te.index]
        if te.segment is not None and fkey is not None:
            pkt = _packet_for(b, te, fkey, latest, by_key[fkey])
            msg = in_message(te)
            if msg is not None:
                if pkt.id not in msg.packets:
                    msg.packets.append(pkt.id)
                if pkt.message is None:
                    pkt.message = msg.id
            return pkt
        return b.add(Lone(id=b.next_id, flow=te.flow, side=te.side), te)

    def place(te: TEvent) -> Step:
        ck = context_key(te.ev)
        if te.layer is Layer.SYSCALL and te.ev.ctx is Context.TASK:
            return _syscall_event(b, te, open_msg)
        if te.segment is not None and key_of[te.index] is not None:
            return own_step(te)
        msg = in_message(te)
        if msg is not None:
            b.put(msg, te)
            return msg
        if te.is_return and te.pair is not None:
            entry_step = b.steps[by_index[te.pair].step]
            if isinstance(entry_step, Lone):
                b.put(entry_step, te)
                return entry_step
        prev = last_step.get(ck)
        if _is_trailer(te) and isinstance(prev, Packet) and _same_flow(te, prev) and \
                te.endpoint in (None, prev.segment.dst):
            b.put(prev, te)
            return prev
        return own_step(te)

    for te in tevents:
        ck = context_key(te.ev)
        if in_message(te) is None and _is_lead_in(te):
            waiting.setdefault(ck, []).append(te)
            continue
        st = place(te)
        for w in waiting.pop(ck, []):
            if _leads_into(w, st):
                st.events.insert(st.events.index(te), w)
                w.step = st.id
                if w.flow is None:
                    w.flow, w.side, w.endpoint = te.flow, te.side, te.endpoint
            else:
                own_step(w)
        last_step[ck] = st
    for w in sorted((w for ws in waiting.values() for w in ws), key=lambda t: t.index):
        own_step(w)
    return _renumber(b.steps)


def _is_lead_in(te: TEvent) -> bool:
    if te.is_return or te.pair is not None:
        return False
    cap = capture_of(te.ev)
    if cap in (Capture.SOFTIRQ, Capture.SOCK_SKB_CB_NOACK):
        return True
    return (te.direction is Direction.TX and te.segment is None
            and cap in (Capture.SOCK, Capture.SOCKET))


def _is_trailer(te: TEvent) -> bool:
    return (not te.is_return and te.pair is None and te.direction is Direction.RX
            and te.segment is None and capture_of(te.ev) in (Capture.SOCK, Capture.SOCKET))


def _same_flow(te: TEvent, st: Step) -> bool:
    return te.flow is None or te.flow == st.flow


def _leads_into(w: TEvent, st: Step) -> bool:
    if capture_of(w.ev) is Capture.SOFTIRQ:
        return st.flow is not None
    if not isinstance(st, Packet) or not _same_flow(w, st):
        return False
    if w.endpoint is not None and w.endpoint != st.segment.src:
        return False
    seg = w.segment
    return seg is None or (seg.seq, seg.payload) == (st.segment.seq, st.segment.payload)


def _renumber(steps: list[Step]) -> list[Step]:
    """Ids in order of each step's first event (lead-ins and late steps
    were created out of order)."""
    ordered = sorted(steps, key=lambda st: st.events[0].index)
    new_id = {st.id: i for i, st in enumerate(ordered)}
    for st in ordered:
        st.id = new_id[st.id]
        for te in st.events:
            te.step = st.id
        if isinstance(st, Message):
            st.packets = [new_id[p] for p in st.packets]
        elif isinstance(st, Packet) and st.message is not None:
            st.message = new_id[st.message]
    return ordered


def _syscall_event(b: _Builder, te: TEvent, open_msg: dict[int, Message]) -> Message:
    spec = BY_NAME.get(te.probe)
    op = "send" if spec is None or spec.direction is Direction.TX else "recv"
    tid = te.ev.tid
    cur = open_msg.get(tid)
    if te.ev.kind is Kind.ENTRY:
        # Syscalls do not nest in a thread: an open one lost its return.
        open_msg.pop(tid, None)
        msg = Message(id=b.next_id, op=op, syscall=te.probe, requested=te.ev.length)
        b.add(msg, te)
        open_msg[tid] = msg
        return msg
    if cur is not None and cur.syscall == te.probe:
        b.put(cur, te)
        cur.nbytes = te.ev.ret
        cur.complete = True
        del open_msg[tid]
        return cur
    # A return whose entry was lost or ran before tracing started.
    open_msg.pop(tid, None)
    msg = Message(id=b.next_id, op=op, syscall=te.probe, nbytes=te.ev.ret)
    b.add(msg, te)
    return msg


def _packet_for(
    b: _Builder, te: TEvent, fkey: FlowKey, latest: dict[PacketKey, Packet], flow: Flow
) -> Packet:
    seg = te.segment
    assert seg is not None
    pkey = PacketKey(fkey.netns, seg.src, seg.dst, seg.seq, seg.payload,
                     seg.flags & KEY_FLAGS_MASK, seg.ack)
    pkt = latest.get(pkey)
    origin = capture_of(te.ev) in ORIGIN_CAPTURES
    seen_here = pkt is not None and any(
        o.probe == te.probe and o.ev.kind == te.ev.kind for o in pkt.events
    )
    if pkt is None or origin or seen_here:
        # A new birth of the same key, or the same hop twice: a new segment
        # on the wire (retransmission, duplicate ACK, or its origin unseen).
        again = pkt is not None
        pkt = Packet(id=b.next_id, flow=flow.number, key=pkey, segment=seg,
                     sender=flow.role_of(seg.src), receiver=flow.role_of(seg.dst), again=again)
        pkt.side = pkt.sender
        latest[pkey] = pkt
        b.add(pkt, te)
    else:
        b.put(pkt, te)
    return pkt


def _inherit_from_step(st: Step, flows: list[Flow]) -> None:
    """Events without their own flow take their message's flow and side."""
    if st.flow is None:
        st.flow = next((te.flow for te in st.events if te.flow is not None), None)
    if st.side is None:
        st.side = next((te.side for te in st.events if te.side is not None), None)
    if st.flow is None:
        return
    fl = flows[st.flow - 1]
    for te in st.events:
        if te.flow is None:
            te.flow = st.flow
        if te.side is None and te.flow == st.flow and st.side is not None:
            te.side = st.side
            te.endpoint = fl.endpoint_of(st.side)


def _mark_handoffs(st: Step) -> None:
    prev: TEvent | None = None
    for te in st.events:
        te.handoff = prev is not None and context_key(prev.ev) != context_key(te.ev)
        prev = te


def _link_reads(steps: list[Step], flows: list[Flow]) -> None:
    """Follow bytes to their read: a copy to user (__skb_datagram_iter)
    names the sender's byte range; the data packets overlapping it carried
    those bytes. Ranges are compared as offsets from the sender's base
    sequence number (no wrap-around within 4 GiB of a flow)."""
    data: dict[tuple[int, Endpoint], list[tuple[int, int, Packet]]] = {}
    for st in steps:
        if isinstance(st, Packet) and st.flow is not None and st.segment.payload:
            seg = st.segment
            lo = flows[st.flow - 1].rel(seg.src, seg.seq)
            data.setdefault((st.flow, seg.src), []).append((lo, lo + seg.payload, st))
    index: dict[tuple[int, Endpoint], tuple[list[int], int]] = {}
    for key, spans in data.items():
        spans.sort(key=lambda sp: (sp[0], sp[2].id))
        index[key] = ([sp[0] for sp in spans], max(sp[1] - sp[0] for sp in spans))
    for st in steps:
        if not isinstance(st, Message) or st.op != "recv" or st.flow is None:
            continue
        fl = flows[st.flow - 1]
        for te in st.events:
            ev = te.ev
            if capture_of(ev) is not Capture.DATAGRAM_ITER or ev.seq is None or ev.dst is None:
                continue
            key = (st.flow, ev.dst)
            if key not in index:
                continue
            starts, longest = index[key]
            lo = fl.rel(ev.dst, ev.seq)
            hi = lo + (ev.length if ev.length is not None else
                       ((ev.end_seq or ev.seq) - ev.seq) % SEQ_MOD)
            j = bisect.bisect_left(starts, hi) - 1  # last packet starting before hi
            while j >= 0 and starts[j] + longest > lo:
                p_lo, p_hi, pkt = data[key][j]
                if p_hi > lo and p_lo < hi:
                    if pkt.id not in st.data_from:
                        st.data_from.append(pkt.id)
                    if st.id not in pkt.read_by:
                        pkt.read_by.append(st.id)
                j -= 1
        st.data_from.sort()
    for st in steps:
        if isinstance(st, Packet):
            st.read_by.sort()


def _group(steps: list[Step], flows: list[Flow]) -> list[ThreadGroup]:
    groups: dict[int, ThreadGroup] = {}
    for st in steps:
        if st.flow is not None:
            flows[st.flow - 1].steps.append(st)
            continue
        ev = st.events[0].ev
        grp = groups.get(ev.tid)
        if grp is None:
            grp = groups[ev.tid] = ThreadGroup(tid=ev.tid, tgid=ev.tgid, comm=ev.comm)
        grp.steps.append(st)
    return sorted(groups.values(), key=lambda g: g.steps[0].start_ns)


def build_graph(tevents: Iterable[TEvent], steps: list[Step]) -> Any:
    """Causal graph: nodes are events (TEvent.index, with attributes); edges
    link the next event in the same execution context ("thread"), the next
    hop of a packet ("packet"), and an entry to its return ("call")."""
    g = nx.DiGraph()
    last_in_ctx: dict[tuple[int, str, str | None], int] = {}

    def link(a: int, b: int, kind: str) -> None:
        if g.has_edge(a, b):
            g.edges[a, b]["kinds"].append(kind)
        else:
            g.add_edge(a, b, kinds=[kind])

    for te in tevents:
        g.add_node(
            te.index, probe=te.probe, kind=str(te.ev.kind), ts_ns=te.ev.ts_ns,
            offset_ns=te.offset_ns, layer=str(te.layer) if te.layer else None,
            side=str(te.side) if te.side else None, flow=te.flow, step=te.step,
            context=te.context, handoff=te.handoff,
        )
        ck = context_key(te.ev)
        if ck in last_in_ctx:
            link(last_in_ctx[ck], te.index, "thread")
        last_in_ctx[ck] = te.index
        if te.is_return and te.pair is not None:
            link(te.pair, te.index, "call")
    for st in steps:
        if isinstance(st, Packet):
            for a, b in zip(st.events, st.events[1:], strict=False):
                link(a.index, b.index, "packet")
    return g
