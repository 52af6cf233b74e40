"""The warning printed for a trace cut short (a module of its own: `replay
--stats` prints it without loading the timeline renderers)."""

from __future__ import annotations

from tracer.tracefile import Trace


def cut_short_message(trace: Trace) -> str | None:
    """The warning for a truncated trace, or None when it is complete."""
    return cut_short_note(trace.cut_short)


def cut_short_note(cut_short: str | None) -> str | None:
    """The warning for a trace cut short for this reason (None: complete)."""
    if not cut_short:
        return None
    return f"trace cut short ({cut_short}): events after the cut are missing"
