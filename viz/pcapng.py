"""The trace's captured frames as pcapng, for Wireshark and tshark.

One Enhanced Packet Block per captured frame (tracer/events.py: the first
bytes of a packet at the transmit and the receive frame probe), its bytes
as the device had them, original length the frame's, time CLOCK_REALTIME
(the event's CLOCK_MONOTONIC time plus its source's clock offset), and
comments carrying what kpath knows of it: the packet (or event) it belongs
to, the send and recv whose bytes it carries, its kernel path (function,
context, time since the previous step) and its per-layer latency. One
Interface Description Block per (source host, network namespace, ifindex).

A loopback packet is the same frame as it leaves and as it arrives on the
same interface: written once (as a capture on `lo` shows it), the second
capture said in the first's comment. Format: the pcapng specification
(IETF draft-ietf-opsawg-pcapng), written with struct."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tracer.timeline.byte_ranges import writers
from tracer.timeline.latency import packet_latencies
from tracer.timeline.model import Message, Packet, Step, TEvent, Timeline
from tracer.tracefile import Header
from viz.text import fmt_hop

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # IPv4 or IPv6 by the first nibble
ETH_HLEN = 14
SNAPLEN = 128  # KP_FRAME_BYTES: what the capture keeps of a frame

_SHB, _IDB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_END, _OPT_COMMENT = 0, 1
_SHB_OS, _SHB_USERAPPL = 3, 4
_IF_NAME, _IF_DESCRIPTION, _IF_TSRESOL = 2, 3, 9


def _option(code: int, value: bytes) -> bytes:
    pad = -len(value) % 4
    return struct.pack("<HH", code, len(value)) + value + b"\0" * pad


def _options(opts: list[tuple[int, bytes]]) -> bytes:
    if not opts:
        return b""
    return b"".join(_option(c, v) for c, v in opts) + struct.pack("<HH", _OPT_END, 0)


def _block(kind: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", kind, total) + body + struct.pack("<I", total)


@dataclass(frozen=True)
class Interface:
    source: int  # index into the header's sources (0 on a single-host trace)
    netns: int
    ifindex: int


@dataclass
class Export:
    """What an export wrote."""

    data: bytes
    packets: int  # Enhanced Packet Blocks
    rows: list[int] = field(default_factory=list)  # each block's event row in the trace
    interfaces: list[str] = field(default_factory=list)
    same_frame: int = 0  # loopback receive captures folded into their transmit's block


def _link(link: int | None, dev_type: int) -> tuple[int, int]:
    """(pcapng link type, bytes to drop from the front): Ethernet when the
    device has a 14-byte link header (loopback's is Ethernet with zero
    addresses); IPv4 as is when it has none; a link header of another kind
    is left out (its protocol is not Ethernet) and the rest written raw."""
    if link == ETH_HLEN:
        return LINKTYPE_ETHERNET, 0
    return LINKTYPE_RAW, link or 0


def _path(step: Step) -> list[str]:
    """The step's events in time order, one comment each (Wireshark shows a
    comment on one line): side, layer, function, context, time since the
    previous one."""
    parts = []
    prev = None
    for te in step.events:
        hop = fmt_hop(te.ev.ts_ns - prev) if prev is not None else "+0 ns"
        ret = " return" if te.is_return else ""
        side = f"{te.side} " if te.side else ""
        layer = f"{te.layer} " if te.layer else ""
        parts.append(f"path: {hop} {side}{layer}{te.probe}{ret} [{te.context}]")
        prev = te.ev.ts_ns
    return parts


def _messages(tl: Timeline, pkt: Packet, ids: Callable[[int], str]) -> str | None:
    """The send(s) whose bytes it carries (or that sent it) and the recv(s)
    that read them."""
    out = []
    sends = writers(tl, pkt)
    if sends:
        out.append("of " + ", ".join(f"#{ids(m.id)} {m.title} bytes {r}" for m, r in sends))
    elif pkt.message is not None:
        msg = tl.steps[pkt.message]
        assert isinstance(msg, Message)
        out.append(f"sent in #{ids(msg.id)} {msg.title}")
    for mid in pkt.read_by:
        msg = tl.steps[mid]
        assert isinstance(msg, Message)
        out.append(f"read by #{ids(mid)} {msg.title}")
    return "; ".join(out) if out else None


def comments(tl: Timeline, te: TEvent, hops: dict[int, str], also: str | None,
             ids: Callable[[int], str] = str) -> list[str]:
    """An Enhanced Packet Block's comments; `ids` writes a step id."""
    where = f"captured at {te.probe} ({te.direction or '?'}, {te.context})"
    if also:
        where += f"; {also}"
    out = []
    step = tl.step_of(te) if te.step >= 0 else None
    if isinstance(step, Packet):
        out.append(f"kpath #{ids(step.id)} packet {step.title}")
        msgs = _messages(tl, step, ids)
        if msgs:
            out.append(msgs)
    elif step is not None:
        out.append(f"kpath #{ids(step.id)} {step.kind} {step.title}")
    else:
        out.append(f"kpath event {te.probe}")
    out.append(where)
    if step is not None:
        out.extend(_path(step))
        if step.id in hops:
            out.append(hops[step.id])
    return out


def hop_texts(tl: Timeline) -> dict[int, str]:
    """Packet id -> its per-layer latency, as replay --stats measures it."""
    out = {}
    for pl in packet_latencies(tl):
        if pl.hops:
            out[pl.packet.id] = "latency: " + ", ".join(
                f"{hop} {fmt_hop(ht.ns).lstrip('+')}" for hop, ht in pl.hops.items()) + (
                " (events lost meanwhile)" if pl.gap else "")
    return out


@dataclass
class Frame:
    row: int  # its event's row in the trace file
    te: TEvent
    iface: Interface
    ifname: str
    link: tuple[int, int]
    length: int
    data: bytes


def frame(row: int, te: TEvent, rec: dict[str, Any]) -> Frame:
    """A frame of the trace's frames table (`rec`: a row of it) on its event."""
    ev = te.ev
    return Frame(row, te, Interface(ev.source, ev.netns, rec["ifindex"]), rec["ifname"],
                 _link(rec["link"], rec["dev_type"]), rec["len"], rec["data"])


def _frames(tl: Timeline) -> Iterator[Frame]:
    trace = tl.trace
    frames = trace.frames
    if frames is None or not frames.num_rows:
        return
    te_of = {id(te.ev): te for te in tl.events}
    events = trace.events
    for rec in frames.to_pylist():
        row = int(rec["row"])
        te = te_of.get(id(events[row]))
        if te is None:
            continue
        yield frame(row, te, rec)


def clock_offset(header: Header, source: int) -> int:
    srcs = header.sources
    if 0 <= source < len(srcs):
        # A merged trace's shifted times are on source 0's clock: one
        # wall clock for all hosts keeps the wire's time what merge estimated.
        ref = 0 if srcs[source].shift_ns is not None else source
        return srcs[ref].clock_offset_ns
    return header.clock_offset_ns


def fold_frames(frames: Iterable[Frame]) -> tuple[list[Frame], dict[int, list[Frame]]]:
    """One block per packet per interface: a second capture of the same
    bytes on the same interface (loopback: transmit, then receive) is
    folded. The frames kept, and per kept frame's row those folded in it."""
    first: dict[tuple[Interface, int, bytes], Frame] = {}
    folded: dict[int, list[Frame]] = {}
    kept = []
    for f in frames:
        key = (f.iface, f.te.step, f.data)
        if f.te.step >= 0 and key in first:
            folded.setdefault(first[key].row, []).append(f)
            continue
        first[key] = f
        kept.append(f)
    return kept, folded


def also_text(f: Frame, folded: dict[int, list[Frame]]) -> str | None:
    if f.row not in folded:
        return None
    return "the same frame also " + ", ".join(
        f"at {g.te.probe} ({g.te.direction}, {g.te.context}) "
        f"{fmt_hop(g.te.ev.ts_ns - f.te.ev.ts_ns)}" for g in folded[f.row])


def section_block(header: Header, tool: str) -> bytes:
    shb_opts = [(_SHB_USERAPPL, tool.encode()),
                (_SHB_OS, f"Linux {header.kernel_release}".encode())]
    return _block(_SHB, struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1) + _options(shb_opts))


def interface_block(header: Header, iface: Interface, ifname: str,
                    link: tuple[int, int]) -> tuple[bytes, str]:
    """The Interface Description Block and its description."""
    host = (header.sources[iface.source].hostname
            if iface.source < len(header.sources) else header.hostname)
    desc = f"{host} {ifname} (ifindex {iface.ifindex}, netns {iface.netns})"
    opts = [(_IF_NAME, ifname.encode()), (_IF_DESCRIPTION, desc.encode()),
            (_IF_TSRESOL, b"\x09")]
    return _block(_IDB, struct.pack("<HHI", link[0], 0, SNAPLEN) + _options(opts)), desc


def packet_block(iface_id: int, ts: int, data: bytes, length: int, texts: list[str]) -> bytes:
    """An Enhanced Packet Block: `data` as captured (link header dropped),
    `length` the frame's, `ts` CLOCK_REALTIME ns."""
    body = struct.pack("<IIIII", iface_id, (ts >> 32) & 0xFFFFFFFF, ts & 0xFFFFFFFF,
                       len(data), length)
    body += data + b"\0" * (-len(data) % 4)
    # An option holds at most 65535 bytes.
    body += _options([(_OPT_COMMENT, c.encode()[:65532]) for c in texts])
    return _block(_EPB, body)


def render_pcapng(tl: Timeline, tool: str, flow: int | None = None) -> Export:
    """The timeline's frames (of one flow, or all) as one pcapng section
    (`tool`: who wrote it)."""
    header = tl.trace.header
    hops = hop_texts(tl)
    frames = sorted((f for f in _frames(tl) if flow is None or f.te.flow == flow),
                    key=lambda f: (f.te.ev.ts_ns, f.row))
    kept, folded = fold_frames(frames)
    out = [section_block(header, tool)]
    ids: dict[Interface, int] = {}
    names = []
    for f in kept:
        if f.iface in ids:
            continue
        ids[f.iface] = len(ids)
        block, desc = interface_block(header, f.iface, f.ifname, f.link)
        names.append(desc)
        out.append(block)
    for f in kept:
        ts = f.te.ev.ts_ns + clock_offset(header, f.iface.source)
        texts = comments(tl, f.te, hops, also_text(f, folded))
        out.append(packet_block(ids[f.iface], ts, f.data[f.link[1]:], f.length - f.link[1],
                                texts))
    return Export(b"".join(out), len(kept), [f.row for f in kept], names,
                  sum(len(v) for v in folded.values()))
