"""Where one host's segments meet the wire, and the pairing of two hosts'.

Read from each host's events alone (no reconstruction): a segment leaves a
host at its last transmit event in the device layer or below (device, then
driver), and reaches a host at its first receive event below TCP (device,
then IP layer). A segment is named by its 4-tuple, sequence number,
payload, flags and ack (segments.PacketKey without the namespace scope,
which is a host's own), so the sender's copy and the receiver's carry the
same name. A key repeats (a retransmission, duplicate ACKs): each probe's
events of one key come in the order of the copies, so the i-th copy is the
i-th event of every probe that saw all of them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from probes.catalog import Direction, Layer
from tracer.events import Endpoint, Event, Kind
from tracer.merge.offset import OffsetEstimate, estimate_offset
from tracer.timeline.event_rules import capture_of, probe_spec, recorded_probes
from tracer.timeline.segments import KEY_FLAGS_MASK, ORIGIN_CAPTURES, segment_of
from tracer.tracefile import Trace, probe_specs

# (src, dst, seq, payload, flags, ack)
WireKey = tuple[Endpoint, Endpoint, int, int, int, int | None]
_OUT_LAYERS = (Layer.DEVICE, Layer.DRIVER)
_IN_LAYERS = (Layer.DEVICE, Layer.IP)


def connection(key: WireKey) -> tuple[Endpoint, Endpoint]:
    """The key's 4-tuple, the same whichever way the segment went."""
    a, b = key[0], key[1]
    return (a, b) if (a.addr, a.port) <= (b.addr, b.port) else (b, a)


@dataclass
class Crossings:
    """One host's segments at the wire: times on its own clock, per key, in
    time order (a key repeats when a segment is sent again)."""

    sent: dict[WireKey, list[int]] = field(default_factory=dict)
    received: dict[WireKey, list[int]] = field(default_factory=dict)


def _copies(by_probe: dict[str, list[int]], last: bool) -> list[int]:
    """Per copy of a segment, the latest (last) or earliest of its probes'
    times; only probes that saw every copy count."""
    n = max(len(ts) for ts in by_probe.values())
    full = [ts for ts in by_probe.values() if len(ts) == n]
    pick = max if last else min
    return [pick(ts[i] for ts in full) for i in range(n)]


def crossings(trace: Trace) -> Crossings:
    """The segments that left this host or reached it through a device. A
    key seen both leaving and arriving on one host (loopback, veth) never
    crossed to another host and is left out."""
    out_ev: dict[WireKey, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    in_ev: dict[WireKey, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    with recorded_probes(probe_specs(trace.header.probes)):
        for ev in sorted(trace.events, key=lambda e: e.ts_ns):
            where = _at_wire(ev)
            if where is None:
                continue
            key, leaving = where
            (out_ev if leaving else in_ev)[key][ev.probe].append(ev.ts_ns)
    local = out_ev.keys() & in_ev.keys()
    return Crossings(
        sent={k: _copies(v, last=True) for k, v in out_ev.items() if k not in local},
        received={k: _copies(v, last=False) for k, v in in_ev.items() if k not in local})


def _at_wire(ev: Event) -> tuple[WireKey, bool] | None:
    """(key, leaving) for an event at the wire's edge: a transmit entry at
    the device layer or below, a receive entry at the device or IP layer."""
    if ev.kind is not Kind.ENTRY:
        return None
    spec = probe_spec(ev.probe)
    if spec is None or capture_of(ev) in ORIGIN_CAPTURES:
        return None
    leaving = spec.direction is Direction.TX
    if spec.layer not in (_OUT_LAYERS if leaving else _IN_LAYERS):
        return None
    seg = segment_of(ev)
    if seg is None:
        return None
    return (seg.src, seg.dst, seg.seq, seg.payload, seg.flags & KEY_FLAGS_MASK, seg.ack), leaving


@dataclass(frozen=True, slots=True)
class Match:
    key: WireKey
    sent_ns: int  # on the sender's clock
    received_ns: int  # on the receiver's clock
    a_to_b: bool


@dataclass
class Pairing:
    """The segments two hosts (A, B) exchanged, matched one to one."""

    estimate: OffsetEstimate
    matches: list[Match]
    unmatched_sent: list[tuple[WireKey, int]]  # sent by one host, not seen by the other
    unmatched_received: list[tuple[WireKey, int]]  # received with no send on the other
    connections: int  # 4-tuples both hosts saw segments of

    @property
    def matched(self) -> int:
        return len(self.matches)


def _common(a: Crossings, b: Crossings) -> set[tuple[Endpoint, Endpoint]]:
    seen_a = {connection(k) for k in (*a.sent, *a.received)}
    seen_b = {connection(k) for k in (*b.sent, *b.received)}
    return seen_a & seen_b


def _unique_pairs(sent: dict[WireKey, list[int]], received: dict[WireKey, list[int]]
                  ) -> list[tuple[int, int]]:
    """(sent, received) of keys sent once and received once: no ambiguity."""
    return [(sent[k][0], times[0]) for k, times in received.items()
            if len(times) == 1 and len(sent.get(k, ())) == 1]


def _match_direction(sent: dict[WireKey, list[int]], received: dict[WireKey, list[int]],
                     keep: set[tuple[Endpoint, Endpoint]], shift: int, slack: int,
                     a_to_b: bool, out: Pairing) -> None:
    """Each reception to the latest unmatched send that could have caused
    it (sent no later than received, within the uncertainty), in order;
    `shift` brings receiver times onto the sender's clock."""
    for key in sorted({*sent, *received}, key=repr):
        if connection(key) not in keep:
            continue
        pending = list(sent.get(key, ()))
        for rx in received.get(key, ()):
            on_sender = rx + shift
            fit = [i for i, tx in enumerate(pending) if tx <= on_sender + slack]
            if not fit:
                out.unmatched_received.append((key, rx))
                continue
            tx = pending.pop(fit[-1])
            out.matches.append(Match(key, tx, rx, a_to_b))
        out.unmatched_sent.extend((key, tx) for tx in pending)


def pair_hosts(a: Crossings, b: Crossings) -> Pairing:
    """Match A's and B's segments on their common connections and estimate
    B's clock offset from them (offset.estimate_offset). OffsetError when
    they share no connection or cannot bound the offset."""
    keep = _common(a, b)
    if not keep:
        raise NoCommonConnection("no connection in common: no segment one host sent or "
                                 "received was seen by the other")
    est = estimate_offset(_unique_pairs(_only(a.sent, keep), b.received),
                          _unique_pairs(_only(b.sent, keep), a.received))
    out = Pairing(est, [], [], [], len(keep))
    slack = est.uncertainty_ns
    _match_direction(a.sent, b.received, keep, est.shift_ns, slack, True, out)
    _match_direction(b.sent, a.received, keep, -est.shift_ns, slack, False, out)
    return out


def _only(times: dict[WireKey, list[int]], keep: Iterable[tuple[Endpoint, Endpoint]]
          ) -> dict[WireKey, list[int]]:
    kept = set(keep)
    return {k: v for k, v in times.items() if connection(k) in kept}


class NoCommonConnection(ValueError):
    """Two traces whose hosts exchanged no segment either saw."""
