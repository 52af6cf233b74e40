"""What the text diagram formats (Mermaid, PlantUML) share: which
activation bars open and close after each row, and the legend wording.

Bars one row high are left out (both tools draw a bar from one message to
another). A bar that ends on the row where another starts on the same
lifeline simply continues: PlantUML refuses a deactivate and an activate of
one participant after the same message, and the picture is the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from viz.sequence import Activation, Arrow, SequenceDiagram

LEGEND = ("arrow style: ->> call, -->> return, -) hand-off to another execution context "
          "(label says which), --) wake-up of a waiting reader, [wire]: the packet crossing "
          "to the receiver; bars: calls in progress")


@dataclass(slots=True)
class BarEdits:
    opens: dict[int, list[Activation]] = field(default_factory=dict)  # row -> bars opened after it
    closes: dict[int, list[str]] = field(default_factory=dict)  # row -> lifelines closed after it


def bar_edits(diagram: SequenceDiagram, rows: int | None = None) -> BarEdits:
    """Bars of the first `rows` rows (all by default); bars still open at
    the cut are closed on its last row."""
    n = len(diagram.rows) if rows is None else rows
    out = BarEdits()
    for act in diagram.activations:
        if act.end <= act.start or act.start >= n - 1:
            continue
        out.opens.setdefault(act.start, []).append(act)
        out.closes.setdefault(min(act.end, n - 1), []).append(act.lifeline)
    for row, opened in out.opens.items():
        closed = out.closes.get(row, [])
        for act in list(opened):
            if act.lifeline in closed:
                closed.remove(act.lifeline)
                opened.remove(act)
    return out


def arrow_text(row: Arrow) -> str:
    """An arrow's label for the text diagram formats (Mermaid, PlantUML)."""
    text = f"{row.text} ({row.time})" if row.text else row.time
    if row.wire:
        text = f"[wire] {text}"
    if row.is_link:
        text = f"[{row.handoff_label}] {text}"
    elif row.handoff_label:
        text = f"[hand-off to {row.handoff_label}] {text}"
    return text
