"""Chrome trace-event JSON (opens in ui.perfetto.dev and chrome://tracing).

Format: the "JSON Object Format" of the Trace Event Format (Chromium's
trace_event docs): {"traceEvents": [...], "displayTimeUnit": "ns", ...}.
Timestamps are microseconds (floats keep the nanoseconds) from the start of
the trace.

Tracks:
- one process per traced process (pid = tgid), one thread track per
  execution context in it: the task itself (tid = its tid) and, for softirq
  or hardirq work that ran on one of its threads, a synthetic thread
  ("chat-client[186] softirq NET_RX"); ksoftirqd is its own thread;
- one process "CPUs" with a track per CPU: a slice for each run of
  consecutive events of one execution context on that CPU (where the softirq
  interrupted the task), and an instant per event.
Slices ("X"): a call with a return is a slice from entry to return; an
entry-only probe lasts until the next related event of its context
(viz/spans.py), or has no known end and becomes a zero-length slice (so that
flow arrows can bind to it). Slices on a track always nest: one that would
overlap the end of its enclosing slice is clipped to it (args.clipped).
Flow arrows ("s", "t", "f" with bp "e", bound to the enclosing slice): one
per packet, hop by hop from the sender's TCP to the receiver's (so across
contexts and sides); and one from a packet's last receive event to the copy
to user that reads its bytes.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from probes.catalog import Capture
from tracer.events import Context, Event, Kind
from tracer.timeline import Message, Packet, TEvent, Timeline, capture_of, context_key
from tracer.tracefile import Trace
from viz.escape import json_safe, printable
from viz.select import View, select
from viz.sequence import context_short, event_details
from viz.spans import call_ends

_dumps: Callable[[Any], bytes] | None
try:  # optional (extra "fast"): the same text, written several times faster
    from orjson import dumps as _dumps
except ImportError:  # pragma: no cover - depends on the installation
    _dumps = None

CPU_PID = 0x7FFF0000  # the "CPUs" pseudo-process (clear of real pids, < 2^31)
SYNTH_TID = 0x40000000  # base of synthetic thread ids for softirq/hardirq contexts
_RECORDS_AT_ONCE = 4096  # records encoded into one piece of text by write_perfetto


# Below this many ns, ns / 1000.0 is already the float round(..., 3) gives:
# the division is correctly rounded and within 0.0005 of the 3-decimal value
# (its spacing is under 0.001 us below 2**43 us).
_EXACT_NS = 1 << 52


def _us(ns: int) -> float:
    """Microseconds with nanosecond precision (3 decimals)."""
    if -_EXACT_NS < ns < _EXACT_NS:
        return ns / 1000.0
    return round(ns / 1000.0, 3)


@dataclass(frozen=True, slots=True)
class Track:
    pid: int
    tid: int
    name: str
    sort: int


def _tracks(events: Iterable[Event]) -> dict[tuple[int, int, str, str | None], Track]:
    """Execution context -> its thread track (by each context's first event,
    in time order)."""
    out: dict[tuple[int, int, str, str | None], Track] = {}
    taken: set[tuple[int, int]] = set()  # (pid, tid) of the tracks so far
    synth = SYNTH_TID
    for ev in events:
        key = (ev.source, ev.tid, str(ev.ctx), ev.softirq)
        if key in out:
            continue
        who = f"{printable(ev.comm)}[{ev.tid}]"
        if ev.ctx in (Context.TASK, Context.KSOFTIRQD):
            tid = ev.tid
            name = who if ev.ctx is Context.TASK else f"{who} {context_short(ev)}"
            # A thread seen in task and as ksoftirqd (it is the same kernel
            # thread) would collide: give the second one its own id.
            if (ev.tgid, tid) in taken:
                tid, synth = synth, synth + 1
        else:
            tid, synth = synth, synth + 1
            name = f"{who} {context_short(ev)}"
        order = {"task": 0, "softirq": 1, "ksoftirqd": 2, "hardirq": 3}.get(str(ev.ctx), 4)
        out[key] = Track(pid=ev.tgid, tid=tid, name=name, sort=order)
        taken.add((ev.tgid, tid))
    return out


def render_perfetto(timeline: Timeline, view: View | None = None) -> str:
    """The JSON text. `view` picks flows, steps and a time window (no folding:
    a timeline viewer copes with big traces)."""
    return json.dumps(perfetto_document(timeline, view), indent=None,
                      separators=(",", ":")) + "\n"


def write_perfetto(timeline: Timeline, write: Callable[[str], object],
                   view: View | None = None) -> None:
    """The bytes of render_perfetto written record by record: the text of a
    big trace is as big again as its records, and its bytes once more."""
    doc = perfetto_document(timeline, view)
    records = doc.pop("traceEvents")
    write('{"traceEvents":[')
    for at in range(0, len(records), _RECORDS_AT_ONCE):
        text = encode_json(records[at:at + _RECORDS_AT_ONCE])[1:-1]
        write(text if at == 0 else "," + text)
    write("]," + encode_json(doc)[1:] + "\n")


# One encoder for whole lists of records: json.dumps per record makes an
# encoder each time (a third of the writing).
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


def encode_json(value: Any) -> str:
    """The text json.dumps(value, separators=(",", ":")) writes. orjson,
    when installed, writes the same for these records except non-ASCII text
    and DEL (json escapes them: such a piece is encoded by json) and floats
    below 1e-4 or from 1e16 (microsecond times in 3 decimals: 0 or >= 0.001,
    and under 1e16 us, 317 years), and cannot write integers past 64 bits."""
    if _dumps is not None:
        try:
            data = _dumps(value)
        except TypeError:
            data = b"\x7f"
        if data.isascii() and b"\x7f" not in data:
            return data.decode("ascii")
    return _ENCODE(value)


def shown_events(tl: Timeline, view: View) -> tuple[set[int], list[TEvent]]:
    """The steps chosen (ids) and the events drawn, in time order."""
    chosen = {st.id for fv in view.flows for b in fv.blocks for st in b.steps} | \
        {i for fv in view.flows for b in fv.blocks for i in b.covered}
    if view.selection.flow is None and not view.selection.narrowed:
        # events of no flow are still worth a track
        chosen |= {st.id for g in tl.unattributed for st in g.steps}
    return chosen, [te for te in tl.events if te.step in chosen and view.shows(te.index)]


def perfetto_document(timeline: Timeline, view: View | None = None) -> dict[str, Any]:
    tl = timeline
    view = view or select(tl)
    chosen, events = shown_events(tl, view)
    # Each event's time in us, worked out once: slices, CPU instants and
    # flow arrows all place it.
    at_us = {te.index: _us(te.ev.ts_ns - tl.start_ns) for te in events}
    tracks = _tracks(te.ev for te in events)
    out: list[dict[str, Any]] = []
    procs: dict[int, str] = {}
    for te in events:
        ev = te.ev
        if ev.tgid not in procs or ev.tid == ev.tgid:
            procs[ev.tgid] = process_name(ev)
    out.extend(metadata(procs, tracks.values(), {te.ev.cpu for te in events}))
    slices: dict[int, dict[str, Any]] = {}
    per_track: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for te, sl in slice_records(tl, events, at_us):
        tr = tracks[context_key(te.ev)]
        sl["pid"], sl["tid"] = tr.pid, tr.tid
        slices[te.index] = sl
        per_track.setdefault((tr.pid, tr.tid), []).append(sl)
    for track_slices in per_track.values():
        _nest(track_slices)
    for sl in sorted(slices.values(), key=lambda s: (s["ts"], s["pid"], s["tid"])):
        out.append(sl)
    out.extend(cpu_records(cpu_event(te, te.index, at_us[te.index])
                           for te in sorted(events, key=lambda te: te.ev.cpu)))
    out.extend(_flows(tl, events, slices, chosen, at_us))
    return {
        "traceEvents": out,
        "displayTimeUnit": "ns",
        "otherData": other_data(tl.trace, tl.start_ns, view.notices),
    }


def other_data(trace: Trace, start_ns: int, notices: list[str]) -> Any:
    return json_safe({
        "generator": "kpath export -f perfetto",
        "trace": trace.path,
        "kernel": trace.header.kernel_release,
        "host": trace.header.hostname,
        "started": trace.header.started,
        "time_origin": "ts 0 = first record of the trace (CLOCK_MONOTONIC "
                       f"{start_ns} ns)",
        "lost_events": trace.lost_total,
        "notices": notices,
    })


def process_name(ev: Event) -> str:
    return f"{printable(ev.comm)} (pid {ev.tgid})"


def slice_records(tl: Timeline, events: list[TEvent],
                  at_us: dict[int, float]) -> Iterator[tuple[TEvent, dict[str, Any]]]:
    """Each drawn event's slice (a return whose entry is drawn is its end),
    in time order; "pid" and "tid" are left 0 for the caller (its track)."""
    shown = {te.index for te in events}
    ends = call_ends(tl)
    all_events, flows = tl.events, tl.flows
    # The events of one packet share its segment (one object) and describe
    # it alike: worked out once per segment and flow.
    seg_details: dict[tuple[int, int | None], str] = {}
    for te in events:
        ev = te.ev
        is_return = ev.kind is Kind.RETURN
        if is_return and te.pair is not None and te.pair in shown:
            continue  # drawn as the end of its entry's slice
        end = ends.get(te.index)
        end_shown = end is not None and end in shown
        end_ns = all_events[end].ev.ts_ns if end_shown else ev.ts_ns  # type: ignore[index]
        fl = flows[te.flow - 1] if te.flow is not None else None
        name = _printable(f"{ev.probe} return" if is_return else ev.probe)
        layer = str(te.layer) if te.layer else None
        if te.segment is not None and not is_return:
            key = (id(te.segment), te.flow)
            details = seg_details.get(key)
            if details is None:
                details = seg_details[key] = event_details(te, fl)
        else:
            details = event_details(te, fl)
        # The arguments that are known (none None or empty), in this order.
        args: dict[str, Any] = {"event": te.index, "step": te.step}
        if te.flow is not None:
            args["flow"] = te.flow
        if te.side:
            args["side"] = str(te.side)
        if layer:
            args["layer"] = layer
        if te.context:
            args["context"] = _printable(te.context)
        args["cpu"] = ev.cpu
        if details:
            args["details"] = details
        if end_shown and all_events[end].ev.kind is Kind.RETURN:  # type: ignore[index]
            ret = all_events[end].ev.ret  # type: ignore[index]
            if ret is not None:
                args["ret"] = ret
        if not end_shown:
            args["end"] = "unknown (entry-only probe, next event unrelated)"
        yield te, {"ph": "X", "name": name, "cat": layer or "kpath", "pid": 0, "tid": 0,
                   "ts": at_us[te.index], "dur": _us(end_ns - ev.ts_ns), "args": args}


def metadata(procs: dict[int, str], tracks: Iterable[Track],
             cpu_set: set[int]) -> list[dict[str, Any]]:
    """The process and thread names and orders: `procs` tgid -> name."""
    out: list[dict[str, Any]] = []
    for i, (pid, name) in enumerate(sorted(procs.items())):
        out.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                    "args": {"name": name}})
        out.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
                    "args": {"sort_index": i}})
    for tr in sorted(tracks, key=lambda t: (t.pid, t.sort, t.tid)):
        out.append({"ph": "M", "name": "thread_name", "pid": tr.pid, "tid": tr.tid,
                    "args": {"name": tr.name}})
        out.append({"ph": "M", "name": "thread_sort_index", "pid": tr.pid, "tid": tr.tid,
                    "args": {"sort_index": tr.sort}})
    cpus = sorted(cpu_set)
    if cpus:
        out.append({"ph": "M", "name": "process_name", "pid": CPU_PID, "tid": 0,
                    "args": {"name": "CPUs"}})
        out.append({"ph": "M", "name": "process_sort_index", "pid": CPU_PID, "tid": 0,
                    "args": {"sort_index": -1}})
    for cpu in cpus:
        out.append({"ph": "M", "name": "thread_name", "pid": CPU_PID, "tid": cpu + 1,
                    "args": {"name": f"CPU {cpu}"}})
        out.append({"ph": "M", "name": "thread_sort_index", "pid": CPU_PID, "tid": cpu + 1,
                    "args": {"sort_index": cpu}})
    return out


def _nest(track: list[dict[str, Any]]) -> None:
    """Clip slices so that every slice on a track nests in its parent."""
    track.sort(key=lambda s: (s["ts"], -s["dur"]))
    stack: list[float] = []  # end times of the open slices
    for sl in track:
        nest_one(stack, sl)


def nest_one(stack: list[float], sl: dict[str, Any]) -> None:
    """The next slice of a track (by start, then longest first): clipped to
    the open slice it starts in; `stack` the end times of the open slices."""
    while stack and stack[-1] <= sl["ts"] and not (stack[-1] == sl["ts"] and sl["dur"] == 0):
        stack.pop()
    end = round(sl["ts"] + sl["dur"], 3)
    if stack and end > stack[-1]:
        sl["dur"] = round(stack[-1] - sl["ts"], 3)
        sl["args"]["clipped"] = True
        end = stack[-1]
    stack.append(end)


# What a CPU track shows of an event: (CPU, index in the whole trace, tid,
# context kind, ts_ns, time in us, printable context, printable probe); a
# tuple, as a part's are spooled (viz/perfettogroups.py).
CpuEvent = tuple[int, int, int, str, int, float, str, str]


@functools.lru_cache(maxsize=1 << 12)
def _printable(text: str) -> str:
    """printable() of the few texts repeated on every event (probes,
    contexts)."""
    return printable(text)


def cpu_event(te: TEvent, index: int, at_us: float) -> CpuEvent:
    ev = te.ev
    return (ev.cpu, index, ev.tid, str(ev.ctx), ev.ts_ns, at_us, _printable(te.context),
            _printable(ev.probe))


def cpu_records(events: Iterable[CpuEvent]) -> Iterator[dict[str, Any]]:
    """Per CPU (`events` by CPU, then time): runs of one context (X) and one
    instant per event (i)."""
    first = last = None  # of the run of one context
    count = 0

    def flush(a: CpuEvent, b: CpuEvent, count: int) -> dict[str, Any]:
        return {"ph": "X", "name": a[6], "cat": "cpu", "pid": CPU_PID,
                "tid": a[0] + 1, "ts": a[5], "dur": _us(b[4] - a[4]),
                "args": {"events": count, "first_event": a[1], "last_event": b[1]}}

    for ev in events:
        if last is None or last[0] != ev[0] or last[2] != ev[2] or last[3] != ev[3]:
            if first is not None and last is not None:
                yield flush(first, last, count)
            first, count = ev, 0
        count += 1
        yield {"ph": "i", "s": "t", "name": ev[7], "cat": "cpu", "pid": CPU_PID,
               "tid": ev[0] + 1, "ts": ev[5], "args": {"event": ev[1]}}
        last = ev
    if first is not None and last is not None:
        yield flush(first, last, count)


def _flows(tl: Timeline, events: list[TEvent], slices: dict[int, dict[str, Any]],
           chosen: set[int], at_us: dict[int, float]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    flow_id = 0
    for st in tl.steps:
        if st.id not in chosen or not isinstance(st, Packet):
            continue
        for mid, cat, points in packet_arrows(tl, st, slices, chosen):
            flow_id += 1
            name = (f"#{st.id} {printable(st.title)}" if mid is None
                    else f"#{st.id} read by #{mid}")
            for ph, te in points:
                sl = slices[te.index if te.index in slices else te.pair or te.index]
                out.append(flow_point(ph, flow_id, name, cat, sl["pid"], sl["tid"],
                                      at_us[te.index]))
    return out


def flow_point(ph: str, fid: int, name: str, cat: str, pid: int, tid: int,
               ts: float) -> dict[str, Any]:
    ev: dict[str, Any] = {"ph": ph, "id": fid, "name": name, "cat": cat,
                          "pid": pid, "tid": tid, "ts": ts}
    if ph == "f":
        ev["bp"] = "e"
    return ev


Arrow = tuple[int | None, str, list[tuple[str, TEvent]]]


def packet_arrows(tl: Timeline, st: Packet, slices: Container[int],
                  chosen: Container[int]) -> list[Arrow]:
    """A packet's flow arrows: (None, "packet", its hops) and, per message
    reading it, (the message's id, "read", from its last hop to the copy to
    user); each point (phase, event), bound to the slice of the event or of
    its entry (`slices`: the events with one)."""
    out: list[Arrow] = []
    hops = [te for te in st.events if te.index in slices]
    if len(hops) >= 2:
        out.append((None, "packet", [("s", hops[0])] + [("t", te) for te in hops[1:-1]]
                    + [("f", hops[-1])]))
    for mid in st.read_by:
        reader = tl.steps[mid]
        if mid not in chosen or not isinstance(reader, Message) or not hops:
            continue
        copy = next((te for te in reader.events if te.index in slices
                     and capture_of(te.ev) is Capture.DATAGRAM_ITER
                     and te.index > hops[-1].index),
                    None)
        if copy is None:
            continue
        out.append((mid, "read", [("s", hops[-1]), ("f", copy)]))
    return out
