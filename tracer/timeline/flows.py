"""Flows: which connection each event belongs to, the two ends' roles,
namespaces and sockets, and the base of each direction's sequence numbers.

Rules (docs/correlation.md, "Flows and sides"):
- an event's flow is its normalized 4-tuple; events without one (no
  addresses, or a listener's 0.0.0.0:0 peer) borrow it from their socket
  (the sk map, taught by socket-level captures only);
- netns is not part of the key: a veth connection's client events carry
  netns A and its server events netns B. Each end records its own netns. Only
  when one END is seen in several namespaces is the 4-tuple reused by
  distinct connections; those are split by namespace (FlowKey.scope).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Sequence

from probes.catalog import HEADER_CAPTURES, Capture, Direction
from tracer.events import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Endpoint, Event
from tracer.timeline.event_rules import SOCKET_CAPTURES, capture_of, ep_order
from tracer.timeline.model import Flow, FlowKey, Role, RolesFrom, TEvent
from tracer.timeline.segments import KEY_FLAGS_MASK, Segment, signed_seq_delta

_Tuple = tuple[Endpoint, Endpoint]
_Node = tuple[_Tuple, Endpoint, int]  # (4-tuple, end, netns)


def flow_keys(
    events: Sequence[Event],
    tuples: Sequence[_Tuple | None],
    sides: Sequence[Endpoint | None],
    segments: Sequence[Segment | None],
) -> tuple[list[FlowKey | None], list[Endpoint | None]]:
    """Each event's flow key (its own 4-tuple, else its socket's) and, for
    events resolved through the sk map, the socket's local endpoint (their
    side). Events are in time order."""
    ns_by_end: dict[tuple[_Tuple, Endpoint], set[int]] = {}
    last: tuple[_Tuple | None, Endpoint | None, set[int]] = (None, None, set())
    for ev, tup, side in zip(events, tuples, sides, strict=True):
        if tup is None or not ev.netns or side is None:
            continue
        if tup is not last[0] or side is not last[1]:  # runs: skip hashing endpoints
            last = (tup, side, ns_by_end.setdefault((tup, side), set()))
        last[2].add(ev.netns)
    ambiguous = {tup for (tup, _), seen in ns_by_end.items() if len(seen) > 1}
    scopes = (_split_by_netns(events, tuples, sides, segments, ambiguous) if ambiguous
              else [0] * len(events))

    made: dict[tuple[_Tuple, int], FlowKey] = {}
    keys: list[FlowKey | None] = []
    prev: tuple[_Tuple | None, int, FlowKey | None] = (None, 0, None)
    for tup, scope in zip(tuples, scopes, strict=True):
        if tup is None:
            keys.append(None)
            continue
        if tup is not prev[0] or scope != prev[1]:
            key = made.get((tup, scope))
            if key is None:
                key = made[(tup, scope)] = FlowKey(tup[0], tup[1], scope)
            prev = (tup, scope, key)
        keys.append(prev[2])

    # sk -> (flow, local end) over time; sockets are recycled: take the latest
    # mapping before the event, else the first one after it.
    # Sockets are a host's own: keyed by (source, sk) (a merged trace).
    stamps: dict[tuple[int, int], list[int]] = {}
    maps: dict[tuple[int, int], list[tuple[FlowKey, Endpoint]]] = {}
    for ev, key in zip(events, keys, strict=True):
        if key is None or not ev.sk or ev.saddr is None or capture_of(ev) not in SOCKET_CAPTURES:
            continue
        local = key.lo if (key.lo.addr, key.lo.port) == (ev.saddr, ev.sport) else key.hi
        seen = maps.setdefault((ev.source, ev.sk), [])
        if not seen or seen[-1][0] != key:
            seen.append((key, local))
            stamps.setdefault((ev.source, ev.sk), []).append(ev.ts_ns)
    out_sides: list[Endpoint | None] = [None] * len(events)
    for i, ev in enumerate(events):
        sock = (ev.source, ev.sk)
        if keys[i] is not None or not ev.sk or sock not in maps:
            continue
        j = max(bisect.bisect_right(stamps[sock], ev.ts_ns) - 1, 0)
        keys[i], local = maps[sock][j]
        if capture_of(ev) in SOCKET_CAPTURES:
            out_sides[i] = local
    return keys, out_sides


def _split_by_netns(
    events: Sequence[Event],
    tuples: Sequence[_Tuple | None],
    sides: Sequence[Endpoint | None],
    segments: Sequence[Segment | None],
    ambiguous: set[_Tuple],
) -> list[int]:
    """Scopes for 4-tuples whose ends were seen in several namespaces.

    Nodes are (4-tuple, end, netns); one segment seen on both sides, or one
    socket, joins nodes into one connection. A connection's scope is the
    smallest netns among its nodes, so two ends in the same namespace share
    a scope even without a segment joining them. Events without a netns take
    their socket's scope, else the previous event's of the same 4-tuple.
    """
    parent: dict[_Node, _Node] = {}

    def find(x: _Node) -> _Node:
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def union(a: _Node, b: _Node) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra

    nodes: list[_Node | None] = [None] * len(events)
    first_by: dict[object, _Node] = {}
    for i, (ev, tup, side) in enumerate(zip(events, tuples, sides, strict=True)):
        if tup not in ambiguous or tup is None or not ev.netns or side is None:
            continue
        node = nodes[i] = (tup, side, ev.netns)
        find(node)
        seg = segments[i]
        links: list[object] = []
        if seg is not None:
            links.append(("seg", tup, seg.src, seg.seq, seg.flags & KEY_FLAGS_MASK, seg.ack))
        if ev.sk:
            links.append(("sk", tup, ev.sk))
        for link in links:
            if link in first_by:
                union(first_by[link], node)
            else:
                first_by[link] = node
    lowest: dict[_Node, int] = {}
    for member in parent:
        root = find(member)
        lowest[root] = min(lowest.get(root, member[2]), member[2])
    scopes = [0] * len(events)
    sk_scope: dict[tuple[_Tuple, int], int] = {}
    first_scope: dict[_Tuple, int] = {}
    for i, placed in enumerate(nodes):
        if placed is not None:
            scopes[i] = lowest[find(placed)]
            first_scope.setdefault(placed[0], scopes[i])
            if events[i].sk:
                sk_scope[(placed[0], events[i].sk)] = scopes[i]
    last: dict[_Tuple, int] = {}
    for i, tup in enumerate(tuples):
        if tup is None or tup not in ambiguous:
            continue
        if nodes[i] is None:
            scopes[i] = sk_scope.get((tup, events[i].sk),
                                     last.get(tup, first_scope.get(tup, 0)))
        last[tup] = scopes[i]
    return scopes


def make_flows(tevents: Sequence[TEvent], keys: Sequence[FlowKey | None]) -> list[Flow]:
    """Flows numbered in order of first event, with roles, sequence bases,
    each end's netns and sockets; sets each event's flow and side.
    `TEvent.endpoint` must be the event's own side (before any inheritance
    from its step)."""
    groups: dict[FlowKey, list[TEvent]] = {}
    last_key: FlowKey | None = None
    group: list[TEvent] = []
    for te, k in zip(tevents, keys, strict=True):
        if k is None:
            continue
        if k is not last_key:  # runs of one flow: skip hashing the key
            group = groups.setdefault(k, [])
            last_key = k
        group.append(te)
    replies = kernel_reply_sockets(tevents)
    flows = []
    for number, (k, evs) in enumerate(groups.items(), start=1):
        client, server, how = _assign_roles(k, evs)
        fl = Flow(number=number, key=k, client=client, server=server, roles_from=how,
                  first=evs[0].index)
        _set_bases(fl, evs)
        netns: tuple[Counter[int], Counter[int]] = (Counter(), Counter())
        socks: tuple[dict[int, None], dict[int, None]] = ({}, {})
        reply: dict[int, None] = {}
        for te in evs:
            te.flow = number
            if (te.ev.source, te.ev.sk) in replies:
                reply[te.ev.sk] = None
            ep = te.endpoint
            # endpoints are interned: identity first, equality as a fallback
            if ep is client or (ep is not server and ep == client):
                end, te.side = 0, Role.CLIENT
            elif ep is server or ep == server:
                end, te.side = 1, Role.SERVER
            else:
                continue
            if te.ev.netns:
                netns[end][te.ev.netns] += 1
            if te.ev.sk and _owns_sk(te) and (te.ev.source, te.ev.sk) not in replies:
                socks[end][te.ev.sk] = None
        for end, ep in enumerate((client, server)):
            common = netns[end].most_common(1)
            fl.netns_of[ep] = common[0][0] if common else 0
            fl.socks_of[ep] = list(socks[end])
        fl.reply_socks = list(reply)
        flows.append(fl)
    return flows


REPLY_FLAGS = TCP_RST | TCP_ACK


def is_reply_like(ev: Event) -> bool:
    """A segment the kernel may send from its own control socket
    (ip_send_unicast_reply: a RST, or the ACK of a TIME_WAIT socket): seen
    in packet headers only (skb->sk), no data, no SYN or FIN."""
    cap = capture_of(ev)
    flags = ev.tcp_flags or 0
    return (cap in HEADER_CAPTURES and cap is not Capture.SOCK_SKB_L3 and ev.seq is not None
            and not flags & (TCP_SYN | TCP_FIN) and bool(flags & REPLY_FLAGS)
            and not ev.length)


def kernel_reply_sockets(tevents: Sequence[TEvent]) -> set[tuple[int, int]]:
    """Sockets named only by reply-like segments: the kernel's per-CPU
    control sockets, which answer for connections that have no socket (a
    closed port, TIME_WAIT), not an end's own socket. A connection's socket
    shows up in socket-level events too (syscalls, TCP transmit)."""
    seen: set[tuple[int, int]] = set()
    other: set[tuple[int, int]] = set()
    for te in tevents:
        sk = (te.ev.source, te.ev.sk)  # (host, socket)
        if sk[1] and sk not in other:
            (seen if is_reply_like(te.ev) else other).add(sk)
    return seen - other


def _owns_sk(te: TEvent) -> bool:
    """Whether the event's sk is its own side's socket. On receive, header
    captures read skb->sk, which may still name the sender's socket (veth
    keeps it across namespaces) or be set by early demux: not trusted. A
    sock argument (tcp_v4_do_rcv...) is."""
    cap = capture_of(te.ev)
    return not (cap in HEADER_CAPTURES and cap is not Capture.SOCK_SKB_L3
                and te.direction is Direction.RX)


def _set_bases(fl: Flow, evs: Sequence[TEvent]) -> None:
    """Relative sequence numbers start at the sender's ISN when its SYN is in
    the trace; else at the lowest sequence number seen of its stream
    (segments it sent, copies of its bytes to the peer's reader)."""
    for te in evs:
        seg = te.segment
        if seg is not None:
            owner, value, syn = seg.src, seg.seq, bool(seg.flags & TCP_SYN)
        elif capture_of(te.ev) is Capture.DATAGRAM_ITER and te.ev.seq is not None:
            owner = fl.client if te.endpoint == fl.server else fl.server
            value, syn = te.ev.seq, False
        else:
            continue
        if fl.isn_from_syn.get(owner):
            continue
        if syn:
            fl.isn[owner], fl.isn_from_syn[owner] = value, True
        elif owner not in fl.isn or signed_seq_delta(value, fl.isn[owner]) < 0:
            fl.isn[owner], fl.isn_from_syn[owner] = value, False


def _assign_roles(k: FlowKey, evs: Sequence[TEvent]) -> tuple[Endpoint, Endpoint, RolesFrom]:
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
    server, client = sorted((k.lo, k.hi), key=lambda ep: (ep.port, ep_order(ep)))
    return client, server, RolesFrom.PORT
