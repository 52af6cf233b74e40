"""Mermaid `sequenceDiagram` text from the sequence model.

Labels are escaped with Mermaid's entity codes: `;` ends a statement and `#`
starts an entity, so both (and `<`, `>`, which Mermaid reads as HTML) are
replaced in one pass; line breaks become spaces.
"""

from __future__ import annotations

from viz.sequence import Arrow, Note, SequenceDiagram

_ESCAPES = {";": "#59;", "#": "#35;", "<": "#60;", ">": "#62;", "\n": " ", "\r": " "}


def escape(text: str) -> str:
    """Make text safe as a Mermaid label (single pass, so codes are not re-escaped)."""
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def render_mermaid(diagram: SequenceDiagram) -> str:
    lines = ["sequenceDiagram", f"    title {escape(diagram.title)}"]
    for ll in diagram.lifelines:
        lines.append(f"    participant {ll.key} as {escape(ll.label)}")
    first, last = diagram.lifelines[0].key, diagram.lifelines[-1].key
    for row in diagram.rows:
        if isinstance(row, Note):
            mark = "LOST: " if row.kind == "lost" and not row.text.startswith("lost") else ""
            lines.append(f"    Note over {first},{last}: {escape(mark + row.text)}")
            continue
        lines.append(f"    {row.src}{_arrow(row)}{row.dst}: {escape(_text(row))}")
    return "\n".join(lines) + "\n"


def _arrow(row: Arrow) -> str:
    return "-->>" if row.dashed else "->>"


def _text(row: Arrow) -> str:
    text = f"{row.text} ({row.time})" if row.text else row.time
    if row.wire:
        text = f"[wire] {text}"
    if row.handoff:
        text += " [hand-off]"
    return text
