"""Sequence diagram through graphviz: dot source, or svg/png/pdf via neato.

Graphviz has no sequence-diagram layout, so this one computes it: x per
lifeline, y per row, every node pinned with pos="x,y!" and rendered by
`neato -n2` (keep positions, draw straight edges). Lifelines are dashed
vertical edges between a header and a footer box; an arrow is an edge
between two invisible points on its row; its label is a plaintext node just
above it (to the right of a self-arrow). Same diagram in, same bytes out.
"""

from __future__ import annotations

import html
import re

import graphviz

from tracer.timeline import Role
from viz.sequence import APP, Arrow, Note, SequenceDiagram

FORMATS = ("svg", "png", "pdf", "dot")
ENGINE = "neato"

ROW_H = 36.0  # points between rows
MIN_COL_W, MAX_COL_W = 120.0, 240.0
FONT = "Helvetica"
FONT_SIZE, TIME_SIZE, HEAD_SIZE = 9.0, 8.0, 11.0
CHAR_W = 0.6  # average glyph width / font size, a safe overestimate for sans fonts

ROLE_COLOR = {Role.CLIENT: "#1f5fa8", Role.SERVER: "#2e7d32"}
ROLE_FILL = {Role.CLIENT: "#dce8f7", Role.SERVER: "#ddf0de"}
WIRE_COLOR = "#7b1fa2"
LOST_COLOR = "#c62828"
LINE_COLOR = "#9e9e9e"


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


def _label(arrow: Arrow) -> str:
    text = html.escape(arrow.text or " ", quote=False)
    time = html.escape(arrow.time, quote=False)
    return _table([text, f'<font point-size="{TIME_SIZE:g}" color="#616161">{time}</font>'],
                  "left" if arrow.is_self else "center")  # self-arrow labels hang right


_LABEL_NODE = {"shape": "plaintext", "margin": "0", "width": "0", "height": "0"}


def _column_width(diagram: SequenceDiagram) -> float:
    """Wide enough for the widest label over the lifelines it spans."""
    need = MIN_COL_W
    for row in diagram.rows:
        if isinstance(row, Arrow) and not row.is_self:
            span = abs(diagram.index_of(row.src) - diagram.index_of(row.dst))
            need = max(need, (_width(row.text, FONT_SIZE) + 16) / span)
    return min(need, MAX_COL_W)


def build_graph(diagram: SequenceDiagram) -> graphviz.Digraph:
    """The positioned graph (render it with neato -n2)."""
    g = graphviz.Digraph("kpath", engine=ENGINE)
    g.attr("graph", label=diagram.title, labelloc="t", fontname=FONT, fontsize="14",
           outputorder="edgesfirst", splines="line", bgcolor="white", pad="0.3")
    g.attr("node", fontname=FONT, fontsize=f"{FONT_SIZE:g}")
    g.attr("edge", fontname=FONT, arrowsize="0.7")
    col_w = _column_width(diagram)
    xs = {ll.key: i * col_w for i, ll in enumerate(diagram.lifelines)}
    x_min, x_max = 0.0, max(xs.values(), default=0.0)
    n = len(diagram.rows)
    top = (n + 2) * ROW_H
    bottom = 0.0

    def row_y(i: int) -> float:
        return top - (i + 1.2) * ROW_H

    for ll in diagram.lifelines:
        x = xs[ll.key]
        style = "rounded,filled,bold" if ll.layer == APP else "rounded,filled"
        for end, y in (("head", top), ("foot", bottom)):
            g.node(f"{ll.key}_{end}", ll.label, shape="box", style=style,
                   fillcolor=ROLE_FILL[ll.role], color=ROLE_COLOR[ll.role],
                   fontsize=f"{HEAD_SIZE:g}", pos=_pos(x, y))
        g.edge(f"{ll.key}_head", f"{ll.key}_foot", dir="none", style="dashed",
               color=LINE_COLOR)

    for i, row in enumerate(diagram.rows):
        y = row_y(i)
        rid = f"r{i}"
        if isinstance(row, Note):
            _note(g, rid, row, x_min - col_w / 3, x_max + col_w / 3, y)
            continue
        color = WIRE_COLOR if row.wire else ROLE_COLOR[row.role]
        edge_attrs = {
            "color": color,
            "style": "dashed" if row.dashed else "solid",
            "penwidth": "1.8" if row.wire else "1",
            # A hollow head marks a hand-off to another execution context.
            "arrowhead": "onormal" if row.handoff else "normal",
        }
        x1, x2 = xs[row.src], xs[row.dst]
        if row.is_self:
            loop = 20.0
            _point(g, f"{rid}_a", x1, y + 7)
            _point(g, f"{rid}_b", x1 + loop, y + 7)
            _point(g, f"{rid}_c", x1 + loop, y - 5)
            _point(g, f"{rid}_d", x1, y - 5)
            plain = {**edge_attrs, "arrowhead": "none"}
            g.edge(f"{rid}_a", f"{rid}_b", **plain)
            g.edge(f"{rid}_b", f"{rid}_c", **plain)
            g.edge(f"{rid}_c", f"{rid}_d", **edge_attrs)
            w = max(_width(row.text, FONT_SIZE), _width(row.time, TIME_SIZE))
            lx, ly = x1 + loop + 6 + w / 2, y + 1
        else:
            _point(g, f"{rid}_a", x1, y)
            _point(g, f"{rid}_b", x2, y)
            g.edge(f"{rid}_a", f"{rid}_b", **edge_attrs)
            lx, ly = (x1 + x2) / 2, y + 13
        g.node(f"{rid}_label", _label(row), pos=_pos(lx, ly), **_LABEL_NODE)
    legend = ("blue: client, green: server, purple: the packet on the wire, dashed: return, "
              "hollow head: hand-off to another execution context; times from trace start")
    g.node("legend", _table([f'<font point-size="8" color="#616161">{legend}</font>']),
           pos=_pos((x_min + x_max) / 2, bottom - 30), **_LABEL_NODE)
    return g


def _note(g: graphviz.Digraph, rid: str, note: Note, x1: float, x2: float, y: float) -> None:
    lost = note.kind == "lost"
    color = LOST_COLOR if lost else LINE_COLOR
    _point(g, f"{rid}_a", x1, y)
    _point(g, f"{rid}_b", x2, y)
    g.edge(f"{rid}_a", f"{rid}_b", dir="none", color=color,
           style="dashed" if lost else "solid", penwidth="1.5" if lost else "1")
    text = html.escape(note.text, quote=False)
    weight = f"<b>{text}</b>" if note.kind == "flow" else text
    label = _table([f'<font color="{color if lost else "#212121"}">{weight}</font>'])
    g.node(f"{rid}_label", label, fontsize="10", pos=_pos((x1 + x2) / 2, y + 10),
           **_LABEL_NODE)


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
    g = build_graph(diagram)
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
