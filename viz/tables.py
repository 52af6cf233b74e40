"""A trace as five flat tables (events, packets, hops, messages, flows) for
engines that query data: the Parquet export (viz/parquet.py) and `kpath
query` (viz/query.py). Columns: docs/parquet.md.

Rows are made from the object timeline, one independent window at a time
(tracer/timeline/windows.py), with the records of `replay --format json`
(viz/jsonout.py) flattened: a big trace never holds more than one window of
objects and one window of rows. Hops are the per-packet latencies that
`replay --stats` summarises (tracer/timeline/latency.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from tracer.timeline.groups import GroupPlan
from tracer.timeline.latency import packet_latencies
from tracer.timeline.model import Role, Timeline, blind_windows
from tracer.timeline.windows import Plan
from tracer.tracefile import Trace
from viz.escape import json_safe
from viz.jsonout import _flow, _records, _selected_steps, _shift_event, _shift_step, step_record
from viz.runs import Numbers, Runs, merge
from viz.stats_text import _direction_of

TABLES = ("events", "packets", "hops", "messages", "flows")

_I64, _I32, _STR, _BOOL = pa.int64(), pa.int32(), pa.string(), pa.bool_()
_IDS = pa.list_(pa.int64())
# Every table's first columns: which trace and which host a row comes from.
_WHERE = [("trace", _STR), ("source", _I32), ("host", _STR)]

SCHEMAS: dict[str, pa.Schema] = {
    "events": pa.schema(_WHERE + [
        ("index", _I64), ("ts_ns", _I64), ("offset_ns", _I64), ("hop_ns", _I64),
        ("cpu", _I32), ("tgid", _I64), ("tid", _I64), ("comm", _STR), ("probe", _STR),
        ("kind", _STR), ("ctx", _STR), ("softirq", _STR), ("context", _STR),
        ("context_kind", _STR), ("layer", _STR), ("direction", _STR), ("flow", _I32),
        ("side", _STR), ("endpoint", _STR), ("step", _I64), ("handoff", _BOOL),
        ("pair", _I64), ("depth", _I32), ("details", _STR),
        # sk, skb: kernel pointers as hex text (they do not fit a signed 64-bit column)
        ("sk", _STR), ("skb", _STR), ("netns", _I64), ("saddr", _STR), ("sport", _I32),
        ("daddr", _STR), ("dport", _I32), ("seq", _I64), ("end_seq", _I64), ("ack", _I64),
        ("tcp_flags", _I32), ("length", _I64), ("ret", _I64)]),
    "packets": pa.schema(_WHERE + [
        ("flow", _I32), ("step", _I64), ("sender", _STR), ("receiver", _STR),
        ("direction", _STR), ("class", _STR), ("label", _STR), ("flags", _STR),
        ("payload", _I64), ("src", _STR), ("dst", _STR), ("seq", _I64), ("end_seq", _I64),
        ("ack", _I64), ("rel_seq", _I64), ("rel_end_seq", _I64), ("rel_ack", _I64),
        ("again", _BOOL), ("retransmission", _BOOL), ("gap", _BOOL),
        ("start_ns", _I64), ("end_ns", _I64), ("duration_ns", _I64),
        ("sent_by", _I64), ("read_by", _IDS), ("byte_lo", _I64), ("byte_hi", _I64),
        ("events", _I32)]),
    "hops": pa.schema(_WHERE + [
        ("flow", _I32), ("step", _I64), ("sender", _STR), ("direction", _STR),
        ("class", _STR), ("hop", _STR), ("from_point", _STR), ("to_point", _STR),
        ("from_event", _I64), ("to_event", _I64), ("start_ns", _I64), ("latency_ns", _I64),
        ("gap", _BOOL)]),
    "messages": pa.schema(_WHERE + [
        ("flow", _I32), ("step", _I64), ("side", _STR), ("op", _STR), ("syscall", _STR),
        ("tgid", _I64), ("tid", _I64), ("comm", _STR), ("requested", _I64), ("bytes", _I64),
        ("complete", _BOOL), ("start_ns", _I64), ("end_ns", _I64), ("duration_ns", _I64),
        ("packets", _IDS), ("handled", _IDS), ("data_from", _IDS), ("byte_lo", _I64),
        ("byte_hi", _I64), ("range_from", _STR), ("events", _I32)]),
    "flows": pa.schema(_WHERE + [
        ("flow", _I32), ("title", _STR), ("client", _STR), ("server", _STR),
        ("roles_from", _STR), ("client_netns", _I64), ("server_netns", _I64),
        ("client_isn", _I64), ("server_isn", _I64), ("start_ns", _I64), ("end_ns", _I64),
        ("packets", _I64), ("messages", _I64), ("lost", _I64), ("blind", _I64)]
        + [(f"{role}_{key}", typ) for role in ("client", "server")
           for key, typ in (("written", _I64), ("carried", _I64), ("read", _I64),
                            ("copied", _I64), ("balanced", _BOOL), ("complete", _BOOL))]),
}


@dataclass(frozen=True, slots=True)
class Hosts:
    """Which host each event of a trace comes from: a merged trace has one
    source per host (its header's `sources`, the events' `source` column);
    any other trace is source 0, its header's hostname."""

    names: tuple[str, ...]
    source: pa.ChunkedArray | None  # per event in time order, or None: all 0

    @classmethod
    def of(cls, trace: Trace, table: pa.Table) -> Hosts:
        h = trace.header
        names = tuple(s.hostname for s in h.sources) or (h.hostname,)
        col = table.column("source") if "source" in table.column_names else None
        return cls(tuple(json_safe(n) for n in names), col)

    def name(self, source: int) -> str:
        return self.names[source] if 0 <= source < len(self.names) else ""


_BATCH_ROWS = 1 << 14  # rows per batch of the merged tables


def group_table_batches(plan: GroupPlan, trace_name: str
                        ) -> Iterator[dict[str, pa.RecordBatch]]:
    """table_batches of a trace rebuilt in parts of groups
    (tracer/timeline/groups.py): each part's rows wait in temporary files
    (viz/runs.py) with its local step ids and flow numbers, then each table
    is merged into the whole trace's order and numbers; one table at a time."""
    hosts = Hosts.of(plan.trace, plan.trace.table)
    runs = {name: Runs() for name in TABLES}
    numbers = Numbers()
    try:
        for part in plan.parts():
            tl, index = part.timeline, part.index.tolist()
            src = tl.trace.table.column("source") if hosts.source is not None else None
            sources = [0] * len(tl.events) if src is None else src.to_pylist()
            rows = _Rows(tl, trace_name, hosts, sources, 0, 0, 0)
            numbers.note(tl, rows.steps, index)
            for name in TABLES:
                for row in getattr(rows, name)():
                    runs[name].put(_global_events(name, row, index))
                runs[name].end_run()
            del tl, part, rows
        step_id, flow_no = numbers.ranks()
        del numbers
        for name in TABLES:
            batch: list[dict[str, Any]] = []
            key, renumber = _KEYS[name], _RENUMBER[name]

            def place(row: dict[str, Any], p: int, key: _Numbered = key) -> Any:
                return key(row, step_id[p], flow_no[p])

            def renumbered(row: dict[str, Any], p: int, renumber: _Numbered = renumber) -> Any:
                return renumber(row, step_id[p], flow_no[p])

            for row in merge(runs[name], place, renumbered):
                batch.append(row)
                if len(batch) == _BATCH_ROWS:
                    yield {name: pa.RecordBatch.from_pylist(batch, schema=SCHEMAS[name])}
                    batch = []
            if batch:
                yield {name: pa.RecordBatch.from_pylist(batch, schema=SCHEMAS[name])}
            runs[name].close()
    finally:
        for r in runs.values():
            r.close()


def _global_events(name: str, row: dict[str, Any], index: list[int]) -> dict[str, Any]:
    """A part's row with the whole trace's event indices."""
    if name == "events":
        row["index"] = index[row["index"]]
        if row["pair"] is not None:
            row["pair"] = index[row["pair"]]
    elif name == "hops":
        row["from_event"] = index[row["from_event"]]
        row["to_event"] = index[row["to_event"]]
    return row


def _flow_of(row: dict[str, Any], flow: np.ndarray) -> int | None:
    return None if row["flow"] is None else int(flow[row["flow"] - 1])


# Per table, a row's place in the whole trace's order (as table_batches
# lists them: events by index, steps by id, hops by flow then packet then
# hop, flows by number), from its part's step ids and flow numbers; hops
# of one packet keep their order (merge is stable across its runs' rows,
# and a packet's hops are in one run).
_Numbered = Callable[[dict[str, Any], np.ndarray, np.ndarray], Any]
_KEYS: dict[str, _Numbered] = {
    "events": lambda row, step, flow: row["index"],
    "packets": lambda row, step, flow: int(step[row["step"]]),
    "messages": lambda row, step, flow: int(step[row["step"]]),
    "hops": lambda row, step, flow: (_flow_of(row, flow), int(step[row["step"]])),
    "flows": lambda row, step, flow: int(flow[row["flow"] - 1]),
}


def _renumber_event(row: dict[str, Any], step: np.ndarray, flow: np.ndarray) -> dict[str, Any]:
    row["step"] = int(step[row["step"]])
    row["flow"] = _flow_of(row, flow)
    return row


def _renumber_packet(row: dict[str, Any], step: np.ndarray, flow: np.ndarray
                     ) -> dict[str, Any]:
    _renumber_event(row, step, flow)
    if row["sent_by"] is not None:
        row["sent_by"] = int(step[row["sent_by"]])
    row["read_by"] = step[row["read_by"]].tolist()
    return row


def _renumber_message(row: dict[str, Any], step: np.ndarray, flow: np.ndarray
                      ) -> dict[str, Any]:
    _renumber_event(row, step, flow)
    for key in ("packets", "handled", "data_from"):
        row[key] = step[row[key]].tolist()
    return row


def _renumber_flow(row: dict[str, Any], step: np.ndarray, flow: np.ndarray) -> dict[str, Any]:
    row["flow"] = int(flow[row["flow"] - 1])
    return row


_RENUMBER: dict[str, _Numbered] = {
    "events": _renumber_event, "packets": _renumber_packet, "messages": _renumber_message,
    "hops": _renumber_event, "flows": _renumber_flow,
}


def table_batches(plan: Plan, trace_name: str) -> Iterator[dict[str, pa.RecordBatch]]:
    """Per window of the plan, one record batch per table (TABLES), numbered
    as in the whole trace (event indexes, step ids, flow numbers)."""
    hosts = Hosts.of(plan.trace, plan.table)
    step_base, flow_base = 0, 0
    for win in plan.windows():
        tl = win.timeline
        sources = ([0] * len(tl.events) if hosts.source is None else
                   hosts.source.slice(win.first, len(tl.events)).to_pylist())
        rows = _Rows(tl, trace_name, hosts, sources, win.first, step_base, flow_base)
        yield {name: pa.RecordBatch.from_pylist(getattr(rows, name)(), schema=SCHEMAS[name])
               for name in TABLES}
        step_base += len(tl.steps)
        flow_base += len(tl.flows)


class _Rows:
    """The rows of one window's timeline."""

    def __init__(self, tl: Timeline, trace_name: str, hosts: Hosts, sources: list[int],
                 ev_base: int, step_base: int, flow_base: int) -> None:
        self.tl, self.trace_name, self.hosts, self.sources = tl, trace_name, hosts, sources
        self.ev_base, self.step_base, self.flow_base = ev_base, step_base, flow_base
        _, self.steps = _selected_steps(tl, None)
        self.latency = {pl.packet.id: pl for pl in packet_latencies(tl)}

    def _where(self, event: int | None) -> dict[str, Any]:
        """The trace, source and host columns of a row whose first event is
        `event` (window index; None: source 0)."""
        source = self.sources[event] if event is not None else 0
        return {"trace": self.trace_name, "source": source, "host": self.hosts.name(source)}

    def events(self) -> list[dict[str, Any]]:
        out = []
        for rec in _records(self.tl, None, self.steps):
            row = self._where(rec["index"])
            row.update(_shift_event(rec, self.ev_base, self.step_base, self.flow_base))
            for key in ("sk", "skb"):
                row[key] = hex(row[key]) if row[key] else None
            out.append(row)
        return out

    def _step_rows(self, kind: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(row with the step's common columns, its `kind` record) per step."""
        for st in self.steps:
            rec = step_record(st, self.tl)
            if rec[kind] is None:
                continue
            first = rec["events"][0] if rec["events"] else None
            rec = _shift_step(rec, self.ev_base, self.step_base, self.flow_base)
            row = self._where(first)
            row.update(flow=rec["flow"], step=rec["id"], side=rec["side"], start_ns=rec["start_ns"],
                       end_ns=rec["end_ns"], duration_ns=rec["duration_ns"],
                       events=len(rec["events"]))
            yield row, rec[kind]

    def packets(self) -> list[dict[str, Any]]:
        out = []
        for row, pkt in self._step_rows("packet"):
            pl = self.latency[row["step"] - self.step_base]
            row.update({k: pkt[k] for k in (
                "sender", "receiver", "label", "flags", "payload", "src", "dst", "seq",
                "end_seq", "ack", "rel_seq", "rel_end_seq", "rel_ack", "again", "sent_by",
                "read_by")})
            row.update(direction=_direction(pl.sender), retransmission=pl.packet.retransmission,
                       gap=pl.gap, **{"class": str(pl.klass)}, **_bounds(pkt["byte_range"]))
            out.append(row)
        return out

    def hops(self) -> list[dict[str, Any]]:
        out = []
        for pl in self.latency.values():
            pkt = pl.packet
            for hop, ht in pl.hops.items():
                row = self._where(ht.start.index)
                row.update({
                    "flow": pkt.flow + self.flow_base if pkt.flow is not None else None,
                    "step": pkt.id + self.step_base,
                    "sender": str(pkt.sender) if pkt.sender else None,
                    "direction": _direction(pkt.sender), "class": str(pl.klass),
                    "hop": str(hop), "from_point": str(hop.points[0]),
                    "to_point": str(hop.points[1]),
                    "from_event": ht.start.index + self.ev_base,
                    "to_event": ht.end.index + self.ev_base,
                    "start_ns": ht.start.ev.ts_ns, "latency_ns": ht.ns, "gap": pl.gap})
                out.append(row)
        return out

    def messages(self) -> list[dict[str, Any]]:
        out = []
        for row, msg in self._step_rows("message"):
            first = self.tl.steps[row["step"] - self.step_base].events
            ev = first[0].ev if first else None
            row.update({k: msg[k] for k in (
                "op", "syscall", "requested", "bytes", "complete", "packets", "handled",
                "data_from", "range_from")})
            row.update(tgid=ev.tgid if ev else None, tid=ev.tid if ev else None,
                       comm=json_safe(ev.comm) if ev else None,
                       **_bounds(msg["byte_range"]))
            out.append(row)
        return out

    def flows(self) -> list[dict[str, Any]]:
        out = []
        for fl in self.tl.flows:
            rec = _flow(fl, self.tl)
            steps = fl.steps
            first = steps[0].events[0].index if steps and steps[0].events else None
            row = self._where(first)
            row.update(flow=fl.number + self.flow_base, title=rec["title"],
                       client=rec["client"], server=rec["server"],
                       roles_from=rec["roles_from"],
                       client_netns=fl.netns_of.get(fl.client), server_netns=fl.netns_of.get(
                           fl.server),
                       client_isn=rec["isn"]["client"], server_isn=rec["isn"]["server"],
                       start_ns=min((st.start_ns for st in steps), default=None),
                       end_ns=max((st.end_ns for st in steps), default=None),
                       packets=sum(st.kind == "packet" for st in steps),
                       messages=sum(st.kind == "message" for st in steps),
                       lost=sum(g.count for g in fl.gaps),
                       blind=len(blind_windows(fl.gaps)))
            for role, acct in rec["bytes"].items():
                for key in ("written", "carried", "read", "copied", "balanced", "complete"):
                    row[f"{role}_{key}"] = acct[key]
            out.append(row)
        return out


def _direction(sender: Role | None) -> str | None:
    return _direction_of(sender) if sender is not None else None


def _bounds(r: list[int] | None) -> dict[str, int | None]:
    return {"byte_lo": r[0] if r else None, "byte_hi": r[1] if r else None}
