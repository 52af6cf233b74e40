"""The Python mirror of struct kp_event (tracer/capture/kp_event.h) and its
decoding into Event, shared by both capture backends. The mirror is checked
against the loaded program's own layout (the CO-RE object's BTF, BCC's
generated type) before any record is read: a mismatch stops the trace
instead of decoding garbage."""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Callable, Sequence

from probes.catalog import ProbeSpec
from tracer.capture.errors import LoadError
from tracer.events import SOFTIRQ_NAMES, Context, Event, Kind

# Must match HAS_* in kp_event.h.
HAS_TUPLE, HAS_SEQ, HAS_LEN, HAS_RET, HAS_ACK, HAS_FLAGS, HAS_ARG3 = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40,
)
_CTX = {0: Context.TASK, 1: Context.SOFTIRQ, 2: Context.HARDIRQ}


class RawEvent(ctypes.Structure):
    """Mirror of struct kp_event in kp_event.h (layout checked at load)."""

    _fields_ = [
        ("ts", ctypes.c_uint64),
        ("ip", ctypes.c_uint64),
        ("sk", ctypes.c_uint64),
        ("skb", ctypes.c_uint64),
        ("ret", ctypes.c_int64),
        ("arg3", ctypes.c_uint64),
        ("tgid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("netns", ctypes.c_uint32),
        ("saddr", ctypes.c_uint32),
        ("daddr", ctypes.c_uint32),
        ("seq", ctypes.c_uint32),
        ("end_seq", ctypes.c_uint32),
        ("ack", ctypes.c_uint32),
        ("length", ctypes.c_uint32),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("kind", ctypes.c_uint8),
        ("ctx", ctypes.c_uint8),
        ("vec", ctypes.c_uint8),
        ("tcp_flags", ctypes.c_uint8),
        ("has", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 7),
        ("comm", ctypes.c_char * 16),
    ]


RAW_EVENT_SIZE = ctypes.sizeof(RawEvent)


def check_layout(mirror: type[ctypes.Structure], source: str, size: int,
                 offsets: Sequence[tuple[str, int]]) -> None:
    """Raise LoadError unless (size, field offsets) are the mirror's."""
    ours = {name: getattr(mirror, name).offset for name, *_ in mirror._fields_}
    theirs = dict(offsets)
    diffs = [f"{name}: ours {ours.get(name)}, {source} {theirs.get(name)}"
             for name in sorted(set(ours) | set(theirs)) if ours.get(name) != theirs.get(name)]
    if size != ctypes.sizeof(mirror):
        diffs.insert(0, f"size: ours {ctypes.sizeof(mirror)}, {source} {size}")
    if diffs:
        raise LoadError(
            f"{mirror.__name__} does not match the struct in {source}: " + "; ".join(diffs)
        )


def _ipv4(addr_be: int) -> str:
    return socket.inet_ntoa(struct.pack("=I", addr_be))


def decode(raw: RawEvent, probe_of: Callable[[int], ProbeSpec | None]) -> Event | None:
    """A kernel record as an Event; None if its ip names no probe."""
    spec = probe_of(raw.ip)
    if spec is None:
        return None
    has = raw.has
    ctx = _CTX.get(raw.ctx, Context.TASK)
    comm = raw.comm.decode("utf-8", errors="replace")
    if ctx == Context.SOFTIRQ and comm.startswith("ksoftirqd/"):
        ctx = Context.KSOFTIRQD
    softirq = None
    if ctx in (Context.SOFTIRQ, Context.KSOFTIRQD):
        softirq = SOFTIRQ_NAMES[raw.vec] if raw.vec < len(SOFTIRQ_NAMES) else str(raw.vec)
    length: int | None = raw.length if has & HAS_LEN else None
    if raw.kind == 0 and has & HAS_ARG3 and spec.length_arg3:
        length = raw.arg3
    tuple_ok = bool(has & HAS_TUPLE)
    return Event(
        ts_ns=raw.ts,
        cpu=raw.cpu,
        tgid=raw.tgid,
        tid=raw.tid,
        comm=comm,
        probe=spec.name,
        kind=Kind.RETURN if raw.kind == 1 else Kind.ENTRY,
        ctx=ctx,
        softirq=softirq,
        sk=raw.sk,
        skb=raw.skb,
        netns=raw.netns,
        saddr=_ipv4(raw.saddr) if tuple_ok else None,
        sport=raw.sport if tuple_ok else None,
        daddr=_ipv4(raw.daddr) if tuple_ok else None,
        dport=raw.dport if tuple_ok else None,
        seq=raw.seq if has & HAS_SEQ else None,
        end_seq=raw.end_seq if has & HAS_SEQ else None,
        ack=raw.ack if has & HAS_ACK else None,
        tcp_flags=raw.tcp_flags if has & HAS_FLAGS else None,
        length=length,
        ret=raw.ret if has & HAS_RET else None,
    )
