"""Rewrite a trace of any version as version 2 (Arrow stream) or as version 1
(JSON Lines, for jq). Every event, lost record and the trailer carry over;
a trace without a trailer stays without one (still cut short)."""

from __future__ import annotations

import bisect
import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from tracer.events import EVENT_SCHEMA, events_to_batch
from tracer.tracefile.arrow import TraceWriter
from tracer.tracefile.jsonl import JsonlWriter
from tracer.tracefile.probe_dictionary import recorded_spec
from tracer.tracefile.records import (
    FORMAT_VERSION,
    JSONL_VERSION,
    Header,
    Lost,
    Source,
    with_probes,
)
from tracer.tracefile.scan import TraceScan, scan_trace

TARGETS = {"arrow": FORMAT_VERSION, "jsonl": JSONL_VERSION}
BATCH_ROWS = 65536

# Called as work goes: ("writing", events written so far).
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


@dataclass
class ScratchCopy:
    """A version 2 copy of a trace in a scratch directory of its own, as long
    as the directory is not cleaned up (close())."""

    directory: tempfile.TemporaryDirectory[str]
    path: Path
    converted: Converted

    def close(self) -> None:
        self.directory.cleanup()


def scratch_copy(src: str | os.PathLike[str]) -> ScratchCopy:
    """convert(src) to a version 2 file in a new scratch directory (a big
    version 1 file is read in parts from it)."""
    directory = tempfile.TemporaryDirectory(prefix="kpath-v1-")
    path = Path(directory.name) / "trace.kpath"
    try:
        return ScratchCopy(directory, path, convert(src, path))
    except BaseException:
        directory.cleanup()
        raise


def self_described(header: Header, names: list[str]) -> Header:
    """The header as version 2 wants it: a dictionary entry for every probe
    the events name (`names`), each entry saying what replay needs (filled
    from this kpath's catalog where the source file did not record it), and
    a source record (a version 1 file had its host name and start clock
    offset)."""
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


class _UnlistedProbe(Exception):
    """An event names a probe the header does not list: the header (written
    first) must be made again with it."""


def _probe_column(chunk: pa.DictionaryArray, names: pa.Array) -> pa.Array:
    """A batch's probe codes against the whole dictionary. A version 1
    reader only appends names, so a batch's dictionary is a prefix of the
    header's; anything else is re-encoded."""
    d = chunk.dictionary
    if len(d) > len(names):
        raise _UnlistedProbe
    if d.equals(names.slice(0, len(d))):
        return pa.DictionaryArray.from_arrays(chunk.indices.cast(pa.uint16()), names)
    index = {n: i for i, n in enumerate(names.to_pylist())}
    if not index.keys() >= set(d.to_pylist()):
        raise _UnlistedProbe
    codes = pa.array([index[v] for v in d.to_pylist()], pa.uint16())
    return pa.DictionaryArray.from_arrays(codes.take(chunk.indices), names)


def _rows(scan: TraceScan, names: pa.Array) -> Iterator[tuple[pa.RecordBatch, list[Lost]]]:
    """The scan's events in batches of about BATCH_ROWS (a version 1 chunk
    is smaller; the batches of a version 2 file are kept as they are), with
    the lost records read before each, probe codes against `names`."""
    probe_at = EVENT_SCHEMA.get_field_index("probe")
    held: list[pa.RecordBatch] = []
    lost: list[Lost] = []
    rows = 0
    for batch, batch_lost in scan.chunks():
        lost.extend(batch_lost)
        held.append(batch.set_column(probe_at, "probe", _probe_column(batch.column("probe"),
                                                                       names)))
        rows += batch.num_rows
        if rows >= BATCH_ROWS or len(lost) >= BATCH_ROWS or scan.version > JSONL_VERSION:
            yield from _joined(held, lost)
            held, lost, rows = [], [], 0
    yield from _joined(held, lost)


def _joined(held: list[pa.RecordBatch], lost: list[Lost],
            ) -> Iterator[tuple[pa.RecordBatch, list[Lost]]]:
    if len(held) == 1:
        yield held[0], lost
    elif held:
        # One batch: its comm dictionaries unified.
        table = pa.Table.from_batches(held, EVENT_SCHEMA).combine_chunks()
        for k, batch in enumerate(table.to_batches()):
            yield batch, lost if k == 0 else []
    elif lost:
        yield events_to_batch([], []), lost


def _probe_names(src: str | os.PathLike[str]) -> list[str]:
    """Every probe the events name, in order of first use: a pass of its own
    over a file whose events name probes its header does not list."""
    names: list[str] = []
    with scan_trace(src) as scan:
        for batch in scan:
            names.extend(v for v in batch.column("probe").dictionary.to_pylist()
                         if v not in names)
    return names


def _to_arrow(src: str | os.PathLike[str], tmp: Path, progress: Progress | None) -> Converted:
    """Streamed: each batch is written as it is read; nothing holds the
    whole trace. The header goes first, so a file whose events name
    probes its header lacks is read twice: once for those names."""
    try:
        return _write_arrow(src, tmp, [], progress)
    except _UnlistedProbe:
        return _write_arrow(src, tmp, _probe_names(src), progress)


def _write_arrow(src: str | os.PathLike[str], tmp: Path, extra: list[str],
                 progress: Progress | None) -> Converted:
    scan = scan_trace(src)
    with scan:
        header = self_described(scan.header, extra)
        names = pa.array(header.probe_names, pa.string())
        writer = TraceWriter(tmp, header)
        # Lost records ride on the first batch whose last event is not
        # older: about where the tracer noticed them.
        pending: list[Lost] = []
        done = 0
        try:
            for batch, lost in _rows(scan, names):
                pending = sorted([*pending, *lost], key=lambda r: r.ts_ns)
                last = pc.max(batch.column("ts_ns")).as_py() if batch.num_rows else None
                take = bisect.bisect_right([r.ts_ns for r in pending], last) \
                    if last is not None else 0
                for rec in pending[:take]:
                    writer.lost_events(rec)
                pending = pending[take:]
                writer.write_batch(batch, scan.frames_between(done, batch.num_rows))
                done += batch.num_rows
                if progress:
                    progress("writing", done)
            for rec in pending:
                writer.lost_events(rec)
            writer.flush()
            if scan.trailer is not None:
                writer.write_trailer(scan.trailer)
        finally:
            writer.abort()
    return Converted(FORMAT_VERSION, done, len(scan.lost), scan.trailer is not None,
                     scan.cut_short)


def _to_jsonl(src: str | os.PathLike[str], tmp: Path, progress: Progress | None) -> Converted:
    scan = scan_trace(src)
    with scan, open(tmp, "w", encoding="utf-8") as fh:
        writer = JsonlWriter(fh, scan.header)
        for batch, lost in scan.chunks():
            writer.write(batch, lost, scan.frames_between(writer.events, batch.num_rows))
            if progress:
                progress("writing", writer.events)
        if scan.trailer is not None:
            writer.trailer(scan.trailer)
    return Converted(JSONL_VERSION, writer.events, len(scan.lost), scan.trailer is not None,
                     scan.cut_short)
