"""Text timeline for `kpath replay`: a header that says what was (and was not)
captured, then per flow each step (message or packet) with its events.

Pure: returns a string; colour (ANSI, via click.style) only when asked.
Each event line: time from the trace start, the hop (time since the previous
event of its step), side, layer, the function indented by its call nesting
in its execution context (viz/spans.py), the context (coloured by kind:
task, softirq, ksoftirqd, hardirq), details.
"""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Callable, Sequence

import click

from tracer.events import ProbeStatus
from tracer.timeline import (
    Flow,
    LostGap,
    Message,
    Packet,
    RolesFrom,
    Step,
    TEvent,
    ThreadGroup,
    Timeline,
    blind_summary,
    carriers,
    writers,
)
from viz.cut_short import cut_short_message
from viz.escape import printable, printable_items, printable_list
from viz.sequence import event_details, fmt_duration, fmt_offset, wire_crossing
from viz.spans import call_depths, call_ends

Style = Callable[..., str]  # (text, fg=None, bold=None) -> text, maybe with ANSI codes

SIDE_COLORS = {"client": "cyan", "server": "green"}
CTX_COLORS = {"task": "blue", "softirq": "yellow", "ksoftirqd": "magenta", "hardirq": "red"}
MAX_INDENT = 8  # nesting levels shown as indentation
# Column widths follow the longest value up to these, and longer values are
# cut with an ellipsis: one giant name must not pad every line of the replay.
MAX_FN_W = 60
MAX_CTX_W = 48
HANDOFF_MARK = "[hand-off]"
# A merged trace: the packet crossed to another host (the hop is the wire).
WIRE_MARK = "[wire]"


def _styler(color: bool) -> Style:
    def style(text: str, fg: str | None = None, bold: bool | None = None) -> str:
        return click.style(text, fg=fg, bold=bold) if color else text

    return style


def render_text(timeline: Timeline, flow: int | None = None, color: bool = False) -> str:
    """The whole replay. `flow` (1-based) limits it to one flow; KeyError if
    there is no such flow."""
    st = _styler(color)
    flows = [timeline.flow(flow)] if flow is not None else timeline.flows
    lines = _header(timeline, st)
    for fl in flows:
        lines.append("")
        lines.extend(_flow(timeline, fl, st))
    if flow is None and timeline.unattributed:
        lines.append("")
        lines.extend(_unattributed(timeline, timeline.unattributed, st))
    if not timeline.events:
        lines.append("")
        lines.append("no events recorded")
    return "\n".join(lines) + "\n"


def _header(tl: Timeline, st: Style) -> list[str]:
    trace = tl.trace
    h = trace.header
    out = [st(f"kpath replay {printable(trace.path or '(trace)', None)}", bold=True)]

    def row(key: str, value: str) -> None:
        out.append(f"  {key:<9}{value}")

    pt = printable
    row("kernel", f"{pt(h.kernel_release)} {pt(h.kernel_version)} ({pt(h.machine)})".strip())
    row("host", f"{pt(h.hostname)}, started {pt(h.started or '?')}, clock {pt(h.clock)}")
    if h.command:
        code = trace.trailer.command_exit if trace.trailer else None
        row("command", " ".join(printable_list(h.command))
            + (f" (exit {pt(code)})" if code is not None else ""))
    if h.filters:
        row("filters", ", ".join(f"{k}={v}" for k, v in sorted(printable_items(h.filters))))
    row("backend", f"{pt(h.backend)} {pt(h.buffer)}, profile {pt(h.profile)}, "
        f"kpath {pt(h.tool_version or '?')}")
    stopped = pt(trace.trailer.reason) if trace.trailer else "not recorded (no trailer)"
    span = ""
    if tl.events:
        span = f" (events span {fmt_duration(tl.events[-1].ev.ts_ns - tl.events[0].ev.ts_ns)})"
    row("duration", f"{fmt_duration(tl.duration_ns)}{span}, stopped: {stopped}")
    lost = trace.lost_total
    lost_txt = st(f"lost {pt(lost)}", fg="red", bold=True) if lost else "lost 0"
    row("events", f"{len(tl.events)}, {lost_txt}")
    attached, missing = h.attached, h.missing
    row("probes", f"{len(attached)} attached, {len(missing)} missing"
        + (f" ({', '.join(printable_list(h.attach_kinds))})" if h.attach_kinds else ""))
    coverage = printable_items(h.coverage)
    if coverage:
        seen = {"full": "observable", "partial": "partly observable", "none": "NOT observable"}
        text = ", ".join(f"{layer} {seen.get(c, c)}" for layer, c in coverage)
        partial = any(c != "full" for _, c in coverage)
        for i, chunk in enumerate(textwrap.wrap(text, 86)):
            row("coverage" if i == 0 else "", st(chunk, fg="yellow") if partial else chunk)
    if any(p.source for p in h.probes):
        # With debug info: one probe a line, with the source of its function.
        width = max((len(_probe_label(p)) for p in attached), default=0)
        for i, p in enumerate(attached):
            row("", ("attached: " if i == 0 else " " * 10)
                + f"{_probe_label(p):<{width}}  {printable(p.source or '(no source line)')}"
                .rstrip())
    elif attached:
        names = ", ".join(_probe_label(p) for p in attached)
        for i, chunk in enumerate(textwrap.wrap(names, 86)):
            row("", ("attached: " if i == 0 else " " * 10) + chunk)
    for p in missing:
        why = printable(p.reason or "unknown reason")
        if p.detail:
            why += f": {printable(p.detail)}"
        where = f" {printable(p.source)}" if p.source else ""
        row("", st(f"missing:  {printable(p.name)}{where} ({why})", fg="yellow"))
    n_un = sum(len(s.events) for g in tl.unattributed for s in g.steps)
    row("flows", f"{len(tl.flows)}; {n_un} event(s) without a flow")
    for gap in tl.gaps:
        if not gap.is_blind:
            row("", st(f"{printable(gap.text)}, noticed at {fmt_offset(gap.offset_ns)}",
                       fg="red"))
    blind = blind_summary(tl.gaps)
    if blind:
        row("", st(printable(blind), fg="red"))
    cut = cut_short_message(trace)
    if cut:
        out.append(st(f"  !! WARNING: {printable(cut, None)}", fg="red", bold=True))
    return out


def _probe_label(p: ProbeStatus) -> str:
    """'__sys_sendto (entry+return)'."""
    kinds = printable_list(p.kinds)
    return printable(p.name) + (f" ({'+'.join(kinds)})" if kinds else "")


def _flow(tl: Timeline, fl: Flow, st: Style) -> list[str]:
    out = [st(f"flow {fl.number}: {fl.title}", bold=True)]
    how = ("roles from the handshake" if fl.roles_from is RolesFrom.HANDSHAKE
           else "no handshake seen: the lower port is taken as the server")
    bases = ", ".join(
        f"{role} {'ISN' if fl.isn_from_syn.get(ep) else 'first seq'} {fl.isn[ep]}"
        for role, ep in (("client", fl.client), ("server", fl.server)) if ep in fl.isn
    )
    out.append(f"  {how}; {_netns_text(fl)}")
    if bases:
        out.append(f"  seq/ack relative to {bases}")
    for stream in fl.streams.values():
        for problem in stream.problems:
            out.append(st(f"  !! {stream.sender} -> {stream.receiver}: {problem}", fg="yellow"))
    n_msg = sum(isinstance(s, Message) for s in fl.steps)
    n_pkt = sum(isinstance(s, Packet) for s in fl.steps)
    out.append(f"  {len(fl.steps)} steps ({n_msg} messages, {n_pkt} packets, "
               f"{len(fl.steps) - n_msg - n_pkt} other), {len(fl.events)} events, "
               f"{fmt_offset(fl.start_ns - tl.start_ns)} .. {fmt_offset(fl.end_ns - tl.start_ns)}")
    blind = blind_summary(fl.gaps)
    if blind:
        out.append(st(f"  !! {printable(blind)}", fg="red"))
    out.extend(_steps(tl, fl.steps, fl, [g for g in fl.gaps if not g.is_blind], st))
    return out


def _netns_text(fl: Flow) -> str:
    """'netns 4026531840', or one per end for a connection across namespaces."""
    ends = [fl.netns_of.get(fl.client, 0), fl.netns_of.get(fl.server, 0)]
    if ends[0] == ends[1] or 0 in ends:
        return f"netns {fl.netns or '?'}"
    return f"netns client {ends[0]}, server {ends[1]}"


def _unattributed(tl: Timeline, groups: Sequence[ThreadGroup], st: Style) -> list[str]:
    n = sum(len(s.events) for g in groups for s in g.steps)
    out = [st(f"unattributed: {n} event(s) without a flow, by thread", bold=True)]
    for g in groups:
        out.append(f"  thread {printable(g.title)}")
        out.extend(_steps(tl, g.steps, None, [], st))
    return out


def _step_title(tl: Timeline, step: Step) -> str:
    title = f"#{step.id} {step.kind}  {printable(step.title)}"
    if isinstance(step, Message):
        if step.byte_range is not None:
            title += f"  {'wrote' if step.op == 'send' else 'read'} {step.byte_range}"
        if step.packets:
            title += "  -> " + " ".join(f"#{p}" for p in step.packets)
        if step.handled:
            title += "  handled " + " ".join(f"#{p}" for p in step.handled)
        if step.data_from:
            title += "  bytes from " + " ".join(f"#{p}" for p in step.data_from)
        links = carriers(tl, step)
        if links:
            title += "  carried by " + ", ".join(f"#{p.id} {r}" for p, r in links)
    elif isinstance(step, Packet):
        if step.byte_range is not None:
            title += f"  bytes {step.byte_range}"
        sends = writers(tl, step)
        if sends:
            title += "  of " + ", ".join(f"#{m.id} {r}" for m, r in sends)
        if step.message is not None:
            title += f"  (sent in #{step.message})"
        if step.read_by:
            title += "  read by " + " ".join(f"#{m}" for m in step.read_by)
    return title


@functools.lru_cache(maxsize=4)
def _depths(tl: Timeline) -> dict[int, int]:
    return call_depths(tl, call_ends(tl))


def fmt_hop(ns: int | None) -> str:
    """Compact time since the previous event of the step: '850 ns', '12.3 us', '1.67 ms'."""
    if ns is None:
        return ""
    # Negative only where a step's events are out of time order (a merged
    # trace's hosts within the offset's uncertainty, a lead-in joined late).
    sign, ns = ("-", -ns) if ns < 0 else ("+", ns)
    if ns < 1_000:
        return f"{sign}{ns} ns"
    if ns < 1_000_000:
        return f"{sign}{ns / 1e3:.1f} us"
    if ns < 1_000_000_000:
        return f"{sign}{ns / 1e6:.2f} ms"
    return f"{sign}{ns / 1e9:.2f} s"


def hops(step: Step) -> dict[int, int]:
    """Event index -> ns since the previous event of its step."""
    return {b.index: b.ev.ts_ns - a.ev.ts_ns
            for a, b in zip(step.events, step.events[1:], strict=False)}


def _steps(tl: Timeline, steps: Sequence[Step], fl: Flow | None, gaps: Sequence[LostGap],
           st: Style) -> list[str]:
    events = [te for s in steps for te in s.events]
    if not events:
        return []
    depth = _depths(tl)

    def fn(te: TEvent) -> str:
        return printable("  " * min(depth.get(te.index, 0), MAX_INDENT) + _fn(te), MAX_FN_W)

    def ctx(te: TEvent) -> str:
        return printable(te.context, MAX_CTX_W)

    hop_of: dict[int, int] = {}
    for s in steps:
        hop_of.update(hops(s))
    w_off = max(len(fmt_offset(te.offset_ns)) for te in events)
    w_hop = max(len(fmt_hop(hop_of.get(te.index))) for te in events)
    w_fn = max(len(fn(te)) for te in events)
    w_ctx = max(len(ctx(te)) for te in events)
    pending = list(gaps)
    out: list[str] = []
    for s in steps:
        while pending and pending[0].ts_ns < s.start_ns:
            out.append(_gap_line(pending.pop(0), st))
        out.append("")
        out.append("  " + st(_step_title(tl, s), bold=True))
        for te in s.events:
            side = str(te.side) if te.side else "-"
            details = event_details(te, fl)
            if wire_crossing(s, te) is not None:
                details = f"{details}  {st(WIRE_MARK, fg='yellow')}".lstrip()
            elif te.handoff:
                details = f"{details}  {st(HANDOFF_MARK, fg='yellow')}".lstrip()
            cols = [
                fmt_offset(te.offset_ns).rjust(w_off),
                st(fmt_hop(hop_of.get(te.index)).rjust(w_hop), fg="bright_black"),
                st(f"{side:<6}", fg=SIDE_COLORS.get(side)),
                f"{str(te.layer) if te.layer else '?':<7}",
                f"{fn(te):<{w_fn}}",
                st(f"{ctx(te):<{w_ctx}}", fg=CTX_COLORS.get(str(te.ev.ctx))),
                details,
            ]
            out.append(("    " + "  ".join(cols)).rstrip())
    for gap in pending:
        out.append(_gap_line(gap, st))
    return out


def _fn(te: TEvent) -> str:
    return f"{te.probe} return" if te.is_return else f"{te.probe}"


def _gap_line(gap: LostGap, st: Style) -> str:
    return "  " + st(
        f"~~ {printable(gap.text)}, noticed at {fmt_offset(gap.offset_ns)}: "
        "events before this point may be missing ~~", fg="red", bold=True)
