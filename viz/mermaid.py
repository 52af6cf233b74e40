"""Mermaid `sequenceDiagram` text from the sequence model.

Renders unchanged on GitHub and in mermaid.live; the tests check it with
Mermaid's own parser (`mermaid.parse` under node). Mermaid cannot colour one
arrow, so execution contexts are background bands (`rect`) around the runs
of rows in the same context, named in a legend note; hand-offs and wake-ups
use the open-headed async arrows (`-)`, `--)`) and say what they are in their
label; folded blocks are `loop` frames; activation bars are
`activate`/`deactivate`.

Labels are escaped by viz/escape.py (mermaid_label): Mermaid's entity codes
for `;` (ends a statement), `#` (starts an entity), `<` and `>` (HTML to
Mermaid); line breaks become spaces.

Mermaid refuses diagrams over 50,000 characters (its maxTextSize, also
GitHub's limit): a longer diagram is cut at a row, with a closing note.
"""

from __future__ import annotations

from viz.diagram_text import LEGEND, arrow_text, bar_edits
from viz.escape import mermaid_label
from viz.sequence import Arrow, Frame, Note, SequenceDiagram

MAX_TEXT = 50_000  # Mermaid's default maxTextSize
# Background band per execution context (translucent, so notes stay readable).
CTX_BAND = {"task": "rgba(21, 101, 192, 0.08)", "softirq": "rgba(230, 81, 0, 0.12)",
            "ksoftirqd": "rgba(142, 36, 170, 0.12)", "hardirq": "rgba(198, 40, 40, 0.12)"}
CTX_NAME = {"task": "light blue", "softirq": "light orange", "ksoftirqd": "light purple",
            "hardirq": "light red"}


def render_mermaid(diagram: SequenceDiagram) -> str:
    text, _ = render_mermaid_checked(diagram)
    return text


def render_mermaid_checked(diagram: SequenceDiagram) -> tuple[str, str | None]:
    """(text, notice): notice says where the diagram was cut to fit, if it was."""
    head = ["sequenceDiagram", f"    title {mermaid_label(diagram.title)}"]
    for ll in diagram.lifelines:
        head.append(f"    participant {ll.key} as {mermaid_label(ll.caption)}")
    first, last = diagram.lifelines[0].key, diagram.lifelines[-1].key
    bands = ", ".join(f"{c} = {CTX_NAME[c]} band" for c in diagram.contexts)
    if bands:
        head.append(f"    Note over {first},{last}: {mermaid_label('execution context: ' + bands)}")
        head.append(f"    Note over {first},{last}: {mermaid_label(LEGEND)}")
    n = len(diagram.rows)
    body = _body(diagram, n, first, last)
    size = sum(len(ln) + 1 for ln in head + body)
    notice = None
    if size > MAX_TEXT:
        # Binary search for the most rows that fit, keeping room for the cut note.
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if sum(len(ln) + 1 for ln in head + _body(diagram, mid, first, last)) <= MAX_TEXT - 300:
                lo = mid
            else:
                hi = mid - 1
        body = _body(diagram, lo, first, last)
        left = sum(1 for r in diagram.rows[lo:] if isinstance(r, Arrow))
        notice = (f"mermaid: cut after row {lo} of {n} to stay under Mermaid's "
                  f"{MAX_TEXT}-character limit ({left} arrows left out; narrow with --flow, "
                  "--packet, --from/--to or --max-packets)")
        body.append(f"    Note over {first},{last}: {mermaid_label(notice)}")
    return "\n".join(head + body) + "\n", notice


def _body(diagram: SequenceDiagram, n: int, first: str, last: str) -> list[str]:
    lines: list[str] = []
    edits = bar_edits(diagram, n)
    band: str | None = None  # context of the open rect
    depth = 1  # indentation level
    loops = 0

    def pad() -> str:
        return "    " * depth

    def close_band() -> None:
        nonlocal band, depth
        if band is not None:
            depth -= 1
            lines.append(pad() + "end")
            band = None

    for i, row in enumerate(diagram.rows[:n]):
        if isinstance(row, Note):
            mark = "LOST: " if row.kind == "lost" and not row.text.startswith("lost") else ""
            lines.append(f"{pad()}Note over {first},{last}: {mermaid_label(mark + row.text)}")
        elif isinstance(row, Frame):
            close_band()
            if row.end:
                if loops:
                    loops -= 1
                    depth -= 1
                    lines.append(pad() + "end")
            else:
                lines.append(f"{pad()}loop {mermaid_label(row.text)}")
                loops += 1
                depth += 1
        else:
            if row.ctx != band:
                close_band()
                lines.append(f"{pad()}rect {CTX_BAND.get(row.ctx, CTX_BAND['task'])}")
                band = row.ctx
                depth += 1
            label = mermaid_label(arrow_text(row))
            lines.append(f"{pad()}{row.src}{_arrow(row)}{row.dst}: {label}")
        for key in edits.closes.get(i, []):
            lines.append(f"{pad()}deactivate {key}")
        for act in edits.opens.get(i, []):
            lines.append(f"{pad()}activate {act.lifeline}")
    close_band()
    while loops:
        loops -= 1
        depth -= 1
        lines.append(pad() + "end")
    return lines


def _arrow(row: Arrow) -> str:
    if row.is_link:
        return "--)"
    if row.handoff and not row.dashed:
        return "-)"
    return "-->>" if row.dashed else "->>"
