"""Reconstruction: from a Trace's flat event list to flows, messages, packets.

Pure functions of a `Trace`; nothing here prints or formats for a terminal.
`build_timeline` runs the stages, each in its own module:
- tracer/timeline/event_rules.py: per-event rules (layer, side, context, 4-tuple);
- tracer/timeline/segments.py: the segment an event sees, segment types;
- tracer/timeline/flows.py: flows, roles, netns and sockets per end, sequence bases;
- tracer/timeline/steps.py: events into messages, packets and lone steps;
- tracer/timeline/byte_ranges.py: byte ranges of messages and packets, follow_bytes;
- tracer/timeline/causal.py: the causal graph (build_graph, on demand: it costs as
  much as the rest of the reconstruction);
- tracer/timeline/latency.py, tracer/timeline/accounting.py: per-hop latency, byte accounting.
The types live in tracer/timeline/model.py; everything is re-exported here.

Vocabulary:
- flow: one TCP connection, keyed by its normalized 4-tuple, with its two
  endpoints labelled client and server;
- step: the unit a reader follows; every event belongs to exactly one step
  (`Message`, `Packet` or `Lone`);
- side: which end of the flow an event belongs to (`side_endpoint`);
- unattributed: events with no flow (no socket, no addresses, not inside a
  syscall of a flow), kept per thread in `Timeline.unattributed`.

Time offsets are relative to the first record of the trace (event or loss).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tracer.events import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, Endpoint
from tracer.timeline.byte_ranges import (
    ByteTrail,
    assign_byte_ranges,
    carriers,
    follow_bytes,
    message_bytes,
    writers,
)
from tracer.timeline.causal import build_graph
from tracer.timeline.event_rules import (
    SOCKET_CAPTURES,
    capture_of,
    context_key,
    context_label,
    dst_of,
    layer_of,
    normalized_tuple,
    probe_spec,
    recorded_probes,
    side_endpoint,
    src_of,
    use_recorded_probes,
)
from tracer.timeline.flows import flow_keys, make_flows
from tracer.timeline.model import (
    ByteRange,
    ByteStream,
    Flow,
    FlowKey,
    Lone,
    LostGap,
    Message,
    Packet,
    RangeSource,
    Role,
    RolesFrom,
    Step,
    StepKind,
    TEvent,
    ThreadGroup,
    Timeline,
    blind_summary,
)
from tracer.timeline.segments import (
    KEY_FLAGS_MASK,
    ORIGIN_CAPTURES,
    PACKET_CAPTURES,
    SEQ_MOD,
    PacketKey,
    Segment,
    SegmentType,
    segment_of,
)
from tracer.timeline.steps import (
    drop_stepless_flows,
    group_steps,
    inherit_from_step,
    label_packets,
    make_steps,
    mark_handoffs,
    pair_returns,
)
from tracer.tracefile import Lost, Trace, probe_specs

__all__ = [
    "KEY_FLAGS_MASK", "ORIGIN_CAPTURES", "PACKET_CAPTURES", "SEQ_MOD", "SOCKET_CAPTURES",
    "TCP_ACK", "TCP_FIN", "TCP_PSH", "TCP_RST", "TCP_SYN",
    "ByteRange", "ByteStream", "ByteTrail", "Flow", "FlowKey", "Lone", "LostGap", "Message",
    "Packet", "PacketKey", "RangeSource", "Role", "RolesFrom", "Segment", "SegmentType", "Step",
    "StepKind", "TEvent", "ThreadGroup", "Timeline",
    "TraceLosses", "blind_summary", "build_graph", "build_timeline", "build_window", "capture_of",
    "carriers",
    "context_key",
    "context_label",
    "follow_bytes", "layer_of", "lost_gaps", "message_bytes", "probe_spec", "recorded_probes",
    "segment_of", "side_endpoint", "use_recorded_probes", "writers",
]


def lost_gaps(lost: Sequence[Lost], start_ns: int) -> list[LostGap]:
    """A trace's loss records as gaps in time order, offsets from start_ns."""
    return [LostGap(ts_ns=rec.ts_ns, offset_ns=rec.ts_ns - start_ns, count=rec.count,
                    probe=rec.probe, cpu=rec.cpu, since_ns=rec.since_ns, blind=rec.blind)
            for rec in sorted(lost, key=lambda r: r.ts_ns)]


@dataclass(frozen=True, slots=True)
class TraceLosses:
    """A trace's loss records as gaps in time order (lost_gaps) and their
    times: made once for every window of the trace (a lossy trace holds a
    hundred thousand records; made per window, and filtered per flow by a
    scan, they cost minutes)."""

    gaps: list[LostGap]
    stamps: list[int]

    @classmethod
    def of(cls, lost: Sequence[Lost], start_ns: int) -> TraceLosses:
        gaps = lost_gaps(lost, start_ns)
        return cls(gaps, [g.ts_ns for g in gaps])

    def during(self, start_ns: int, until: int | None) -> list[LostGap]:
        """The gaps noticed from start_ns up to until (None: the end), in
        time order."""
        lo = bisect.bisect_left(self.stamps, start_ns)
        hi = len(self.stamps) if until is None else bisect.bisect_right(self.stamps, until)
        return self.gaps[lo:hi]


def build_timeline(trace: Trace) -> Timeline:
    """Rebuild flows, messages and packets from a trace (pure function),
    reading each probe as the trace's own dictionary describes it."""
    with recorded_probes(probe_specs(trace.header.probes)):
        return _build(trace)


def build_window(window: Trace, start_ns: int, losses: TraceLosses,
                 later_stamp: Callable[[int], int | None]) -> Timeline:
    """The timeline of a window of a bigger trace (tracer/timeline/windows.py):
    offsets from the whole trace's start, every loss of the whole trace
    (`losses`, made with start_ns), and each flow's gaps bounded by the
    whole trace's next event after the flow (later_stamp(ts): the first
    event stamp > ts, None after the last). Its numbers (indices, steps,
    flows) count from 0 / 1 within the window."""
    with recorded_probes(probe_specs(window.header.probes)):
        return _build(window, (start_ns, losses, later_stamp))


def _build(trace: Trace,
           whole: tuple[int, TraceLosses, Callable[[int], int | None]] | None = None
           ) -> Timeline:
    order = sorted(range(len(trace.events)), key=lambda i: (trace.events[i].ts_ns, i))
    raw = [trace.events[i] for i in order]
    if whole is None:
        stamps = [ev.ts_ns for ev in raw] + [rec.ts_ns for rec in trace.lost]
        start = min(stamps) if stamps else 0
        losses = TraceLosses.of(trace.lost, start)
    else:
        start, losses, _ = whole

    seen_tuples: dict[tuple[object, ...], tuple[Endpoint, Endpoint] | None] = {}
    tuples = []
    for ev in raw:
        addrs = (ev.saddr, ev.sport, ev.daddr, ev.dport)
        if addrs not in seen_tuples:
            seen_tuples[addrs] = normalized_tuple(src_of(ev), dst_of(ev))
        tuples.append(seen_tuples[addrs])
    labels: dict[tuple[object, ...], str] = {}
    own_sides = [side_endpoint(ev) for ev in raw]
    segments = [segment_of(ev) for ev in raw]
    keys, sk_sides = flow_keys(raw, tuples, own_sides, segments)
    tevents = []
    for i, ev in enumerate(raw):
        spec = probe_spec(ev.probe)
        who = (ev.source, ev.tid, ev.ctx, ev.softirq, ev.comm)
        tevents.append(TEvent(
            index=i,
            ev=ev,
            offset_ns=ev.ts_ns - start,
            layer=spec.layer if spec is not None else None,
            direction=spec.direction if spec is not None else None,
            context=labels.get(who) or labels.setdefault(who, context_label(ev)),
            endpoint=own_sides[i] or sk_sides[i],
            segment=segments[i],
        ))
    flows = make_flows(tevents, keys)
    pair_returns(tevents)
    steps = make_steps(tevents, keys, flows)
    for st in steps:
        inherit_from_step(st, flows)
        mark_handoffs(st)
    unattributed = group_steps(steps, flows)
    flows = drop_stepless_flows(flows, tevents)
    label_packets(flows)
    assign_byte_ranges(flows)
    stamps_sorted = [te.ev.ts_ns for te in tevents]
    for fl in flows:
        # A loss is noticed after it happened: a flow owns the gaps noticed
        # from its first event up to the next event of the trace after its last.
        if whole is not None:
            until = whole[2](fl.end_ns)
        else:
            after = bisect.bisect_right(stamps_sorted, fl.end_ns)
            until = stamps_sorted[after] if after < len(stamps_sorted) else None
        fl.gaps = losses.during(fl.start_ns, until)
    return Timeline(
        trace=trace,
        start_ns=start,
        events=tevents,
        steps=steps,
        flows=flows,
        unattributed=unattributed,
        gaps=losses.gaps,
    )
