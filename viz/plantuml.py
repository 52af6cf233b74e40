"""PlantUML sequence diagram text from the sequence model.

Renders unchanged with `plantuml -tsvg` (the tests run Debian's plantuml on
it). PlantUML can colour each arrow and activation bar, so colours follow the
graphviz renderer: by execution context; hand-offs are bold with an open
head (`->>`), wake-ups dashed green, returns dashed; flows are `==` dividers,
folded blocks `loop` frames.

Labels are escaped for PlantUML's creole markup by viz/escape.py
(plantuml_label).
"""

from __future__ import annotations

from viz.diagram_text import LEGEND, arrow_text, bar_edits
from viz.escape import plantuml_label, printable
from viz.graphviz_render import CTX_COLOR, CTX_FILL, LOST_COLOR, ROLE_FILL, WAKEUP_COLOR
from viz.sequence import Arrow, Frame, Note, SequenceDiagram


def _quote(text: str) -> str:
    """A participant's display name, in double quotes."""
    return '"' + printable(text).replace('"', "'") + '"'


def render_plantuml(diagram: SequenceDiagram) -> str:
    lines = ["@startuml", f"title {plantuml_label(diagram.title)}", "skinparam shadowing false",
             "skinparam sequenceMessageAlign center", "skinparam responseMessageBelowArrow true",
             "hide footbox"]
    for ll in diagram.lifelines:
        fill = ROLE_FILL[ll.role] if ll.observable else "#eeeeee"
        lines.append(f"participant {_quote(ll.caption)} as {ll.key} {fill}")
    if diagram.contexts:
        lines.append("legend top left")
        cells = " | ".join(f"<back:{CTX_FILL[c]}><color:{CTX_COLOR[c]}> {c} </color></back>"
                           for c in diagram.contexts)
        lines.append(f"arrow and bar colour = execution context: {cells}")
        lines.append(plantuml_label(LEGEND.replace("->>", "->").replace("-->>", "-->")))
        lines.append("endlegend")
    first, last = diagram.lifelines[0].key, diagram.lifelines[-1].key
    edits = bar_edits(diagram)
    for i, row in enumerate(diagram.rows):
        if isinstance(row, Note):
            if row.kind == "flow":
                lines.append(f"== {plantuml_label(row.text)} ==")
            else:
                color = f" {LOST_COLOR}" if row.kind == "lost" else ""
                lines.append(f"note over {first}, {last}{color} : {plantuml_label(row.text)}")
        elif isinstance(row, Frame):
            lines.append("end" if row.end else f"loop {plantuml_label(row.text)}")
        else:
            lines.append(f"{row.src} {_arrow(row)} {row.dst} : {plantuml_label(arrow_text(row))}")
        for key in edits.closes.get(i, []):
            lines.append(f"deactivate {key}")
        for act in edits.opens.get(i, []):
            lines.append(f"activate {act.lifeline} {CTX_FILL.get(act.ctx, '#eeeeee')}")
    lines.append("@enduml")
    return "\n".join(lines) + "\n"


def _arrow(row: Arrow) -> str:
    if row.is_link:
        return f"-[{WAKEUP_COLOR},dashed]>>"
    color = CTX_COLOR.get(row.ctx, "#424242")
    if row.dashed:
        return f"-[{color},dashed]>"
    if row.handoff:
        return f"-[{color},bold]>>"
    if row.wire:
        return f"-[{color},bold]>"
    return f"-[{color}]>"
