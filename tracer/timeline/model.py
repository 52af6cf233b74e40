"""What the reconstruction produces: events placed in steps (messages,
packets, lone events), flows, byte ranges, and the Timeline holding them.

Built by tracer/timeline/__init__.py (build_timeline); the rules that fill these
types are in docs/correlation.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, TypeVar

from probes.catalog import Direction, Layer
from tracer.events import TCP_FIN, TCP_SYN, Endpoint, Event, Kind
from tracer.timeline.segments import SEQ_MOD, PacketKey, Segment, SegmentType
from tracer.tracefile import Trace


class Role(StrEnum):
    CLIENT = "client"
    SERVER = "server"

    @property
    def peer(self) -> Role:
        return Role.SERVER if self is Role.CLIENT else Role.CLIENT


class RolesFrom(StrEnum):
    HANDSHAKE = "handshake"  # SYN (client -> server) or SYN-ACK seen
    PORT = "port"  # no handshake in the trace: the lower port is the server


class RangeSource(StrEnum):
    """How a message's byte range was found."""

    COPY = "copy"  # recv: its __skb_datagram_iter copies (exact)
    KERNEL = "kernel"  # the kernel's stream position: tp->write_seq / tp->copied_seq (exact)
    ISN = "isn"  # stream order from ISN+1: the sender's SYN is in the trace
    SEGMENT = "segment"  # stream order anchored on a data segment a send transmitted
    NEIGHBOUR = "neighbour"  # stream order from a recv whose copies are known

    @property
    def text(self) -> str:
        return _RANGE_TEXT[self]


_RANGE_TEXT = {
    RangeSource.COPY: "exact, from the copies to user",
    RangeSource.KERNEL: "exact, where the kernel put them (tp->write_seq, tp->copied_seq)",
    RangeSource.ISN: "stream order from ISN+1 (SYN traced)",
    RangeSource.SEGMENT: "stream order anchored on the first data segment a send "
                         "transmitted (handshake not traced)",
    RangeSource.NEIGHBOUR: "stream order from a neighbouring recv's copies",
}


@dataclass(frozen=True, slots=True, order=True)
class ByteRange:
    """Bytes [lo, hi) of one direction's stream, as sequence numbers relative
    to the sender's base (Flow.rel): with the SYN traced, the first data
    byte is 1, as in Wireshark."""

    lo: int
    hi: int

    @property
    def size(self) -> int:
        return self.hi - self.lo

    def overlaps(self, other: ByteRange) -> bool:
        return self.lo < other.hi and other.lo < self.hi

    def contains(self, other: ByteRange) -> bool:
        return self.lo <= other.lo and other.hi <= self.hi

    def shared(self, other: ByteRange) -> ByteRange | None:
        """The bytes both hold (None: none)."""
        lo, hi = max(self.lo, other.lo), min(self.hi, other.hi)
        return ByteRange(lo, hi) if lo < hi else None

    def __str__(self) -> str:
        return f"{self.lo}:{self.hi}"


@dataclass(frozen=True, slots=True)
class FlowKey:
    """A connection: its normalized 4-tuple. No netns: a connection between
    two namespaces (veth) has one 4-tuple but two netns. `scope` is 0 unless
    the same 4-tuple is in use in several namespaces at once (containers each
    with their own loopback): then it is the netns telling them apart."""

    lo: Endpoint
    hi: Endpoint
    scope: int = 0


@dataclass(eq=False, kw_only=True, slots=True)
class TEvent:
    """An event placed in the timeline."""

    index: int  # position in time order (Timeline.events), node id in the causal graph
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
    packets: list[int] = field(default_factory=list)  # own Packet ids sent during the call
    handled: list[int] = field(default_factory=list)  # the peer's Packet ids processed in it
    data_from: list[int] = field(default_factory=list)  # recv: Packet ids carrying the bytes read
    # send: the stream bytes it wrote; recv: the bytes it returned (None when
    # unknown, failed, or zero bytes). See docs/correlation.md.
    byte_range: ByteRange | None = None
    range_from: RangeSource | None = None
    carried_by: list[int] = field(default_factory=list)  # send: Packet ids carrying its bytes

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
    """One TCP segment from the sender's TCP down and up the receiver's stack
    (with its pieces, when split below TCP by GSO/TSO)."""

    kind = StepKind.PACKET
    key: PacketKey
    segment: Segment
    sender: Role | None = None
    receiver: Role | None = None
    again: bool = False  # same key already sent: retransmission (or duplicate ACK)
    retransmission: bool = False  # data, SYN or FIN sent again (see docs/correlation.md)
    dup_ack: bool = False  # pure ACK repeating the sender's previous pure ACK's ack number
    split: bool = False  # seen in smaller pieces below TCP (GSO/TSO)
    message: int | None = None  # Message id whose syscall sent it, if any
    read_by: list[int] = field(default_factory=list)  # Message ids that copied its bytes
    written_by: list[int] = field(default_factory=list)  # send Message ids whose bytes it carries
    byte_range: ByteRange | None = None  # data packets: its payload in the sender's stream

    @property
    def label(self) -> str:
        return self.segment.label

    @property
    def category(self) -> SegmentType:
        return self.segment.type

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
        if self.retransmission:
            title += " (retransmission)"
        elif self.dup_ack:
            title += " (duplicate ACK)"
        elif self.again:
            pure = self.segment.payload == 0 and not self.segment.flags & (TCP_SYN | TCP_FIN)
            title += " (duplicate ACK)" if pure else " (retransmission)"
        if self.split:
            title += " (split below TCP)"
        return title


@dataclass(eq=False, kw_only=True)
class Lone(Step):
    kind = StepKind.LONE


@dataclass(frozen=True, slots=True)
class LostGap:
    """Events the kernel dropped, noticed at ts_ns (they were lost before it);
    or a blind window (since_ns set: tracefile Lost) ending at ts_ns."""

    ts_ns: int
    offset_ns: int
    count: int
    probe: str | None
    cpu: int | None
    since_ns: int | None = None
    blind: str | None = None

    @property
    def text(self) -> str:
        cpu = f" on cpu {self.cpu}" if self.cpu is not None else ""
        if self.since_ns is not None:
            return (f"kprobes blind{cpu} for {(self.ts_ns - self.since_ns) / 1e3:.1f} us "
                    f"({self.blind or 'an interrupt'} inside a kprobe program or handler): "
                    "kprobe events there dropped uncounted")
        what = f"from {self.probe}" if self.probe else "(probe unknown)"
        return f"lost {self.count} event{'s' if self.count != 1 else ''} {what}{cpu}"

    @property
    def is_blind(self) -> bool:
        return self.since_ns is not None


class Gap(Protocol):
    """A loss record during a flow (tracefile Lost, timeline LostGap)."""

    @property
    def ts_ns(self) -> int: ...
    @property
    def count(self) -> int: ...
    @property
    def since_ns(self) -> int | None: ...


G = TypeVar("G", bound=Gap)


def blind_windows(gaps: Sequence[G]) -> list[G]:
    """The blind windows among `gaps` (a window has its start; a loss not)."""
    return [g for g in gaps if g.since_ns is not None]


def blind_ns(gaps: Sequence[Gap]) -> int:
    """How long the blind windows among `gaps` last, in all."""
    return sum(g.ts_ns - g.since_ns for g in gaps if g.since_ns is not None)


@dataclass(frozen=True, slots=True)
class LossSummary:
    """What the text says of a run of loss records (a trace's, a flow's):
    how many, the events they lost, and the blind windows among them (how
    many, how long in all). The columnar statistics count these on arrays
    (a trace may hold a million records)."""

    records: int = 0
    lost: int = 0
    blind: int = 0
    blind_ns: int = 0

    @classmethod
    def of(cls, gaps: Sequence[Gap]) -> LossSummary:
        blind = blind_windows(gaps)
        return cls(records=len(gaps), lost=sum(g.count for g in gaps), blind=len(blind),
                   blind_ns=blind_ns(blind))


def blind_summary(gaps: Sequence[LostGap]) -> str | None:
    """One line for the blind windows among `gaps` (drawn together: a
    traced transfer under TCG has one every few ms), None without any."""
    blind = blind_windows(gaps)
    if not blind:
        return None
    us = blind_ns(blind) / 1e3
    by: dict[str, int] = {}
    for g in blind:
        by[g.blind or "?"] = by.get(g.blind or "?", 0) + 1
    what = ", ".join(f"{name} {n}" for name, n in sorted(by.items(), key=lambda kv: -kv[1]))
    return (f"kprobes blind {len(blind)} time(s), {us:.1f} us in all ({what}): kprobe events "
            "hit while an interrupt or softirq ran inside a kprobe program or handler were "
            "skipped, uncounted")


@dataclass(eq=False, kw_only=True)
class StreamWays:
    """Bytes of one direction by the way they entered (sends) and left
    (recvs) the stream: traced calls by syscall ("send", "sendfile", ...),
    and the stretches no traced call wrote or read, between kernel-placed
    ranges ("untraced writer", a page-send path seen without its syscall,
    ...). Filled only when the trace has the kernel's stream positions."""

    written_by: dict[str, int] = field(default_factory=dict)
    read_by: dict[str, int] = field(default_factory=dict)
    written_other: list[tuple[ByteRange, str]] = field(default_factory=list)
    read_other: list[tuple[ByteRange, str]] = field(default_factory=list)


@dataclass(eq=False, kw_only=True)
class ByteStream:
    """One direction of a flow: how its message ranges were anchored and
    what the cross-checks found."""

    sender: Endpoint
    receiver: Endpoint
    anchor: RangeSource | None = None  # of the sends' ranges; None: not placed
    problems: list[str] = field(default_factory=list)
    ways: StreamWays = field(default_factory=StreamWays)


@dataclass(eq=False, kw_only=True)
class Flow:
    number: int  # 1-based, in order of first event
    key: FlowKey
    client: Endpoint
    server: Endpoint
    roles_from: RolesFrom
    isn: dict[Endpoint, int] = field(default_factory=dict)  # base of relative seq numbers
    isn_from_syn: dict[Endpoint, bool] = field(default_factory=dict)
    netns_of: dict[Endpoint, int] = field(default_factory=dict)  # each end's netns, when reported
    socks_of: dict[Endpoint, list[int]] = field(default_factory=dict)  # struct sock addresses
    # the kernel's own sockets that answered for an end (RST, TIME_WAIT ACK)
    reply_socks: list[int] = field(default_factory=list)
    streams: dict[Endpoint, ByteStream] = field(default_factory=dict)  # by sender
    steps: list[Step] = field(default_factory=list)
    gaps: list[LostGap] = field(default_factory=list)  # losses noticed during the flow
    # index of its first event of its own (its key's): what orders the
    # numbers, kept for a trace rebuilt in parts (tracer/timeline/groups.py)
    first: int = -1

    @property
    def netns(self) -> int:
        """The flow's netns when both ends agree (or only one is known), else
        0: a connection across namespaces has one per end (netns_of)."""
        known = {ns for ns in self.netns_of.values() if ns}
        return next(iter(known)) if len(known) == 1 else 0

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

    # A flow without steps (the timeline drops those) spans nothing: 0.
    @property
    def start_ns(self) -> int:
        return min((st.start_ns for st in self.steps), default=0)

    @property
    def end_ns(self) -> int:
        return max((st.end_ns for st in self.steps), default=0)


@dataclass(eq=False, kw_only=True)
class ThreadGroup:
    """Events that could not be tied to a flow, for one thread."""

    tid: int
    tgid: int
    comm: str
    steps: list[Step] = field(default_factory=list)
    source: int = 0  # the host (a merged trace): thread ids are per host

    @property
    def title(self) -> str:
        return f"{self.comm}[{self.tid}] (tgid {self.tgid})"


def recorded_duration(trace: Trace) -> int:
    """The trailer's duration, or 0 when it has none (nor a number: a
    crafted file may hold anything there)."""
    value = trace.trailer.duration_ns if trace.trailer is not None else 0
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(eq=False, kw_only=True)
class Timeline:
    trace: Trace
    start_ns: int  # ts of the first record (event or loss)
    events: list[TEvent]  # all, in time order
    steps: list[Step]  # all, by id (ids in order of each step's first event)
    flows: list[Flow]
    unattributed: list[ThreadGroup]
    gaps: list[LostGap]
    # Only some parts of a trace (viz/exportgroups.py): event index -> the
    # index of the next event of its context in the whole trace (viz/spans.py).
    context_next: Mapping[int, int] | None = None

    @property
    def duration_ns(self) -> int:
        recorded = recorded_duration(self.trace)
        if recorded:
            return recorded
        stamps = [te.ev.ts_ns for te in self.events] + [g.ts_ns for g in self.gaps]
        return max(stamps) - self.start_ns if stamps else 0

    def flow(self, number: int) -> Flow:
        """Flow by its 1-based number; KeyError if there is no such flow."""
        if 1 <= number <= len(self.flows):
            return self.flows[number - 1]
        raise KeyError(number)

    def step_of(self, te: TEvent) -> Step:
        return self.steps[te.step]

    def packets(self, flow: int | None = None) -> list[Packet]:
        steps = self.flow(flow).steps if flow is not None else self.steps
        return [st for st in steps if isinstance(st, Packet)]

    def messages(self, flow: int | None = None) -> list[Message]:
        steps = self.flow(flow).steps if flow is not None else self.steps
        return [st for st in steps if isinstance(st, Message)]
