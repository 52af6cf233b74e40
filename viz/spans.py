"""How long each call is active: shared by the diagram's activation bars,
the Perfetto slices and the terminal's nesting.

A call is active from its entry to its return event. Most probes are
entry-only (a return probe costs a second kprobe): such a call is taken to be
active until the next event of the same execution context, when the thread
has visibly moved on. That next event must belong to a related step (the same
step, or the message that sent the packet, or the packet sent by the
message); an unrelated next event (a later softirq run in the same thread,
another syscall much later) says nothing about when this call ended, so the
call gets no end (None): renderers draw it as a point.
"""

from __future__ import annotations

from tracer.timeline import Message, Packet, Step, TEvent, Timeline, context_key


def related(a: Step, b: Step) -> bool:
    """Same step, or a message and a packet it sent."""
    if a.id == b.id:
        return True
    if isinstance(a, Message) and isinstance(b, Packet):
        return b.message == a.id
    if isinstance(a, Packet) and isinstance(b, Message):
        return a.message == b.id
    return False


def call_ends(timeline: Timeline) -> dict[int, int]:
    """Event index -> index of the event that ends its call.

    Entries with a return map to the return; entry-only events map to the
    next event of their context when it is related (see the module doc).
    Returns and events with no known end are absent.
    """
    ends: dict[int, int] = {}
    last: dict[tuple[int, int, str, str | None], TEvent] = {}
    steps = timeline.steps
    # Some parts of a trace (viz/exportgroups.py): an event of another part
    # may run between two of a context's events here.
    following = timeline.context_next
    for te in timeline.events:
        ck = context_key(te.ev)
        prev = last.get(ck)
        if (prev is not None and not prev.is_return and prev.pair is None
                and (following is None or following.get(prev.index) == te.index)
                and related(steps[prev.step], steps[te.step])):
            ends[prev.index] = te.index
        last[ck] = te
        if te.is_return and te.pair is not None:
            ends[te.pair] = te.index
    return ends


def call_depths(timeline: Timeline, ends: dict[int, int]) -> dict[int, int]:
    """Event index -> nesting depth in its context: the number of calls of the
    same context that are still active (started before, end after) when it
    runs. Used to indent the terminal timeline."""
    depth: dict[int, int] = {}
    open_: dict[tuple[int, int, str, str | None], list[int]] = {}  # end indexes, per context
    for te in timeline.events:
        stack = open_.setdefault(context_key(te.ev), [])
        # calls whose end is this event or earlier are over (a return closes
        # its own call: it is drawn at the depth of its entry)
        while stack and stack[-1] <= te.index:
            stack.pop()
        depth[te.index] = len(stack)
        end = ends.get(te.index)
        if end is not None and not te.is_return:
            # keep the stack ordered by end so that inner calls pop first
            stack.append(end)
            stack.sort(reverse=True)
    return depth
