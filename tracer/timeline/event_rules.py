"""Rules that need one event only: its probe's layer and capture, the side of
the connection it belongs to, its execution context, its 4-tuple.

Endpoints are interned (one object per address and port): the timeline
compares and hashes them millions of times on a large trace.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
from collections.abc import Iterator, Mapping
from contextvars import ContextVar

from probes.catalog import (
    BY_NAME,
    FD_CAPTURES,
    HEADER_CAPTURES,
    SOCK_ONLY_CAPTURES,
    Capture,
    Direction,
    Layer,
    ProbeSpec,
)
from tracer.events import Context, Endpoint, Event

_Ctx = tuple[int, int, str, str | None]

# Captures whose src is the local end of a socket that owns the flow; only
# these teach the sk -> flow map (a listener's tcp_v4_send_synack carries the
# request's flow, and skb->sk on packet captures is not reliable).
SOCKET_CAPTURES = FD_CAPTURES | SOCK_ONLY_CAPTURES | frozenset(
    {Capture.SOCK_SKB_CB, Capture.SOCK_SKB_CB_NOACK, Capture.SOCK_SKB_L4, Capture.DATAGRAM_ITER}
)


# The probe dictionary in force: the trace's own (build_timeline sets it
# from the header, tracer/tracefile/probe_dictionary.py), this kpath's
# catalog when none is.
_PROBES: ContextVar[Mapping[str, ProbeSpec]] = ContextVar("kpath_probes", default=BY_NAME)


def probe_spec(name: str) -> ProbeSpec | None:
    return _PROBES.get().get(name)


@contextlib.contextmanager
def recorded_probes(specs: Mapping[str, ProbeSpec]) -> Iterator[None]:
    """Describe probes by `specs` (a trace's dictionary) within the block."""
    token = _PROBES.set(specs)
    try:
        yield
    finally:
        _PROBES.reset(token)


def use_recorded_probes(specs: Mapping[str, ProbeSpec]) -> None:
    """Describe probes by `specs` from now on, in this context: for a
    process that reads one trace (the CLI), so that renderers asking after
    build_timeline get the trace's dictionary too."""
    _PROBES.set(specs)


@functools.lru_cache(maxsize=1 << 16)
def endpoint(addr: str, port: int) -> Endpoint:
    """The one Endpoint object for addr:port."""
    return Endpoint(addr, port)


def src_of(ev: Event) -> Endpoint | None:
    if ev.saddr is None or ev.sport is None:
        return None
    return endpoint(ev.saddr, ev.sport)


def dst_of(ev: Event) -> Endpoint | None:
    if ev.daddr is None or ev.dport is None:
        return None
    return endpoint(ev.daddr, ev.dport)


def side_endpoint(ev: Event) -> Endpoint | None:
    """The endpoint whose side of the connection an event belongs to.

    Socket-level captures (syscalls, socket/sock functions, the copy to user,
    tcp_v4_send_synack's request sock, transmit with a socket) report the
    socket's LOCAL endpoint as src, whatever the direction: the side is src.
    Only packet-header captures on receive (skb_l3 with direction rx:
    ip_rcv, tcp_v4_rcv) see the sender as src; their side is dst.
    """
    spec = probe_spec(ev.probe)
    if spec is not None and spec.capture in HEADER_CAPTURES and spec.direction is Direction.RX:
        return dst_of(ev)
    return src_of(ev)


def layer_of(ev: Event) -> Layer | None:
    spec = probe_spec(ev.probe)
    return spec.layer if spec is not None else None


def capture_of(ev: Event) -> Capture | None:
    spec = probe_spec(ev.probe)
    return spec.capture if spec is not None else None


def direction_of(ev: Event) -> Direction | None:
    spec = probe_spec(ev.probe)
    return spec.direction if spec is not None else None


def context_key(ev: Event) -> _Ctx:
    """One execution context: a thread in one mode (task, softirq vector, ...)
    of one host (a merged trace holds several: their thread ids collide)."""
    return (ev.source, ev.tid, str(ev.ctx), ev.softirq)


def context_label(ev: Event) -> str:
    """'task client[12]', 'softirq NET_RX client[12]', 'ksoftirqd NET_RX ksoftirqd/0[15]'."""
    who = f"{ev.comm}[{ev.tid}]"
    if ev.source:  # another host's thread (a merged trace; source 0 is the first host)
        who = f"{who}@{ev.source}"
    if ev.ctx is Context.TASK:
        return f"task {who}"
    if ev.ctx in (Context.SOFTIRQ, Context.KSOFTIRQD):
        return f"{ev.ctx} {ev.softirq or '?'} {who}"
    return f"{ev.ctx} {who}"


@functools.lru_cache(maxsize=1 << 16)
def ep_order(ep: Endpoint) -> tuple[int, int, str, int]:
    """Sort key: IPv4 before IPv6, numeric address, then port."""
    try:
        ip = ipaddress.ip_address(ep.addr)
        return (ip.version, int(ip), "", ep.port)
    except ValueError:
        return (99, 0, ep.addr, ep.port)


def normalized_tuple(src: Endpoint | None, dst: Endpoint | None
                     ) -> tuple[Endpoint, Endpoint] | None:
    """(lower endpoint, higher endpoint), or None without two valid endpoints
    (port 0 is a listener's or an unconnected socket's)."""
    if src is None or dst is None or src.port == 0 or dst.port == 0:
        return None
    return (src, dst) if ep_order(src) <= ep_order(dst) else (dst, src)
