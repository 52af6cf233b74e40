"""`kpath replay --format json`: the timeline as one JSON document for
scripts. The schema is documented in docs/replay-json.md and versioned:
fields are only ever added within a version; every documented key is always
present (null when unknown). Deterministic: same trace, same bytes.
"""

from __future__ import annotations

import gc
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tracer.events import tcp_flag_names
from tracer.timeline import (
    ByteRange,
    Flow,
    LostGap,
    Message,
    Packet,
    Role,
    Step,
    TEvent,
    Timeline,
    carriers,
    writers,
)
from tracer.timeline.accounting import account_bytes
from tracer.timeline.windows import Plan
from tracer.tracefile import Trace
from viz.escape import json_safe
from viz.sequence import context_short, event_details
from viz.spans import call_depths, call_ends

FORMAT = "kpath-replay"
VERSION = 1


def _gap(g: LostGap) -> dict[str, Any]:
    out = {"ts_ns": g.ts_ns, "offset_ns": g.offset_ns, "count": g.count,
           "probe": json_safe(g.probe), "cpu": g.cpu}
    if g.since_ns is not None:  # a blind window (count 0: not counted)
        out.update(since_ns=g.since_ns, blind=json_safe(g.blind))
    return out


def _ways(other: tuple[tuple[ByteRange, str], ...]) -> list[dict[str, Any]]:
    return [{"bytes": _range(r), "way": way} for r, way in other]


def _accounts(tl: Timeline, fl: Flow) -> dict[str, Any]:
    """Per sender: the byte accounting, and which way the bytes went."""
    out = {}
    for role in (Role.CLIENT, Role.SERVER):
        a = account_bytes(tl, fl.number, role)
        out[str(role)] = {
            "written": a.written_total, "carried": a.carried, "read": a.read_total,
            "copied": a.copied, "balanced": a.balanced, "complete": a.complete,
            "written_by": dict(a.written_by), "read_by": dict(a.read_by),
            "written_other": _ways(a.written_other), "read_other": _ways(a.read_other),
            "notes": list(a.notes),
        }
    return out


def _flow(fl: Flow, tl: Timeline) -> dict[str, Any]:
    return {
        "number": fl.number, "netns": fl.netns, "title": fl.title,
        "client": str(fl.client), "server": str(fl.server), "roles_from": str(fl.roles_from),
        "isn": {"client": fl.isn.get(fl.client), "server": fl.isn.get(fl.server)},
        "isn_from_syn": {"client": fl.isn_from_syn.get(fl.client),
                         "server": fl.isn_from_syn.get(fl.server)},
        "steps": [st.id for st in fl.steps],
        "gaps": [_gap(g) for g in fl.gaps],
        "bytes": _accounts(tl, fl),
    }


def _range(r: ByteRange | None) -> list[int] | None:
    return [r.lo, r.hi] if r is not None else None


def step_record(st: Step, tl: Timeline) -> dict[str, Any]:
    fl = tl.flows[st.flow - 1] if st.flow is not None else None
    rec: dict[str, Any] = {
        "id": st.id, "kind": str(st.kind), "flow": st.flow,
        "side": str(st.side) if st.side else None, "title": json_safe(st.title),
        "start_ns": st.start_ns, "end_ns": st.end_ns, "duration_ns": st.end_ns - st.start_ns,
        "events": [te.index for te in st.events],
        "message": None, "packet": None,
    }
    if isinstance(st, Message):
        rec["message"] = {
            "op": st.op, "syscall": json_safe(st.syscall), "requested": st.requested,
            "bytes": st.nbytes,
            "complete": st.complete, "packets": list(st.packets), "handled": list(st.handled),
            "data_from": list(st.data_from), "byte_range": _range(st.byte_range),
            "range_from": str(st.range_from) if st.range_from is not None else None,
            "carried_by": [{"packet": p.id, "bytes": _range(r)} for p, r in carriers(tl, st)],
        }
    elif isinstance(st, Packet):
        seg = st.segment
        rel = (lambda ep, v: fl.rel(ep, v)) if fl is not None else (lambda ep, v: v)
        rec["packet"] = {
            "label": st.label, "flags": tcp_flag_names(seg.flags), "payload": seg.payload,
            "src": str(seg.src), "dst": str(seg.dst),
            "sender": str(st.sender) if st.sender else None,
            "receiver": str(st.receiver) if st.receiver else None,
            "seq": seg.seq, "end_seq": seg.end_seq, "ack": seg.ack,
            "rel_seq": rel(seg.src, seg.seq), "rel_end_seq": rel(seg.src, seg.end_seq),
            "rel_ack": rel(seg.dst, seg.ack) if seg.ack is not None else None,
            "again": st.again, "sent_by": st.message, "read_by": list(st.read_by),
            "byte_range": _range(st.byte_range),
            "written_by": [{"message": m.id, "bytes": _range(r)} for m, r in writers(tl, st)],
            "tx_events": [te.index for te in st.tx_events],
            "rx_events": [te.index for te in st.rx_events],
        }
    return rec


_RAW = ("sk", "skb", "netns", "saddr", "sport", "daddr", "dport", "seq", "end_seq", "ack",
        "tcp_flags", "length", "ret")


def event_record(te: TEvent, fl: Flow | None, depth: int, hop_ns: int | None) -> dict[str, Any]:
    ev = te.ev
    rec: dict[str, Any] = {
        "index": te.index, "ts_ns": ev.ts_ns, "offset_ns": te.offset_ns, "hop_ns": hop_ns,
        "cpu": ev.cpu, "tgid": ev.tgid, "tid": ev.tid, "comm": json_safe(ev.comm),
        "probe": json_safe(ev.probe), "kind": str(ev.kind), "ctx": str(ev.ctx),
        "softirq": ev.softirq, "context": json_safe(te.context),
        "context_kind": context_short(ev),
        "layer": str(te.layer) if te.layer else None,
        "direction": str(te.direction) if te.direction else None,
        "flow": te.flow, "side": str(te.side) if te.side else None,
        "endpoint": str(te.endpoint) if te.endpoint else None,
        "step": te.step, "handoff": te.handoff, "pair": te.pair, "depth": depth,
        "details": event_details(te, fl),
    }
    for key in _RAW:
        rec[key] = getattr(ev, key)
    return rec


def _selected_steps(tl: Timeline, flow: int | None) -> tuple[list[Flow], list[Step]]:
    flows = [tl.flow(flow)] if flow is not None else tl.flows
    steps = [st for fl in flows for st in fl.steps]
    if flow is None:
        steps += [st for g in tl.unattributed for st in g.steps]
    steps.sort(key=lambda st: st.id)
    return flows, steps


def _trace_record(tl: Timeline) -> dict[str, Any]:
    return _trace_fields(tl.trace, tl.start_ns, tl.duration_ns, len(tl.events))


def _trace_fields(trace: Trace, start_ns: int, duration_ns: int, events: int
                  ) -> dict[str, Any]:
    h = trace.header
    # Header fields as the file has them (JSON escapes what a terminal must
    # not see); json_safe for what JSON cannot hold.
    fields: dict[str, Any] = json_safe({
        "path": trace.path, "kernel_release": h.kernel_release,
        "kernel_version": h.kernel_version, "hostname": h.hostname, "machine": h.machine,
        "started": h.started, "clock": h.clock, "backend": h.backend, "buffer": h.buffer,
        "profile": h.profile, "tool_version": h.tool_version, "command": h.command,
        "filters": h.filters, "start_ns": start_ns, "duration_ns": duration_ns,
        "events": events, "lost": trace.lost_total, "cut_short": trace.cut_short,
        "stopped": trace.trailer.reason if trace.trailer else None,
        "attach_kinds": h.attach_kinds, "coverage": h.coverage,
        "probes": {
            "attached": [{"name": p.name, "kinds": p.kinds, "symbol": p.symbol,
                          "attach": p.attach, "source": p.source}
                         for p in h.attached],
            "missing": [{"name": p.name, "reason": p.reason, "detail": p.detail}
                        for p in h.missing],
        },
    })
    return fields


def _unattributed(tl: Timeline, flow: int | None) -> list[dict[str, Any]]:
    return [] if flow is not None else [
        {"tid": g.tid, "tgid": g.tgid, "comm": json_safe(g.comm),
         "steps": [st.id for st in g.steps]}
        for g in tl.unattributed]


def replay_document(tl: Timeline, flow: int | None = None) -> dict[str, Any]:
    """The document as Python data (flow: only that flow, 1-based)."""
    flows, steps = _selected_steps(tl, flow)
    return {
        "format": FORMAT,
        "version": VERSION,
        "trace": _trace_record(tl),
        "flow_filter": flow,
        "flows": [_flow(fl, tl) for fl in flows],
        "steps": [step_record(st, tl) for st in steps],
        "events": list(_records(tl, flow, steps)),
        "gaps": [_gap(g) for g in tl.gaps],
        "unattributed": _unattributed(tl, flow),
    }


def render_json(tl: Timeline, flow: int | None = None) -> str:
    """The whole document in memory (tests, small traces); `write_json`
    writes the same bytes piece by piece."""
    return json.dumps(replay_document(tl, flow), indent=1, sort_keys=False) + "\n"


_COLLECT_EVERY = 4096  # records between two collections of the youngest generation
_dumped = 0


def _nested(value: Any, level: int) -> str:
    # json.dumps escapes newlines inside strings, so every newline of its
    # output is layout and can be shifted to the nesting level.
    text = json.dumps(value, indent=1).replace("\n", "\n" + " " * level)
    # An indented dumps runs the pure-Python encoder, whose closures refer
    # to each other: a reference cycle per record, which replay and export
    # (cyclic collector paused: kpath/cli_view.py) never freed, so memory grew
    # with the trace. The youngest generation holds little more than them.
    global _dumped
    _dumped += 1
    if _dumped % _COLLECT_EVERY == 0:
        gc.collect(0)
    return text


def _records(tl: Timeline, flow: int | None, steps: list[Step]) -> Iterator[dict[str, Any]]:
    """Event records in index order, as replay_document lists them, made one
    at a time: only the per-event hop and depth are held for the whole trace."""
    depths = call_depths(tl, call_ends(tl))
    # Lists by event index, not dicts: a million events cost 8 MB each.
    chosen = [False] * len(tl.events)
    hops: list[int | None] = [None] * len(tl.events)
    flow_of: list[Flow | None] = [None] * len(tl.events)
    for st in steps:
        fl = tl.flows[st.flow - 1] if st.flow is not None else None
        prev: TEvent | None = None
        for te in st.events:
            chosen[te.index] = True
            hops[te.index] = te.ev.ts_ns - prev.ev.ts_ns if prev is not None else None
            flow_of[te.index] = fl
            prev = te
    for te in tl.events:
        if chosen[te.index]:
            yield event_record(te, flow_of[te.index], depths.get(te.index, 0), hops[te.index])


def item_text(item: Any) -> str:
    """An item of a top-level array as _Array lays it out."""
    return _nested(item, 2)


class _Array:
    """One top-level array of the document, item by item, laid out as
    json.dumps(indent=1) lays it out."""

    def __init__(self, write: Callable[[str], object], key: str) -> None:
        self.write = write
        self.empty = True
        write(f' "{key}": [')

    def add(self, item: Any) -> None:
        self.add_text(_nested(item, 2))

    def add_text(self, text: str) -> None:
        """An item already laid out (item_text)."""
        self.write(("\n  " if self.empty else ",\n  ") + text)
        self.empty = False

    def close(self, last: bool = False) -> None:
        self.write(("]" if self.empty else "\n ]") + ("\n" if last else ",\n"))


def _write_head(write: Callable[[str], object], trace: dict[str, Any],
                flow: int | None) -> None:
    """The document's opening, up to its first array."""
    write("{\n")
    write(f' "format": {json.dumps(FORMAT)},\n "version": {json.dumps(VERSION)},\n')
    write(f' "trace": {_nested(trace, 1)},\n')
    write(f' "flow_filter": {json.dumps(flow)},\n')


def write_json(tl: Timeline, write: Callable[[str], object], flow: int | None = None) -> None:
    """Write the same bytes as render_json, record by record, without holding
    the document: its size is about 10x the timeline's."""
    flows, steps = _selected_steps(tl, flow)

    def array(key: str, items: Iterable[Any], last: bool = False) -> None:
        arr = _Array(write, key)
        for item in items:
            arr.add(item)
        arr.close(last)

    _write_head(write, _trace_record(tl), flow)
    array("flows", (_flow(fl, tl) for fl in flows))
    array("steps", (step_record(st, tl) for st in steps))
    array("events", _records(tl, flow, steps))
    array("gaps", (_gap(g) for g in tl.gaps))
    array("unattributed", _unattributed(tl, flow), last=True)
    write("}\n")


def _shift_step(rec: dict[str, Any], ev: int, step: int, flow: int) -> dict[str, Any]:
    rec["id"] += step
    if rec["flow"] is not None:
        rec["flow"] += flow
    rec["events"] = [i + ev for i in rec["events"]]
    msg = rec["message"]
    if msg is not None:
        for key in ("packets", "handled", "data_from"):
            msg[key] = [i + step for i in msg[key]]
        for link in msg["carried_by"]:
            link["packet"] += step
    pkt = rec["packet"]
    if pkt is not None:
        if pkt["sent_by"] is not None:
            pkt["sent_by"] += step
        pkt["read_by"] = [i + step for i in pkt["read_by"]]
        for link in pkt["written_by"]:
            link["message"] += step
        pkt["tx_events"] = [i + ev for i in pkt["tx_events"]]
        pkt["rx_events"] = [i + ev for i in pkt["rx_events"]]
    return rec


def _shift_event(rec: dict[str, Any], ev: int, step: int, flow: int) -> dict[str, Any]:
    rec["index"] += ev
    rec["step"] += step
    if rec["flow"] is not None:
        rec["flow"] += flow
    if rec["pair"] is not None:
        rec["pair"] += ev
    return rec


def write_json_windows(plan: Plan, write: Callable[[str], object]) -> None:
    """The bytes of render_json (whole trace, no flow filter) from a trace cut
    into independent windows (tracer/timeline/windows.py): one window of
    objects at a time; the steps and events of the windows already done
    wait in temporary files, since the document lists every flow first."""
    trace = plan.trace
    _write_head(write, _trace_fields(trace, plan.start_ns, plan.duration_ns, plan.num_events),
                None)
    # (host, tid) -> (start of its first step, its first step, tgid, comm, steps)
    threads: dict[tuple[int, int], tuple[int, int, int, str, list[int]]] = {}
    with tempfile.TemporaryFile("w+", encoding="ascii") as steps_tmp, \
            tempfile.TemporaryFile("w+", encoding="ascii") as events_tmp:
        flows_out = _Array(write, "flows")
        steps_out = _Array(steps_tmp.write, "steps")
        events_out = _Array(events_tmp.write, "events")
        step_base, flow_base = 0, 0
        for win in plan.windows():
            tl, ev_base = win.timeline, win.first
            for flow in tl.flows:
                rec = _flow(flow, tl)
                rec["number"] += flow_base
                rec["steps"] = [i + step_base for i in rec["steps"]]
                flows_out.add(rec)
            _, steps = _selected_steps(tl, None)
            for st in steps:
                steps_out.add(_shift_step(step_record(st, tl), ev_base, step_base, flow_base))
            for rec in _records(tl, None, steps):
                events_out.add(_shift_event(rec, ev_base, step_base, flow_base))
            for group in tl.unattributed:
                ids = [st.id + step_base for st in group.steps]
                have = threads.get((group.source, group.tid))
                if have is None:
                    threads[(group.source, group.tid)] = (group.steps[0].start_ns, ids[0],
                                                          group.tgid, group.comm, ids)
                else:
                    have[4].extend(ids)
            step_base += len(tl.steps)
            flow_base += len(tl.flows)
            del tl, win
        flows_out.close()
        steps_out.close()
        events_out.close()
        for tmp in (steps_tmp, events_tmp):
            tmp.seek(0)
            while chunk := tmp.read(1 << 20):
                write(chunk)
    gaps_out = _Array(write, "gaps")
    for g in plan.losses.gaps:  # every window's (made once)
        gaps_out.add(_gap(g))
    gaps_out.close()
    # As group_steps orders them: by first step's start, then first seen.
    unattributed = _Array(write, "unattributed")
    for (_, tid), (_, _, tgid, comm, ids) in sorted(threads.items(), key=lambda kv: kv[1][:2]):
        unattributed.add({"tid": tid, "tgid": tgid, "comm": json_safe(comm), "steps": ids})
    unattributed.close(last=True)
    write("}\n")
