"""Rewrite a trace of any version as version 2 (Arrow stream) or as version 1
(JSON Lines, for jq). Every event, lost record and the trailer carry over;
a trace without a trailer stays without one (still cut short)."""

from __future__ import annotations

import bisect
import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from tracer.events import EVENT_SCHEMA
from tracer.tracefile.arrow import TraceWriter
from tracer.tracefile.jsonl import JsonlWriter
from tracer.tracefile.probe_dictionary import recorded_spec
from tracer.tracefile.records import (
    FORMAT_VERSION,
    JSONL_VERSION,
    Header,
    Source,
    Trace,
    with_probes,
)
from tracer.tracefile.scan import scan_trace

TARGETS = {"arrow": FORMAT_VERSION, "jsonl": JSONL_VERSION}
BATCH_ROWS = 65536

# Called as work goes: ("reading" | "writing", events so far).
Progress = Callable[[str, int], None]


@dataclass
class Converted:
    version: int
    events: int
    lost: int  # lost records
    trailer: bool
    cut_short: str | None


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str], to: str = "arrow",
            progress: Progress | None = None) -> Converted:
    """Write `src` to `dst` as version TARGETS[to]. The output appears only
    when complete (written beside it, then renamed). Raises
    TraceFormatError for an unreadable input, OSError when dst cannot be
    written."""
    version = TARGETS[to]
    out = Path(dst)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
    try:
        done = _to_arrow(src, tmp, progress) if version == FORMAT_VERSION else \
            _to_jsonl(src, tmp, progress)
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return done


def self_described(header: Header, table: pa.Table) -> Header:
    """The header as version 2 wants it: a dictionary entry for every probe
    the events name, each entry saying what replay needs (filled from this
    kpath's catalog where the source file did not record it), and a source
    record (a version 1 file had its host name and start clock offset)."""
    names: list[str] = []
    for chunk in table.column("probe").chunks:
        names.extend(v for v in chunk.dictionary.to_pylist() if v not in names)
    header = with_probes(header, names)
    probes = []
    for st in header.probes:
        spec = recorded_spec(st)
        if spec is not None:
            st = replace(st, capture=st.capture or str(spec.capture),
                         returns=st.returns or str(spec.ret),
                         length_arg3=st.length_arg3 if st.length_arg3 is not None
                         else spec.length_arg3)
        probes.append(st)
    sources = header.sources or [Source(hostname=header.hostname,
                                        clock_offset_ns=header.clock_offset_ns)]
    return replace(header, probes=probes, sources=sources)


def _probe_column(col: pa.ChunkedArray, names: pa.Array) -> Iterator[pa.Array]:
    """Each chunk's probe codes against the whole dictionary. A version 1
    reader only appends names, so a chunk's dictionary is a prefix of the
    header's; anything else is re-encoded."""
    for chunk in col.chunks:
        d = chunk.dictionary
        if d.equals(names.slice(0, len(d))):
            yield pa.DictionaryArray.from_arrays(chunk.indices.cast(pa.uint16()), names)
        else:
            index = {n: i for i, n in enumerate(names.to_pylist())}
            codes = pa.array([index[v] for v in d.to_pylist()], pa.uint16())
            yield pa.DictionaryArray.from_arrays(codes.take(chunk.indices), names)


def _batches(table: pa.Table, names: list[str]) -> Iterator[pa.RecordBatch]:
    probe = pa.chunked_array(list(_probe_column(table.column("probe"),
                                                pa.array(names, pa.string()))),
                             EVENT_SCHEMA.field("probe").type)
    table = table.set_column(EVENT_SCHEMA.get_field_index("probe"), "probe", probe)
    yield from table.to_batches(max_chunksize=BATCH_ROWS)


def _read(src: str | os.PathLike[str], progress: Progress | None) -> Trace:
    scan = scan_trace(src)
    batches = []
    n = 0
    with scan:
        for batch in scan:
            batches.append(batch)
            n += batch.num_rows
            if progress:
                progress("reading", n)
    return Trace.from_table(scan.header, pa.Table.from_batches(batches, EVENT_SCHEMA),
                            scan.lost, scan.trailer, scan.path, scan.cut_short)


def _to_arrow(src: str | os.PathLike[str], tmp: Path, progress: Progress | None) -> Converted:
    trace = _read(src, progress)
    header = self_described(trace.header, trace.table)
    writer = TraceWriter(tmp, header)
    # Lost records ride on the first batch whose last event is not older:
    # about where the tracer noticed them.
    pending = sorted(trace.lost, key=lambda r: r.ts_ns)
    stamps = [r.ts_ns for r in pending]
    done = 0
    try:
        for batch in _batches(trace.table, header.probe_names):
            last = pc.max(batch.column("ts_ns")).as_py() if batch.num_rows else None
            take = bisect.bisect_right(stamps, last) if last is not None else 0
            for rec in pending[:take]:
                writer.lost_events(rec)
            pending, stamps = pending[take:], stamps[take:]
            writer.write_batch(batch)
            done += batch.num_rows
            if progress:
                progress("writing", done)
        for rec in pending:
            writer.lost_events(rec)
        writer.flush()
        if trace.trailer is not None:
            writer.write_trailer(trace.trailer)
    finally:
        writer.abort()
    return Converted(FORMAT_VERSION, done, len(trace.lost), trace.trailer is not None,
                     trace.cut_short)


def _to_jsonl(src: str | os.PathLike[str], tmp: Path, progress: Progress | None) -> Converted:
    scan = scan_trace(src)
    with scan, open(tmp, "w", encoding="utf-8") as fh:
        writer = JsonlWriter(fh, scan.header)
        for batch, lost in scan.chunks():
            writer.write(batch, lost)
            if progress:
                progress("writing", writer.events)
        if scan.trailer is not None:
            writer.trailer(scan.trailer)
    return Converted(JSONL_VERSION, writer.events, len(scan.lost), scan.trailer is not None,
                     scan.cut_short)
