"""`kpath merge`: traces of different hosts as one trace on the first's clock.

Each input is one host (or an earlier merge of several); each later input
is paired with the first earlier one it shares a connection with
(crossings.pair_hosts), which gives its clock offset. Its events keep
their own values but two: `source`, the index of their host in the merged
header's `sources`, and `ts_ns`, shifted onto the first host's clock. The
shift and its uncertainty are recorded in that source's entry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer.events import FRAME_FIELD, ProbeStatus, dict_column, frame_column
from tracer.merge.crossings import Crossings, NoCommonConnection, Pairing, crossings, pair_hosts
from tracer.merge.offset import OffsetError
from tracer.tracefile import Header, Lost, Source, Trace, TraceWriter, Trailer, read_trace
from tracer.tracefile.records import INT64_MAX

# Rows per written batch (as kpath convert).
BATCH_ROWS = 65536


class MergeError(ValueError):
    """Traces that cannot be joined; the message (one line) says why."""


@dataclass
class Joined:
    """One input after the merge: where its sources went, how it was shifted."""

    path: str
    first_source: int  # its source 0's index in the merged header
    shift_ns: int  # added to its times
    pairing: Pairing | None  # with the input it was paired with (None: the first)
    paired_with: int | None  # index of that input


@dataclass
class MergeResult:
    header: Header
    inputs: list[Joined]
    events: int
    lost_records: int


def _sources(trace: Trace) -> list[Source]:
    """A trace's hosts; files written before sources were recorded have one,
    known by its hostname only."""
    h = trace.header
    return list(h.sources) or [Source(hostname=h.hostname, clock_offset_ns=h.clock_offset_ns)]


def _host_id(src: Source) -> str:
    return src.boot_id or f"hostname {src.hostname}"


def _check_hosts(traces: list[Trace]) -> None:
    seen: dict[str, str] = {}
    for trace in traces:
        for src in _sources(trace):
            key = _host_id(src)
            if key in seen:
                what = f"boot id {src.boot_id}" if src.boot_id else "no boot id recorded"
                raise MergeError(f"{seen[key]} and {trace.path} come from the same host "
                                 f"({src.hostname or '?'}, {what}): merge joins traces of "
                                 "different hosts (or boots)")
            seen[key] = trace.path


def _probe_union(traces: list[Trace]) -> list[ProbeStatus]:
    """Every input's probe dictionary, in order, each name once (the first
    input that names a probe describes it)."""
    out: dict[str, ProbeStatus] = {}
    for trace in traces:
        for p in trace.header.probes:
            out.setdefault(p.name, p)
    return list(out.values())


def _rebased(trace: Trace, names: list[str], first_source: int, shift_ns: int) -> pa.Table:
    """The trace's events with the merged probe codes, sources and clock."""
    table = trace.table.combine_chunks()
    where = {n: i for i, n in enumerate(names)}
    cols = []
    for f in table.schema:
        col = table.column(f.name)
        if f.name == "probe":
            arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
            lut = np.array([where[n] for n in arr.dictionary.to_pylist()] + [0], np.int64)
            idx = arr.indices.to_numpy(zero_copy_only=False)
            col = dict_column(lut[idx], names, pa.uint16())
        elif f.name == "ts_ns" and shift_ns:
            ts = col.to_numpy().astype(np.int64) + shift_ns
            if len(ts) and (ts.min() < 0 or ts.max() > INT64_MAX):
                raise MergeError(f"{trace.path}: shifted onto the first trace's clock, its times "
                                 "fall outside 0 .. 2^63 (the boots are too far apart)")
            col = pa.array(ts.astype(np.uint64), pa.uint64())
        elif f.name == "source":
            src = col.to_numpy().astype(np.int64) + first_source
            col = pa.array(src.astype(np.uint16), pa.uint16())
        cols.append(col)
    return pa.table(cols, schema=table.schema)


def _trailer(traces: list[Trace], events: int) -> Trailer:
    lost_by: dict[str, int] = {}
    for t in traces:
        for k, v in (t.trailer.lost_by_probe if t.trailer else {}).items():
            lost_by[k] = lost_by.get(k, 0) + v
    ends: list[int] = []
    for t in traces:
        got = t.trailer.clock_offsets_end_ns if t.trailer else []
        ends.extend(got if len(got) == len(_sources(t)) else [s.clock_offset_ns
                                                               for s in _sources(t)])
    return Trailer(reason="merged", events=events, lost=sum(t.lost_total for t in traces),
                   lost_by_probe=lost_by,
                   duration_ns=max((t.trailer.duration_ns if t.trailer else 0) for t in traces),
                   clock_offsets_end_ns=ends)


def pair_inputs(timelines_of: list[Crossings], names: list[str]
                ) -> list[tuple[int | None, Pairing | None, int]]:
    """For each input: (the earlier input it is paired with, the pairing,
    its shift onto input 0's clock)."""
    out: list[tuple[int | None, Pairing | None, int]] = [(None, None, 0)]
    for k in range(1, len(timelines_of)):
        why = ""
        for j in range(k):
            try:
                pairing = pair_hosts(timelines_of[j], timelines_of[k])
            except NoCommonConnection:
                continue
            except OffsetError as exc:
                why = f"{names[j]} and {names[k]}: {exc}"
                continue
            out.append((j, pairing, out[j][2] + pairing.estimate.shift_ns))
            break
        else:
            raise MergeError(why or f"{names[k]} shares no connection with "
                             f"{' or '.join(names[:k])}: no segment one sent was seen by the "
                             "other, nothing to join")
    return out


def merge_traces(paths: list[str | os.PathLike[str]], output: str | os.PathLike[str]
                 ) -> MergeResult:
    """Merge the traces at `paths` into `output` (written beside it and
    renamed into place). TraceFormatError for an unreadable input,
    MergeError for inputs that cannot be joined."""
    if len(paths) < 2:
        raise MergeError("merge needs two traces or more")
    traces = [read_trace(p) for p in paths]
    _check_hosts(traces)
    names = [t.path for t in traces]
    pairs = pair_inputs([crossings(t) for t in traces], names)

    probes = _probe_union(traces)
    probe_names = [p.name for p in probes]
    sources: list[Source] = []
    joined: list[Joined] = []
    tables: list[pa.Table] = []
    for trace, (with_, pairing, shift) in zip(traces, pairs, strict=True):
        first = len(sources)
        for src in _sources(trace):
            if pairing is None and with_ is None:
                sources.append(src)
                continue
            unc = pairing.estimate.uncertainty_ns if pairing else None
            # Shifted twice (an earlier merge): the uncertainties add up.
            prior = src.shift_uncertainty_ns or 0
            sources.append(replace(src, shift_ns=(src.shift_ns or 0) + shift,
                                   shift_uncertainty_ns=None if unc is None else unc + prior,
                                   shift_segments=pairing.matched if pairing else None))
        joined.append(Joined(trace.path, first, shift, pairing, with_))
        rebased = _rebased(trace, probe_names, first, shift)
        # Each event keeps its captured frame (the pcapng export's packets).
        tables.append(rebased.append_column(FRAME_FIELD, [frame_column(rebased.num_rows,
                                                                       trace.frames)]))
    if len(sources) > 1 << 16:
        raise MergeError(f"{len(sources)} hosts: the source column holds 65536")

    table = pa.concat_tables(tables).unify_dictionaries()
    order = pc.sort_indices(table, sort_keys=[("ts_ns", "ascending")])
    table = table.take(order).combine_chunks()
    lost = sorted((replace(rec, ts_ns=rec.ts_ns + j.shift_ns,
                           since_ns=None if rec.since_ns is None else rec.since_ns + j.shift_ns)
                   for t, j in zip(traces, joined, strict=True) for rec in t.lost),
                  key=lambda r: r.ts_ns)
    header = replace(traces[0].header, probes=probes, sources=sources)
    _write(Path(output), header, table, lost, _trailer(traces, table.num_rows))
    return MergeResult(header, joined, table.num_rows, len(lost))


def _write(path: Path, header: Header, table: pa.Table, lost: list[Lost],
           trailer: Trailer) -> None:
    tmp = path.with_name(f".{path.name}.merging")
    writer = TraceWriter(tmp, header)
    try:
        for rec in lost:  # ahead of the events: the reader keeps them whole either way
            writer.lost_events(rec)
        for batch in table.to_batches(max_chunksize=BATCH_ROWS):
            writer.write_batch(batch)
        writer.write_trailer(trailer)
    except BaseException:
        writer.abort()
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
