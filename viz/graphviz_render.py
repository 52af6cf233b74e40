"""Sequence diagram through graphviz: dot source, or svg/png/pdf via neato.

Graphviz has no sequence-diagram layout, so this one computes it: x per
lifeline, y per row, every node pinned with pos="x,y!" and rendered by
`neato -n2` (keep positions, draw straight edges). Lifelines are dashed
vertical edges between a header and a footer box; an arrow is an edge
between two invisible points on its row; its label is a plaintext node just
above it (to the right of a self-arrow). Activation bars are fixed-size boxes
on the lifelines, shifted right by their nesting depth. Arrows are coloured by
execution context; hand-offs are bold with the context they hand off to as a
third label line, wake-ups dashed green; folded blocks sit in a dashed frame.

SVG elements carry ids and classes (`ev<N>` for event N's label, `ev<N>_e`
for its edge, classes kp_flow_F kp_step_S) that the HTML export uses for
hover and filtering. Same diagram in, same bytes out.
"""

from __future__ import annotations

import math
import re

import graphviz

from tracer.timeline import Role
from viz.escape import dot_string, html_text
from viz.sequence import APP, Activation, Arrow, Frame, Note, SequenceDiagram

FORMATS = ("svg", "png", "pdf", "dot")
ENGINE = "neato"

ROW_H = 36.0  # points between rows
ROW_H_TALL = 46.0  # rows whose label has a third line (hand-off, wake-up)
FRAME_H = 22.0  # rows that open or close a folded block
MIN_COL_W, MAX_COL_W = 120.0, 240.0
FONT = "Helvetica"
FONT_SIZE, TIME_SIZE, HEAD_SIZE = 9.0, 8.0, 11.0
CHAR_W = 0.6  # average glyph width / font size, a safe overestimate for sans fonts
BAR_W = 7.0  # activation bar width, points
BAR_SHIFT = 4.0  # each nesting level shifts a bar right by this much
MAX_DEPTH = 6  # deeper bars are drawn at this depth
MAX_PX = 30000  # cairo cannot make a bitmap taller or wider than 32767 px
# Pixels of a bitmap at most: cairo holds it whole (4 bytes a pixel) and
# zlib then deflates all of it; a capped 600-arrow picture at 96 dpi is
# 130 Mpx, 520 MB and ~3.5 s of rasterising and encoding.
MAX_AREA = 72e6

ROLE_COLOR = {Role.CLIENT: "#1f5fa8", Role.SERVER: "#2e7d32"}
ROLE_FILL = {Role.CLIENT: "#dce8f7", Role.SERVER: "#ddf0de"}
# Lifelines of layers the kernel traced could not show.
UNSEEN, UNSEEN_FILL = "#9e9e9e", "#eeeeee"
# Execution contexts: arrow colour and activation-bar fill.
CTX_COLOR = {"task": "#1565c0", "softirq": "#e65100", "ksoftirqd": "#8e24aa",
             "hardirq": "#c62828"}
CTX_FILL = {"task": "#bbdefb", "softirq": "#ffe0b2", "ksoftirqd": "#e1bee7",
            "hardirq": "#ffcdd2"}
WAKEUP_COLOR = "#2e7d32"
LOST_COLOR = "#c62828"
LINE_COLOR = "#9e9e9e"
FRAME_COLOR = "#616161"


class GraphvizUnavailable(Exception):
    """The graphviz layout binary is not installed."""


class RenderError(Exception):
    """Graphviz failed; the message is its first line of complaint."""


def _width(text: str, size: float) -> float:
    return len(text) * size * CHAR_W


def _pos(x: float, y: float) -> str:
    return f"{x:.1f},{y:.1f}!"


def _point(g: graphviz.Digraph, name: str, x: float, y: float) -> None:
    """An invisible anchor for an arrow end."""
    g.node(name, "", shape="point", width="0", height="0", style="invis", pos=_pos(x, y))


def _table(rows: list[str], align: str = "center") -> str:
    """An HTML-like label on a white table: covers the lifelines it crosses
    (a filled node does not, for HTML labels, in cairo output)."""
    cells = "".join(f'<tr><td align="{align}">{r}</td></tr>' for r in rows)
    return (f'<<table border="0" cellborder="0" cellspacing="0" cellpadding="1" '
            f'bgcolor="white">{cells}</table>>')


def _esc(text: str) -> str:
    return html_text(text, None)


def _color(arrow: Arrow) -> str:
    if arrow.is_link:
        return WAKEUP_COLOR
    return CTX_COLOR.get(arrow.ctx, "#424242")


def _label_lines(arrow: Arrow) -> list[str]:
    lines = [_esc(arrow.text or " ")]
    lines.append(f'<font point-size="{TIME_SIZE:g}" color="#616161">{_esc(arrow.time)}</font>')
    if arrow.handoff_label:
        what = arrow.handoff_label if arrow.is_link else f"hand-off to {arrow.handoff_label}"
        lines.append(f'<font point-size="{TIME_SIZE:g}" color="{_color(arrow)}"><b>'
                     f'{_esc(what)}</b></font>')
    return lines


def _label(arrow: Arrow) -> str:
    # self-arrow labels hang to the right of their loop
    return _table(_label_lines(arrow), "left" if arrow.is_self else "center")


_LABEL_NODE = {"shape": "plaintext", "margin": "0", "width": "0", "height": "0"}


def _column_width(diagram: SequenceDiagram) -> float:
    """Wide enough for the widest label over the lifelines it spans."""
    need = MIN_COL_W
    for row in diagram.rows:
        if isinstance(row, Arrow) and not row.is_self:
            span = abs(diagram.index_of(row.src) - diagram.index_of(row.dst))
            need = max(need, (_width(row.text, FONT_SIZE) + 16) / span)
    return min(need, MAX_COL_W)


def _row_heights(diagram: SequenceDiagram) -> list[float]:
    out = []
    for row in diagram.rows:
        if isinstance(row, Frame):
            out.append(FRAME_H)
        elif isinstance(row, Arrow) and row.handoff_label:
            out.append(ROW_H_TALL)
        else:
            out.append(ROW_H)
    return out


def _classes(arrow: Arrow) -> str:
    out = f"kp_arrow kp_{arrow.kind} kp_ctx_{arrow.ctx} kp_step_{arrow.step}"
    return out + (f" kp_flow_{arrow.flow}" if arrow.flow is not None else "")


def build_graph(diagram: SequenceDiagram, fmt: str = "dot") -> graphviz.Digraph:
    """The positioned graph (render it with neato -n2)."""
    g = graphviz.Digraph("kpath", engine=ENGINE)
    col_w = _column_width(diagram)
    xs = {ll.key: i * col_w for i, ll in enumerate(diagram.lifelines)}
    x_min, x_max = 0.0, max(xs.values(), default=0.0)
    heights = _row_heights(diagram)
    legend_h = 70.0
    total = sum(heights) + 2 * ROW_H
    top = total
    bottom = 0.0
    ys: list[float] = []
    y = top - 0.7 * ROW_H
    for h in heights:
        y -= h
        ys.append(y + (h - ROW_H) if h > ROW_H else y)  # tall rows: extra room above
    graph_attrs = {
        "label": diagram.title, "labelloc": "t", "fontname": FONT, "fontsize": "14",
        "outputorder": "edgesfirst", "splines": "line", "bgcolor": "white", "pad": "0.3",
    }
    if fmt == "png":
        # A bitmap has a size limit: lower the resolution for very tall diagrams.
        height_pt = total + legend_h + 60
        width_pt = x_max - x_min + 2 * col_w
        dpi = min(96.0, MAX_PX * 72.0 / max(height_pt, width_pt),
                  72.0 * math.sqrt(MAX_AREA / (height_pt * width_pt)))
        graph_attrs["dpi"] = f"{dpi:.1f}"
    g.attr("graph", **graph_attrs)
    g.attr("node", fontname=FONT, fontsize=f"{FONT_SIZE:g}")
    g.attr("edge", fontname=FONT, arrowsize="0.7")

    for ll in diagram.lifelines:
        x = xs[ll.key]
        style = "rounded,filled,bold" if ll.layer == APP else "rounded,filled"
        fill, edge, font = ROLE_FILL[ll.role], ROLE_COLOR[ll.role], "black"
        if not ll.observable:
            style, fill, edge, font = "rounded,filled,dashed", UNSEEN_FILL, UNSEEN, UNSEEN
        label = ll.label if ll.observable else f"{ll.label}\nnot observable\non this kernel"
        for end, yy in (("head", top), ("foot", bottom)):
            g.node(f"{ll.key}_head" if end == "head" else f"{ll.key}_foot", label,
                   shape="box", style=style, fillcolor=fill, color=edge, fontcolor=font,
                   fontsize=f"{HEAD_SIZE:g}", pos=_pos(x, yy), tooltip=ll.caption)
        g.edge(f"{ll.key}_head", f"{ll.key}_foot", dir="none",
               style="dashed" if ll.observable else "dotted",
               color=LINE_COLOR if ll.observable else UNSEEN)

    def bar_x(key: str, depth: int) -> float:
        return xs[key] + min(depth, MAX_DEPTH) * BAR_SHIFT

    for i, act in enumerate(diagram.activations):
        _bar(g, f"a{i}", act, bar_x(act.lifeline, act.depth), ys)

    frames: list[tuple[int, Frame]] = []
    for i, row in enumerate(diagram.rows):
        y = ys[i]
        rid = f"r{i}"
        if isinstance(row, Note):
            _note(g, rid, row, x_min - col_w / 3, x_max + col_w / 3, y)
            continue
        if isinstance(row, Frame):
            if not row.end:
                frames.append((i, row))
            else:
                start, opened = frames.pop()
                _frame(g, rid, opened, x_min - col_w / 4, x_max + col_w / 4,
                       ys[start] + FRAME_H / 2, y - FRAME_H / 4)
            continue
        _arrow(g, rid, row, i, diagram, bar_x, y)
    _legend(g, diagram, (x_min + x_max) / 2, bottom - 40)
    return g


def _arrow(g: graphviz.Digraph, rid: str, row: Arrow, i: int, diagram: SequenceDiagram,
           bar_x: object, y: float) -> None:
    assert callable(bar_x)
    color = _color(row)
    if row.is_link:
        style, pen, head = "dashed", "1.6", "vee"
    elif row.dashed:
        style, pen, head = "dashed", "1", "normal"
    elif row.handoff:
        style, pen, head = "bold", "2.2", "onormal"
    else:
        style, pen, head = "solid", "1.8" if row.wire else "1", "normal"
    edge_attrs = {"color": color, "style": style, "penwidth": pen, "arrowhead": head,
                  "class": _classes(row)}
    tip = _tooltip(row)
    if tip:
        edge_attrs["tooltip"] = tip
    # Ends attach to the side of the activation bar facing the other end.
    d_dst = diagram.depth_at(row.dst, i)
    d_src = max((a.depth for a in diagram.activations
                 if a.lifeline == row.src and a.start < i <= a.end), default=-1)
    x1 = bar_x(row.src, max(d_src, 0))
    x2 = bar_x(row.dst, max(d_dst, 0))
    half = BAR_W / 2
    if row.is_self:
        x1 += half if d_src >= 0 else 0
        x2 += half if d_dst >= 0 else 0
        loop = 20.0
        _point(g, f"{rid}_a", x1, y + 7)
        _point(g, f"{rid}_b", x1 + loop, y + 7)
        _point(g, f"{rid}_c", x1 + loop, y - 5)
        _point(g, f"{rid}_d", x2, y - 5)
        plain = {**edge_attrs, "arrowhead": "none", "class": _classes(row)}
        g.edge(f"{rid}_a", f"{rid}_b", **plain)
        g.edge(f"{rid}_b", f"{rid}_c", **plain)
        g.edge(f"{rid}_c", f"{rid}_d", id=f"{row.element_id}_e", **edge_attrs)
        lines = [row.text, row.time, row.handoff_label + " hand-off to"]
        w = max(_width(t, FONT_SIZE) for t in lines)
        lx, ly = x1 + loop + 6 + w / 2, y + 1
    else:
        right = x2 > x1
        if d_src >= 0:
            x1 += half if right else -half
        if d_dst >= 0:
            x2 += -half if right else half
        _point(g, f"{rid}_a", x1, y)
        _point(g, f"{rid}_b", x2, y)
        g.edge(f"{rid}_a", f"{rid}_b", id=f"{row.element_id}_e", **edge_attrs)
        extra = 5.0 if row.handoff_label else 0.0
        lx, ly = (x1 + x2) / 2, y + 13 + extra
    node_id = row.element_id
    g.node(f"{rid}_label", _label(row), pos=_pos(lx, ly), id=node_id, **{"class": _classes(row)},
           **({"tooltip": tip} if tip else {}), **_LABEL_NODE)


def _tooltip(arrow: Arrow) -> str:
    """'tcp_push: net/ipv4/tcp.c:706' when the trace knows the function's
    source (kpath trace --vmlinux), else nothing (no tooltip at all)."""
    if not arrow.source:
        return ""
    return dot_string(f"{arrow.probe}{' return' if arrow.kind == 'return' else ''}: "
                      f"{arrow.source}", None)


def _bar(g: graphviz.Digraph, name: str, act: Activation, x: float, ys: list[float]) -> None:
    y1 = ys[act.start] + 6  # a little above the arrow that starts it
    y2 = ys[act.end] - 6
    h = max(y1 - y2, 10.0)
    g.node(name, "", shape="box", fixedsize="true", width=f"{BAR_W / 72:.4f}",
           height=f"{h / 72:.4f}", style="filled", fillcolor=CTX_FILL.get(act.ctx, "#eeeeee"),
           color=CTX_COLOR.get(act.ctx, "#424242"), penwidth="0.8",
           pos=_pos(x, (y1 + y2) / 2), id=f"act{act.event}", **{"class": "kp_bar"})


def _note(g: graphviz.Digraph, rid: str, note: Note, x1: float, x2: float, y: float) -> None:
    lost = note.kind == "lost"
    color = LOST_COLOR if lost else LINE_COLOR
    _point(g, f"{rid}_a", x1, y)
    _point(g, f"{rid}_b", x2, y)
    g.edge(f"{rid}_a", f"{rid}_b", dir="none", color=color,
           style="dashed" if lost else "solid", penwidth="1.5" if lost else "1")
    text = _esc(note.text)
    weight = f"<b>{text}</b>" if note.kind == "flow" else text
    label = _table([f'<font color="{color if lost else "#212121"}">{weight}</font>'])
    g.node(f"{rid}_label", label, fontsize="10", pos=_pos((x1 + x2) / 2, y + 10),
           **_LABEL_NODE)


def _frame(g: graphviz.Digraph, rid: str, frame: Frame, x1: float, x2: float,
           y_top: float, y_bottom: float) -> None:
    """A dashed box around a folded block, its count at the top left."""
    g.node(f"{rid}_frame", "", shape="box", fixedsize="true", style="dashed",
           color=FRAME_COLOR, penwidth="1.2", width=f"{(x2 - x1) / 72:.4f}",
           height=f"{(y_top - y_bottom) / 72:.4f}",
           pos=_pos((x1 + x2) / 2, (y_top + y_bottom) / 2), **{"class": "kp_fold"})
    text = _esc(frame.text)
    w = _width(frame.text, FONT_SIZE)
    g.node(f"{rid}_flabel", _table([f'<font color="{FRAME_COLOR}"><b>{text}</b></font>'],
                                   "left"),
           pos=_pos(x1 + 6 + w / 2, y_top - 8), **_LABEL_NODE)


def _legend(g: graphviz.Digraph, diagram: SequenceDiagram, x: float, y: float) -> None:
    cells = []
    for ctx in diagram.contexts or ["task"]:
        cells.append(f'<td bgcolor="{CTX_FILL[ctx]}"><font color="{CTX_COLOR[ctx]}">'
                     f'<b>{ctx}</b></font></td>')
    ctx_row = "".join(cells)
    what = ("thick: the packet on the wire; bold with hollow head: hand-off to another "
            "execution context (label says which); dashed: return; green dashed: wake-up of "
            "a waiting reader; bars: calls in progress; dashed frame: folded repetitions")
    label = (f'<<table border="0" cellborder="1" cellspacing="2" cellpadding="3" '
             f'bgcolor="white"><tr><td border="0"><font point-size="8">arrow colour = '
             f'execution context:</font></td>{ctx_row}</tr>'
             f'<tr><td border="0" colspan="{len(cells) + 1}"><font point-size="8" '
             f'color="#616161">{_esc(what)}; times from trace start</font></td></tr></table>>')
    g.node("legend", label, pos=_pos(x, y), **_LABEL_NODE)


def render_dot(diagram: SequenceDiagram) -> str:
    """DOT source with pinned positions; draw it with `neato -n2 -Tsvg`."""
    header = "// kpath sequence diagram; render with: neato -n2 -Tsvg FILE.dot -o FILE.svg\n"
    source: str = build_graph(diagram).source
    return header + source


def render(diagram: SequenceDiagram, fmt: str) -> bytes:
    """svg/png/pdf bytes (or the dot source, encoded). Raises
    GraphvizUnavailable when neato is missing, RenderError when it fails."""
    if fmt == "dot":
        return render_dot(diagram).encode()
    if fmt not in FORMATS:
        raise ValueError(f"unknown graphviz format {fmt!r}")
    g = build_graph(diagram, fmt)
    try:
        out: bytes = g.pipe(format=fmt, engine=ENGINE, neato_no_op=2, quiet=True)
    except graphviz.ExecutableNotFound:
        raise GraphvizUnavailable(
            f"graphviz '{ENGINE}' not found on PATH: install graphviz (apt install graphviz)"
        ) from None
    except graphviz.CalledProcessError as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        first = next((ln for ln in stderr.splitlines() if ln.strip()), f"exit {exc.returncode}")
        raise RenderError(f"graphviz {ENGINE} failed: {first}") from None
    if fmt == "pdf":
        # cairo stamps the current time (and ignores SOURCE_DATE_EPOCH before
        # 1.17): pin it, same length so the xref offsets stay valid.
        out = _PDF_DATE.sub(rb"\1(D:19700101000000Z)", out)
    return out


_PDF_DATE = re.compile(rb"(/(?:CreationDate|ModDate) )\(D:\d{14}Z\)")
