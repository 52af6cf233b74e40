"""Statistics for `kpath replay --stats`: per flow, the byte accounting of
each direction, the latency distribution of each hop, and every packet's
hop latencies. Pure: returns a string.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

from tracer.timeline.accounting import ByteAccount, account_bytes
from tracer.timeline.latency import Hop, HopStats, PacketLatency, latency_stats, packet_latencies
from tracer.timeline.model import Flow, LossSummary, Role, Timeline
from tracer.tracefile import Source
from viz.escape import printable

GAP_MARK = "gap"


def fmt_us(ns: int) -> str:
    """Microseconds with one decimal: '12.3'."""
    return f"{ns / 1e3:.1f}"


def render_stats(timeline: Timeline, flow: int | None = None) -> str:
    """Accounting, latency distributions and per-packet latencies, one flow
    or all. KeyError for an unknown flow."""
    flows = [timeline.flow(flow)] if flow is not None else timeline.flows
    trace = timeline.trace
    lines = head_lines(trace.path, len(timeline.events), len(timeline.flows), trace.lost_total,
                       trace.cut_short, LossSummary.of(timeline.gaps), trace.header.sources)
    if not flows:
        lines.append("")
        lines.append("no TCP flow in this trace")
    for fl in flows:
        latencies = packet_latencies(timeline, fl.number)
        lines.append("")
        lines.extend(_flow_stats(timeline, fl, latencies))
    return "\n".join(lines) + "\n"


def head_lines(path: str, events: int, flows: int, lost: int, cut_short: str | None,
               losses: LossSummary, sources: Sequence[Source] = ()) -> list[str]:
    """The lines above the flows: what was read, what is missing, and the
    hosts of a merged trace with each one's clock shift."""
    lines = [f"kpath stats {printable(path or '(trace)', None)}: {events} events, "
             f"{flows} flow(s), lost {printable(lost)}"]
    if len(sources) > 1:
        lines.extend(source_lines(sources))
    if cut_short:
        lines.append(f"  !! trace cut short ({printable(cut_short, None)}): "
                     "counts may be incomplete")
    if losses.blind:
        lines.append(f"  !! kprobes blind {losses.blind} time(s), "
                     f"{fmt_us(losses.blind_ns)} us in all: an "
                     "interrupt or softirq ran inside a kprobe program or handler, and the "
                     "kernel skipped that CPU's kprobe programs meanwhile, uncounted (hops "
                     "through what they hid are not measured)")
    if losses.blind < losses.records:
        lines.append(f"  !! {losses.lost} event(s) lost: packets whose "
                     f"span holds a loss are marked '{GAP_MARK}' and left out of distributions")
    return lines


def source_lines(sources: Sequence[Source]) -> list[str]:
    """One line per host of a merged trace: its clock against the first's."""
    out = []
    for i, src in enumerate(sources):
        name = printable(src.hostname or "?", None)
        if src.shift_ns is None:
            out.append(f"  host {i} {name}: the reference clock")
            continue
        unc = ("unknown" if src.shift_uncertainty_ns is None
               else f"+- {fmt_us(src.shift_uncertainty_ns)} us")
        out.append(f"  host {i} {name}: clock offset {-src.shift_ns / 1e3:+.1f} us from host 0's "
                   f"({unc}, estimated from {src.shift_segments or 0} segments); "
                   "its times shifted onto host 0's clock")
    return out


def socket_lines(netns: Sequence[int], socks: Sequence[Sequence[int]], reply: Sequence[int]
                 ) -> list[str]:
    """Each end's netns and sockets; the kernel's control sockets that
    answered for the connection (RST, TIME_WAIT ACK) on a line of their own."""
    out = []
    for role, ns, own in zip((Role.CLIENT, Role.SERVER), netns, socks, strict=True):
        listed = ", ".join(hex(sk) for sk in own) or "?"
        out.append(f"  {role}: netns {ns or '?'}, sockets {listed}")
    if reply:
        plural = "s" if len(reply) > 1 else ""
        out.append(f"  kernel reply socket{plural} (RST, TIME_WAIT ACK): "
                   f"{', '.join(hex(sk) for sk in reply)}")
    return out


def _flow_stats(tl: Timeline, fl: Flow, latencies: list[PacketLatency]) -> list[str]:
    out = [f"flow {fl.number}: {fl.title}"]
    ends = [fl.endpoint_of(role) for role in (Role.CLIENT, Role.SERVER)]
    out.extend(socket_lines([fl.netns_of.get(ep, 0) for ep in ends],
                            [fl.socks_of.get(ep, []) for ep in ends], fl.reply_socks))
    out.append("")
    out.extend(_accounting(tl, fl))
    out.append("")
    out.extend(_distributions(latency_stats(tl, fl.number, latencies)))
    out.append("")
    out.extend(_per_packet(latencies))
    return out


def _direction(fl: Flow, sender: Role | None) -> str:
    return f"{sender} -> {sender.peer}" if sender is not None else "?"


def _accounting(tl: Timeline, fl: Flow) -> list[str]:
    out = account_lines([account_bytes(tl, fl.number, role) for role in (Role.CLIENT, Role.SERVER)])
    for stream in fl.streams.values():
        role = fl.role_of(stream.sender)
        how = stream.anchor.text if stream.anchor is not None else "no send placed"
        out.append(f"  {_direction(fl, role)} send ranges: {how}")
        out.extend(f"    !! {problem}" for problem in stream.problems)
    return out


def account_lines(accounts: Sequence[ByteAccount]) -> list[str]:
    """The byte accounting table of a flow's directions; then, where the
    trace has the kernel's stream positions, the ways bytes were written
    and read, and the stretches no traced call wrote or read."""
    head = ("  bytes", "written", "carried", "retrans", "read", "copied", "counted at", "check")
    rows = [head] + [(
        f"  {_direction_of(a.sender)}", str(a.written_total), str(a.carried),
        str(a.retransmitted), str(a.read_total), str(a.copied), a.carried_at or "-", _check(a))
        for a in accounts]
    out = table_lines(rows, right=range(1, 6))
    for a in accounts:
        if not a.written_by and not a.read_by:
            continue
        ways = [f"{verb} by " + (", ".join(f"{way} {n}" for way, n in by) or "-")
                for verb, by in (("written", a.written_by), ("read", a.read_by))]
        out.append(f"  {_direction_of(a.sender)} {'; '.join(ways)}")
        out.extend(f"    bytes {r} ({r.size} B) {verb} by {way}"
                   for verb, other in (("written", a.written_other), ("read", a.read_other))
                   for r, way in other)
    return out


def _check(a: ByteAccount) -> str:
    text = ("ok" if a.written else "ok (no data)") if a.balanced else "MISMATCH"
    if not a.complete or a.notes:
        text += f" ({'; '.join(a.notes) or 'incomplete'})"
    return text


def _distributions(stats: Sequence[HopStats]) -> list[str]:
    return distribution_lines(
        (_direction_of(s.sender), str(s.klass), str(s.hop), s.count,
         (s.min_ns, s.median_ns, s.p99_ns, s.max_ns), s.gaps) for s in stats)


def distribution_lines(stats: Iterable[tuple[str, str, str, int, tuple[int, int, int, int], int]]
                       ) -> list[str]:
    """The latency table: per (direction, class, hop), how many packets were
    measured, min/median/p99/max (ns) and how many were left out for a gap."""
    head = ("  latency (us)", "class", "hop", "n", "min", "median", "p99", "max", GAP_MARK + "s")
    rows: list[Sequence[str]] = [head]
    for direction, klass, hop, count, (low, mid, p99, high), gaps in stats:
        # fmt_us inlined: four values a row, a row per hop of every flow.
        rows.append((f"  {direction}", klass, hop, str(count), f"{low / 1e3:.1f}",
                     f"{mid / 1e3:.1f}", f"{p99 / 1e3:.1f}", f"{high / 1e3:.1f}", str(gaps))
                    if count else
                    (f"  {direction}", klass, hop, str(count), "-", "-", "-", "-", str(gaps)))
    if len(rows) == 1:
        return ["  latency: no hop measured (too few probes on the path)"]
    return table_lines(rows, right=range(3, 9))


@functools.cache
def _direction_of(sender: Role | None) -> str:
    return f"{sender} -> {sender.peer}" if sender is not None else "?"


def _per_packet(latencies: Sequence[PacketLatency]) -> list[str]:
    if not latencies:
        return ["  per packet: no packet"]
    hops = [h for h in Hop if any(h in pl.hops for pl in latencies)]
    head = ("  per packet (us)", "direction", "class", *[str(h) for h in hops], "")
    rows: list[tuple[str, ...]] = [head]
    for pl in latencies:
        p = pl.packet
        cells = [fmt_us(pl.hops[h].ns) if h in pl.hops else "-" for h in hops]
        rows.append((f"  #{p.id} {p.label}", _direction_of(p.sender), str(pl.klass), *cells,
                     GAP_MARK if pl.gap else ""))
    return table_lines(rows, right=range(3, 3 + len(hops)))


def table_lines(rows: Sequence[Sequence[str]], right: range) -> list[str]:
    """Rows as aligned text; columns in `right` right-aligned. One format
    string for the table, one `%` per row: a big trace's per-packet tables
    have hundreds of thousands of rows."""
    widths = [max(map(len, col)) for col in zip(*rows, strict=True)]
    line = "  ".join(f"%{'' if i in right else '-'}{w}s" for i, w in enumerate(widths))
    return [(line % tuple(row)).rstrip() for row in rows]
