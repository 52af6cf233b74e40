"""One self-contained HTML page: the sequence diagram (graphviz SVG, inline),
a per-packet latency table, filtering by flow and packet, hover details.

Works offline: the stylesheet and script (viz/assets/) and the event data
(JSON, the same records as `kpath replay --format json`) are inlined, the
SVG is inlined without its XML prolog, doctype or namespace URIs, and a
Content-Security-Policy forbids the page any fetch. The URL hash sets the
filter (#flow=1&step=4); #...&selftest=1 makes the script write a JSON
report of what it shows into #kpath-selftest (the tests read it back from
headless Chromium).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracer.timeline import Packet, TEvent, Timeline
from viz.escape import html_text
from viz.jsonout import event_record, step_record
from viz.select import View
from viz.sequence import CONTEXTS, SequenceDiagram, fmt_offset, probe_sources
from viz.spans import call_depths, call_ends
from viz.text import fmt_hop

ASSETS = Path(__file__).resolve().parent / "assets"
CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "img-src data:")
LEGEND = {"task": ("#1565c0", "#bbdefb"), "softirq": ("#e65100", "#ffe0b2"),
          "ksoftirqd": ("#8e24aa", "#e1bee7"), "hardirq": ("#c62828", "#ffcdd2")}


@dataclass(frozen=True, slots=True)
class Hop:
    src: str
    dst: str
    ns: int


@dataclass(frozen=True, slots=True)
class PacketLatency:
    """Where one packet's time went (computed here from its events)."""

    step: int
    flow: int | None
    label: str
    direction: str
    start_ns: int  # offset of its first event
    events: int
    tx_ns: int | None  # first to last event on the sender's side
    wire_ns: int | None  # sender's last event to receiver's first
    rx_ns: int | None  # receiver's first to last event
    total_ns: int
    slowest: Hop | None
    sent_by: int | None
    read_by: list[int]


def packet_latency(tl: Timeline, pkt: Packet) -> PacketLatency:
    evs = pkt.events
    tx, rx = pkt.tx_events, pkt.rx_events

    def span(part: list[TEvent]) -> int | None:
        return part[-1].ev.ts_ns - part[0].ev.ts_ns if part else None

    wire = rx[0].ev.ts_ns - tx[-1].ev.ts_ns if tx and rx else None
    hops = [Hop(a.probe, b.probe, b.ev.ts_ns - a.ev.ts_ns)
            for a, b in zip(evs, evs[1:], strict=False)]
    return PacketLatency(
        step=pkt.id, flow=pkt.flow, label=pkt.label, direction=pkt.direction,
        start_ns=evs[0].offset_ns, events=len(evs), tx_ns=span(tx), wire_ns=wire,
        rx_ns=span(rx), total_ns=evs[-1].ev.ts_ns - evs[0].ev.ts_ns,
        slowest=max(hops, key=lambda h: h.ns) if hops else None,
        sent_by=pkt.message, read_by=list(pkt.read_by))


def inline_svg(svg: bytes) -> str:
    """Graphviz SVG made fit for inlining: no prolog, doctype, comments,
    namespace URIs or per-node <title> tooltips (the page has its own)."""
    text = svg.decode("utf-8")
    text = re.sub(r"<\?xml[^>]*\?>", "", text)
    text = re.sub(r"<!DOCTYPE[^>]*>", "", text, flags=re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)
    text = re.sub(r"<title>.*?</title>", "", text, flags=re.S)
    return text.strip()


def _json_script(data: Any) -> str:
    # "</" would end the script element early; "<!--" could start a comment state
    text = json.dumps(data, separators=(",", ":"), sort_keys=True)
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def _num(ns: int | None) -> str:
    return "" if ns is None else fmt_hop(ns).lstrip("+")


def render_html(timeline: Timeline, view: View, diagram: SequenceDiagram, svg: bytes) -> str:
    tl = timeline
    trace = tl.trace
    h = trace.header
    esc = html_text
    packets = view.packets
    lat = [packet_latency(tl, p) for p in packets]
    # data for hover and filtering: drawn events, and the steps they belong to
    ends = call_ends(tl)
    depth = call_depths(tl, ends)
    drawn = {a.event for a in diagram.all_arrows}
    steps_used = {tl.events[i].step for i in drawn} | {p.id for p in packets}
    steps_used |= {m for p in packets for m in ([p.message] if p.message is not None else [])}
    steps_used |= {m for p in packets for m in p.read_by}
    events: dict[str, Any] = {}
    for i in sorted(drawn):
        te = tl.events[i]
        st = tl.steps[te.step]
        fl = tl.flows[te.flow - 1] if te.flow is not None else None
        pos = st.events.index(te)
        hop = te.ev.ts_ns - st.events[pos - 1].ev.ts_ns if pos else None
        events[str(i)] = event_record(te, fl, depth.get(i, 0), hop)
    steps: dict[str, Any] = {}
    for i in sorted(steps_used):
        st = tl.steps[i]
        steps[str(i)] = step_record(st, tl)
    data = {"events": events, "steps": steps,
            "flows": [{"number": fv.flow.number, "title": fv.flow.title} for fv in view.flows]}
    # file:line of each probed function, when the trace has them (--vmlinux)
    sources = probe_sources(h.probes)
    if sources:
        data["sources"] = sources

    name = trace.path.rsplit("/", 1)[-1] if trace.path else "trace"
    flow_opts = "".join(f'<option value="{fv.flow.number}">flow {fv.flow.number}: '
                        f"{esc(fv.flow.title)}</option>" for fv in view.flows)
    step_opts = "".join(f'<option value="{p.step}">#{p.step} {esc(p.label)} '
                        f"{esc(p.direction)}</option>" for p in lat)
    legend = "".join(
        f'<span class="ctx" style="color:{LEGEND[c][0]};background:{LEGEND[c][1]};'
        f'border-color:{LEGEND[c][0]}">{c}</span>'
        for c in (str(x) for x in CONTEXTS) if c in diagram.contexts)
    rows = []
    for p in lat:
        slow = f"{esc(p.slowest.src)} &rarr; {esc(p.slowest.dst)} ({_num(p.slowest.ns)})" \
            if p.slowest else ""
        reads = " ".join(f"#{m}" for m in p.read_by)
        rows.append(
            f'<tr data-flow="{p.flow or 0}" data-step="{p.step}"><td>#{p.step}</td>'
            f"<td>{p.flow or ''}</td><td>{esc(p.label)}</td><td>{esc(p.direction)}</td>"
            f'<td class="num">{fmt_offset(p.start_ns)}</td><td class="num">{p.events}</td>'
            f'<td class="num">{_num(p.tx_ns)}</td><td class="num">{_num(p.wire_ns)}</td>'
            f'<td class="num">{_num(p.rx_ns)}</td><td class="num">{_num(p.total_ns)}</td>'
            f"<td>{slow}</td><td>{'#' + str(p.sent_by) if p.sent_by is not None else ''}</td>"
            f"<td>{reads}</td></tr>")
    notices = "".join(f'<p class="note">{esc(n)}</p>' for n in diagram.notices)
    lost = trace.lost_total
    meta = (f"kernel <b>{esc(h.kernel_release)}</b> on <b>{esc(h.hostname)}</b>, started "
            f"{esc(h.started or '?')}; <b>{len(tl.events)}</b> events, "
            f"<b>{esc(lost)}</b> lost; {len(tl.flows)} flow(s); drawn: {len(diagram.arrows)} "
            f"events of {len(view.drawn_steps)} steps")
    if trace.cut_short:
        meta += f"; <b>trace cut short</b>: {esc(trace.cut_short, None)}"
    css = (ASSETS / "kpath.css").read_text(encoding="utf-8")
    js = (ASSETS / "kpath.js").read_text(encoding="utf-8")
    if sources:
        js += (ASSETS / "kpath_sources.js").read_text(encoding="utf-8")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="kpath export -f html">
<title>kpath: {esc(name, None)}</title>
<style>
{css}</style>
</head>
<body>
<header>
<h1>kpath: {esc(name, None)}</h1>
<div class="meta">{meta}</div>
</header>
<div id="controls">
<label for="f-flow">flow</label>
<select id="f-flow"><option value="">all</option>{flow_opts}</select>
<label for="f-step">packet</label>
<select id="f-step"><option value="">all</option>{step_opts}</select>
<button id="f-clear" type="button">clear</button>
<button id="z-out" type="button" title="zoom out">&minus;</button>
<button id="z-in" type="button" title="zoom in">+</button>
<button id="z-fit" type="button" title="fit the width">fit</button>
<span id="f-status"></span>
<span class="legend">context: {legend}</span>
</div>
<div id="layout">
<section id="diagram" aria-label="sequence diagram">
{inline_svg(svg)}
</section>
<aside id="details"><div id="details-body"><h2>Details</h2>
<p class="hint">Hover an arrow for its event; pick a flow or a packet above, or click a
row of the table, to highlight it (the URL remembers the choice).</p>{notices}</div></aside>
</div>
<section id="latency">
<h2>Per-packet latency ({len(lat)} packets)</h2>
<p class="note">tx: sender's first to last event; wire: sender's last event to the
receiver's first; rx: receiver's first to last; slowest hop: the longest gap between two
consecutive events of the packet.</p>
<table id="lat">
<thead><tr><th>step</th><th>flow</th><th>packet</th><th>direction</th><th>first event</th>
<th>events</th><th>tx</th><th>wire</th><th>rx</th><th>total</th><th>slowest hop</th>
<th>sent by</th><th>read by</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
</section>
<pre id="kpath-selftest" hidden></pre>
<script type="application/json" id="kpath-data">{_json_script(data)}</script>
<script>
{js}</script>
</body>
</html>
"""
