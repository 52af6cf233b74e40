"""Steps: every event placed in exactly one message, packet or lone step.

- `Message`: a send or recv syscall with the socket-level events nested in
  the same thread (process context) between its entry and its return;
- `Packet`: one TCP segment, its events down the sender's stack and up the
  receiver's, linked by flow and sequence numbers (not skb address: the IP
  layer sees a fast clone), including the pieces GSO/TSO cut it into;
- `Lone`: an event that is neither and explains no packet.
Rules in docs/correlation.md ("Packets", "Messages").
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from probes.catalog import SOCK_ONLY_CAPTURES, Capture, Direction, Layer, Returns
from tracer.events import Context, Endpoint, Kind
from tracer.timeline.byte_ranges import inner_bytes
from tracer.timeline.event_rules import capture_of, context_key, probe_spec
from tracer.timeline.model import (
    ByteRange,
    Flow,
    FlowKey,
    Lone,
    Message,
    Packet,
    Step,
    TEvent,
    ThreadGroup,
)
from tracer.timeline.segments import (
    KEY_FLAGS_MASK,
    ORIGIN_CAPTURES,
    SPLIT_FLAGS_MASK,
    PacketKey,
    Segment,
)

_Ctx = tuple[int, int, str, str | None]
_Stream = tuple[int, bool]  # (flow number, sent by the client)
RETRANSMIT_PROBES = frozenset({"tcp_retransmit_skb"})


def pair_returns(tevents: Sequence[TEvent]) -> None:
    """Pair each return with the latest unmatched entry of the same probe in
    the same execution context (entries nest like calls)."""
    open_: dict[tuple[_Ctx, str], list[TEvent]] = {}
    for te in tevents:
        slot = (context_key(te.ev), te.probe)
        if te.ev.kind is Kind.ENTRY:
            open_.setdefault(slot, []).append(te)
        elif open_.get(slot):
            entry = open_[slot].pop()
            entry.pair, te.pair = te.index, entry.index


class _RangeIndex:
    """Data packets of one direction by relative start, to find the packet a
    smaller piece (GSO/TSO) belongs to without scanning them all."""

    def __init__(self) -> None:
        self.los: list[int] = []
        self.items: list[tuple[int, int, Packet]] = []
        self.longest = 0

    def add(self, lo: int, hi: int, pkt: Packet) -> None:
        at = bisect.bisect_right(self.los, lo)
        self.los.insert(at, lo)
        self.items.insert(at, (lo, hi, pkt))
        self.longest = max(self.longest, hi - lo)

    def newest_holding(self, lo: int, hi: int) -> Packet | None:
        """The newest packet whose range contains [lo, hi)."""
        best: Packet | None = None
        j = bisect.bisect_right(self.los, lo) - 1
        while j >= 0 and self.los[j] + self.longest >= hi:
            p_lo, p_hi, pkt = self.items[j]
            if p_lo <= lo and hi <= p_hi and (best is None or pkt.id > best.id):
                best = pkt
            j -= 1
        return best


class _Builder:
    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.latest: dict[tuple[object, ...], Packet] = {}  # exact segment key -> newest packet
        self.loose: dict[tuple[object, ...], Packet] = {}  # same without the payload
        self.ranges: dict[_Stream, _RangeIndex] = {}
        self.sent_hi: dict[_Stream, int] = {}  # highest stream byte carried so far
        # packet id -> hops seen (probe, kind, seq, payload) -> skb address there
        self.seen: dict[int, dict[tuple[str, Kind, int, int], int]] = {}
        # (exact segment key, host, skb) -> packet that last had an event there
        self.held: dict[tuple[object, ...], Packet] = {}
        # packet id -> (host, skb) of its last segment event (events[-1] may
        # be a lead-in or trailer put there later)
        self.tail: dict[int, tuple[int, int]] = {}

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

    def packet_for(self, te: TEvent, flow: Flow) -> Packet:
        """The packet a segment event belongs to, created when needed.

        1. same segment key (flow, seq, payload, flags, ack) as a packet in
           flight, unless this is a new birth (__tcp_transmit_skb,
           tcp_v4_send_synack) or the packet already passed this hop with
           this range in another skb: then it is a new packet on the wire
           (the same skb passing a hop again was requeued, e.g. by
           neighbour resolution: neigh_resolve_output runs twice). Among
           packets of one key, the one whose last event is this host's
           same skb, still short of this hop, comes first: a receiver
           still handling a duplicate ACK when the sender (another host,
           merged by time) already sent the next identical one;
        2. a data piece inside a packet's range (split below TCP), or, on
           receive, a piece starting inside one (merged by GRO);
        3. an event whose length is unknown joins the newest packet with the
           same seq, flags and ack.
        """
        seg = te.segment
        assert seg is not None
        # Within a flow the sender's role names the direction: cheaper to
        # hash than the endpoints, and this runs for most events.
        loose_key = (flow.number, seg.src == flow.client, seg.seq, seg.flags & KEY_FLAGS_MASK,
                     seg.ack)
        exact_key = (*loose_key, seg.payload)
        pkt = self._choose(te, seg, flow, loose_key, exact_key)
        if te.ev.skb and seg.length_known:
            self.held[(*exact_key, te.ev.source, te.ev.skb)] = pkt
        return pkt

    def _choose(self, te: TEvent, seg: Segment, flow: Flow,
                loose_key: tuple[object, ...], exact_key: tuple[object, ...]) -> Packet:
        origin = capture_of(te.ev) in ORIGIN_CAPTURES
        hop = (te.ev.probe, te.ev.kind, seg.seq, seg.payload)
        if not seg.length_known:
            pkt = self.loose.get(loose_key)
            if pkt is not None:
                self.join(pkt, te, hop)
                return pkt
        else:
            pkt = self.latest.get(exact_key)
            if not origin and te.ev.skb:
                going = self.held.get((*exact_key, te.ev.source, te.ev.skb))
                if going is not None and going is not pkt and hop not in self.seen[going.id] \
                        and self.tail[going.id] == (te.ev.source, te.ev.skb):
                    self.join(going, te, hop)
                    return going
            if pkt is not None and not origin and self._may_join(pkt, te, hop):
                self.join(pkt, te, hop)
                return pkt
            if pkt is None and not origin and seg.payload:
                piece_of = self._holding(te, seg, flow)
                if piece_of is not None and self._may_join(piece_of, te, hop):
                    self.join(piece_of, te, hop)
                    lo = flow.rel(seg.src, seg.seq)
                    whole = piece_of.byte_range
                    if whole is not None and (whole.lo, whole.hi) != (lo, lo + seg.payload) \
                            and whole.lo <= lo and lo + seg.payload <= whole.hi:
                        piece_of.split = True
                    return piece_of
            vague = self.loose.get(loose_key)
            if vague is not None and not origin and not vague.segment.length_known:
                # Created by an event whose length was unreadable: now known.
                vague.segment = seg
                vague.key = _packet_key(flow.key, seg)
                vague.retransmission |= self._register(vague, seg, flow, exact_key)
                self.join(vague, te, hop)
                return vague
        return self._new_packet(te, seg, flow, exact_key, loose_key, hop)

    def _holding(self, te: TEvent, seg: Segment, flow: Flow) -> Packet | None:
        index = self.ranges.get((flow.number, seg.src == flow.client))
        if index is None:
            return None
        lo = flow.rel(seg.src, seg.seq)
        pkt = index.newest_holding(lo, lo + seg.payload)
        if pkt is None and te.direction is Direction.RX:
            pkt = index.newest_holding(lo, lo + 1)  # GRO merged it with the next ones
        if pkt is None:
            return None
        same = (pkt.segment.flags & SPLIT_FLAGS_MASK) == (seg.flags & SPLIT_FLAGS_MASK) \
            and pkt.segment.ack == seg.ack
        return pkt if same else None

    def _new_packet(self, te: TEvent, seg: Segment, flow: Flow,
                    exact_key: tuple[object, ...], loose_key: tuple[object, ...],
                    hop: tuple[str, Kind, int, int]) -> Packet:
        again = exact_key in self.latest
        pkt = Packet(id=self.next_id, flow=flow.number, key=_packet_key(flow.key, seg), segment=seg,
                     sender=flow.role_of(seg.src), receiver=flow.role_of(seg.dst), again=again)
        pkt.side = pkt.sender
        overlap = self._register(pkt, seg, flow, exact_key)
        pkt.retransmission = overlap or (again and not seg.is_pure_ack)
        self.seen[pkt.id] = {}
        self.loose[loose_key] = pkt
        self.add(pkt, te)
        self.seen[pkt.id][hop] = te.ev.skb
        self.tail[pkt.id] = (te.ev.source, te.ev.skb)
        return pkt

    def _register(self, pkt: Packet, seg: Segment, flow: Flow,
                  exact_key: tuple[object, ...]) -> bool:
        """Index a packet by key and byte range; True when its bytes overlap
        bytes an earlier packet of the direction carried."""
        if not seg.length_known:
            return False
        self.latest[exact_key] = pkt
        if not seg.payload:
            return False
        stream = (flow.number, seg.src == flow.client)
        lo = flow.rel(seg.src, seg.seq)
        pkt.byte_range = ByteRange(lo, lo + seg.payload)
        high = self.sent_hi.get(stream)
        # Bytes below the high-water mark were carried before: a
        # retransmission, even when cut at other boundaries.
        self.sent_hi[stream] = max(high or 0, lo + seg.payload)
        self.ranges.setdefault(stream, _RangeIndex()).add(lo, lo + seg.payload, pkt)
        return high is not None and lo < high

    def _may_join(self, pkt: Packet, te: TEvent, hop: tuple[str, Kind, int, int]) -> bool:
        """Not seen at this hop yet, or requeued: the same skb re-entering the
        hop it last passed. (A retransmission passed further hops in between;
        skb addresses alone cannot tell: a fast clone reuses its slot.)"""
        skb = self.seen[pkt.id].get(hop)
        if skb is None:
            return True
        last = pkt.events[-1].ev
        return skb != 0 and skb == te.ev.skb and (last.probe, last.kind) == hop[:2]

    def join(self, pkt: Packet, te: TEvent, hop: tuple[str, Kind, int, int]) -> None:
        self.put(pkt, te)
        self.seen[pkt.id][hop] = te.ev.skb
        self.tail[pkt.id] = (te.ev.source, te.ev.skb)


def _packet_key(fkey: FlowKey, seg: Segment) -> PacketKey:
    return PacketKey(fkey.scope, seg.src, seg.dst, seg.seq, seg.payload,
                     seg.flags & KEY_FLAGS_MASK, seg.ack)


def make_steps(tevents: Sequence[TEvent], keys: Sequence[FlowKey | None],
               flows: Sequence[Flow]) -> list[Step]:
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
    open_msg: dict[tuple[int, int], Message] = {}  # (source, tid) -> syscall in progress
    waiting: dict[_Ctx, list[TEvent]] = {}  # lead-ins per context
    last_step: dict[_Ctx, Step] = {}  # step of the previous event per context

    def in_message(te: TEvent) -> Message | None:
        return open_msg.get((te.ev.source, te.ev.tid)) if te.ev.ctx is Context.TASK else None

    def own_step(te: TEvent) -> Step:
        if te.segment is not None and keys[te.index] is not None and te.flow is not None:
            pkt = b.packet_for(te, flows[te.flow - 1])
            msg = in_message(te)
            if msg is not None:
                # Receive-side events inside a call (the backlog in
                # release_sock, loopback's netif_rx) handle a packet; one
                # with an event of its sender's side was sent in the call.
                if te.endpoint != pkt.segment.dst:
                    if pkt.id not in msg.packets:
                        msg.packets.append(pkt.id)
                    if pkt.id in msg.handled:
                        msg.handled.remove(pkt.id)
                elif pkt.id not in msg.packets and pkt.id not in msg.handled:
                    msg.handled.append(pkt.id)
                # "Sent in" only for the sender's own transmit events: the
                # receive backlog may run inside the peer's syscall.
                if pkt.message is None and te.endpoint == pkt.segment.src \
                        and te.direction is Direction.TX:
                    pkt.message = msg.id
            return pkt
        return b.add(Lone(id=b.next_id, flow=te.flow, side=te.side), te)

    def place(te: TEvent) -> Step:
        ck = context_key(te.ev)
        if te.layer is Layer.SYSCALL and te.ev.ctx is Context.TASK:
            return _syscall_event(b, te, open_msg)
        if te.segment is not None and keys[te.index] is not None:
            return own_step(te)
        msg = in_message(te)
        if msg is not None:
            b.put(msg, te)
            return msg
        if te.is_return and te.pair is not None:
            entry_step = b.steps[tevents[te.pair].step]
            if isinstance(entry_step, Lone):
                b.put(entry_step, te)
                return entry_step
        prev = last_step.get(ck)
        if _is_trailer(te) and isinstance(prev, Packet) and _same_flow(te, prev) and \
                te.endpoint in (None, prev.segment.dst):
            # A receive-side call: the receiver's (a listener's wake-up
            # has no endpoint of its own)
            te.endpoint = prev.segment.dst
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
            and cap in SOCK_ONLY_CAPTURES)


def _is_trailer(te: TEvent) -> bool:
    return (not te.is_return and te.pair is None and te.direction is Direction.RX
            and te.segment is None and capture_of(te.ev) in SOCK_ONLY_CAPTURES)


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
            st.handled = [new_id[p] for p in st.handled]
        elif isinstance(st, Packet) and st.message is not None:
            st.message = new_id[st.message]
    return ordered


def _syscall_event(b: _Builder, te: TEvent, open_msg: dict[tuple[int, int], Message]
                   ) -> Message:
    spec = probe_spec(te.probe)
    op = "send" if spec is None or spec.direction is Direction.TX else "recv"
    tid = (te.ev.source, te.ev.tid)
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
        if spec is not None and spec.ret is Returns.COUNT:
            # Its return is no byte count: the bytes are what the calls
            # inside moved, even when it then failed (io_uring's send returns
            # -EAGAIN after a partial write, to be issued again).
            inner = inner_bytes(cur.events)
            if (te.ev.ret or 0) >= 0 or (inner or 0) > 0:
                cur.nbytes = inner
        cur.complete = True
        del open_msg[tid]
        return cur
    # A return whose entry was lost or ran before tracing started.
    open_msg.pop(tid, None)
    count = spec is not None and spec.ret is Returns.COUNT
    msg = Message(id=b.next_id, op=op, syscall=te.probe, nbytes=None if count else te.ev.ret)
    b.add(msg, te)
    return msg


def inherit_from_step(st: Step, flows: Sequence[Flow]) -> None:
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
        if te.side is None and te.flow == st.flow:
            side = fl.role_of(te.endpoint) if te.endpoint is not None else None
            if side is None:
                side = st.side
            if side is not None:
                te.side, te.endpoint = side, fl.endpoint_of(side)


def mark_handoffs(st: Step) -> None:
    prev: TEvent | None = None
    for te in st.events:
        te.handoff = prev is not None and context_key(prev.ev) != context_key(te.ev)
        prev = te


def label_packets(flows: Sequence[Flow]) -> None:
    """Retransmissions announced by tcp_retransmit_skb, and duplicate ACKs:
    a pure ACK whose ack number repeats the one of the sender's previous
    packet, itself a pure ACK (no data, SYN or FIN between them). The window
    is not captured, so a window update looks like a duplicate ACK."""
    for fl in flows:
        previous: dict[Endpoint, Packet] = {}
        for st in fl.steps:
            if not isinstance(st, Packet):
                continue
            if any(te.probe in RETRANSMIT_PROBES for te in st.events):
                st.retransmission = True
            seg = st.segment
            prev = previous.get(seg.src)
            st.dup_ack = (seg.is_pure_ack and prev is not None and prev.segment.is_pure_ack
                          and prev.segment.ack == seg.ack)
            previous[seg.src] = st


def drop_stepless_flows(flows: list[Flow], tevents: Sequence[TEvent]) -> list[Flow]:
    """The flows that kept a step, renumbered from 1. A flow's events may
    all end up in another flow's steps (an event inside a message whose
    4-tuple does not match the message's, as a corrupt file can have): such
    a flow has nothing to show, and its events take their step's flow."""
    if all(fl.steps for fl in flows):
        return flows
    kept = [fl for fl in flows if fl.steps]
    number = {fl.number: i for i, fl in enumerate(kept, start=1)}
    for te in tevents:
        if te.flow is not None:
            te.flow = number.get(te.flow)
    for fl in kept:
        fl.number = number[fl.number]
        for st in fl.steps:
            st.flow = fl.number
            for te in st.events:
                if te.flow is None:
                    te.flow = fl.number
    return kept


def group_steps(steps: Sequence[Step], flows: Sequence[Flow]) -> list[ThreadGroup]:
    groups: dict[tuple[int, int], ThreadGroup] = {}
    for st in steps:
        if st.flow is not None:
            flows[st.flow - 1].steps.append(st)
            continue
        ev = st.events[0].ev
        grp = groups.get((ev.source, ev.tid))
        if grp is None:
            grp = groups[(ev.source, ev.tid)] = ThreadGroup(tid=ev.tid, tgid=ev.tgid, comm=ev.comm,
                                                            source=ev.source)
        grp.steps.append(st)
    return sorted(groups.values(), key=lambda g: g.steps[0].start_ns)
