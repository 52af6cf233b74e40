"""Trace format version 2: an Arrow IPC stream (docs/trace-format.md).

The schema message carries the header (metadata key `kpath`); each record
batch holds events in EVENT_SCHEMA, with the lost records noticed before it
in its custom metadata (`kpath.lost`); the last batch, possibly empty,
carries the trailer (`kpath.trailer`). A stream is readable up to its last
complete batch, so a tracer killed mid-way leaves every batch it finished;
a missing trailer is how a reader knows the file was cut."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from tracer.events import (
    CTX_VALUES,
    EVENT_SCHEMA,
    FILE_SCHEMA,
    FRAME_FIELD,
    FRAME_TYPE,
    KIND_VALUES,
    LATE_COLUMNS,
    SOFTIRQ_NAMES,
    Event,
    events_to_batch,
    frames_of,
    with_frames,
)
from tracer.tracefile.loss_columns import LossColumns, LossMode
from tracer.tracefile.records import (
    FORMAT_VERSION,
    INT64_MAX,
    Header,
    Lost,
    TraceFormatError,
    Trailer,
)
from tracer.tracefile.schema import (
    SchemaError,
    decode_header,
    decode_lost_columns,
    decode_lost_list,
    decode_trailer,
)

HEADER_KEY = b"kpath"
LOST_KEY = b"kpath.lost"
TRAILER_KEY = b"kpath.trailer"
# Chosen by measurement (docs/trace-format.md, "Compression").
COMPRESSION: str | None = "zstd"
# Event objects handed to TraceWriter.event() are written this many at a time.
OBJECT_BATCH_ROWS = 65536
NO_TRAILER = "no trailer: the tracer stopped before closing the file"
# Every Arrow IPC stream message starts with this continuation marker.
STREAM_MAGIC = b"\xff\xff\xff\xff"


class TraceWriter:
    """Streams a version 2 trace: each batch reaches the file when written.

    Capture hands over batches (write_batch); Event objects (event,
    events_batch) are gathered into batches for tools and tests."""

    def __init__(self, path: str | os.PathLike[str], header: Header,
                 compression: str | None = COMPRESSION) -> None:
        self.path = Path(path)
        self.header = header
        self._probe_names = header.probe_names
        if len(self._probe_names) > 1 << 16:
            raise ValueError(f"{len(self._probe_names)} probes: the probe column holds 65536")
        self._probe_dict = pa.array(self._probe_names, pa.string())
        schema = FILE_SCHEMA.with_metadata(
            {HEADER_KEY: json.dumps(header.to_record(), separators=(",", ":"))})
        # Opened by Python for its plain OSError (errno, strerror) on failure.
        # Unbuffered: Arrow buffers a batch; each flush must reach the file.
        self._file = open(self.path, "wb", buffering=0)  # noqa: SIM115
        self._out = pa.BufferedOutputStream(pa.PythonFile(self._file, mode="w"), 1 << 20)
        self._options = ipc.IpcWriteOptions(compression=compression)
        self._writer = ipc.new_stream(self._out, schema, options=self._options)
        self._written = 0
        self.lost = 0
        self.lost_by_probe: dict[str, int] = {}
        self._pending_lost: list[Lost] = []
        self._pending_events: list[Event] = []
        self._closed = False
        # The stream writer puts out the schema (our header) only with the
        # first batch: an empty one now, so that a tracer killed before any
        # event leaves a readable file that says how it was set up.
        self._write(self._empty())

    @property
    def events(self) -> int:
        """Events handed over so far (those gathered from event() included)."""
        return self._written + len(self._pending_events)

    def rehearse(self, batch: pa.RecordBatch) -> None:
        """Write `batch` (FILE_SCHEMA) with this file's options where it
        goes nowhere: a live trace's first large batch would otherwise pay
        for the codec's set-up and buffers in the middle of its command."""
        with ipc.new_stream(pa.BufferOutputStream(), batch.schema, options=self._options) as w:
            w.write_batch(batch)

    def write_batch(self, batch: pa.RecordBatch, frames: pa.Table | None = None) -> None:
        """Events in EVENT_SCHEMA whose probe dictionary is the header's probe
        names, in order, and whose kind, ctx and softirq dictionaries hold
        only KIND_VALUES, CTX_VALUES and SOFTIRQ_NAMES (ValueError otherwise);
        or in FILE_SCHEMA, with their frames (tracer/frames.py). `frames`
        (FRAMES_SCHEMA, rows counted in this batch): frames of an
        EVENT_SCHEMA batch. Lost records noticed since the last batch ride
        on it; the batch is in the file when this returns."""
        if batch.schema.equals(EVENT_SCHEMA):
            batch = with_frames(batch, frames)
        elif not batch.schema.equals(FILE_SCHEMA):
            raise ValueError("batch is not in EVENT_SCHEMA: "
                             f"{batch.schema.remove_metadata()} vs {EVENT_SCHEMA}")
        probe_dict = batch.column("probe").dictionary
        if not probe_dict.equals(self._probe_dict):
            raise ValueError("the probe column's dictionary must be the header's probe names "
                             f"in order: got {probe_dict.to_pylist()[:5]}..., "
                             f"header {self._probe_names[:5]}...")
        _check_enums(batch)  # what a reader would refuse, refused here
        self._flush_events()
        self._write(batch)

    def event(self, ev: Event) -> None:
        self._pending_events.append(ev)
        if len(self._pending_events) >= OBJECT_BATCH_ROWS:
            self._flush_events()

    def events_batch(self, evs: list[Event]) -> None:
        self._pending_events.extend(evs)
        self._flush_events()

    def lost_events(self, rec: Lost) -> None:
        self._pending_lost.append(rec)
        self.lost += rec.count
        key = rec.probe or "(unknown)"
        self.lost_by_probe[key] = self.lost_by_probe.get(key, 0) + rec.count

    def flush(self) -> None:
        """Everything handed over so far is in the file (lost records with an
        empty batch when no events came since)."""
        self._flush_events()
        if self._pending_lost:
            self._write(self._empty())

    def close(self, reason: str, duration_ns: int = 0, command_exit: int | None = None,
              clock_offsets_end_ns: list[int] | None = None) -> Trailer:
        trailer = Trailer(reason=reason, events=self.events,
                          lost=self.lost, lost_by_probe=dict(self.lost_by_probe),
                          duration_ns=duration_ns, command_exit=command_exit,
                          clock_offsets_end_ns=list(clock_offsets_end_ns or []))
        if not self._closed:
            self.write_trailer(trailer)
        return trailer

    def write_trailer(self, trailer: Trailer) -> None:
        """Ends the stream with `trailer` as it is (close() builds one from
        the counts; conversion copies the original)."""
        self._flush_events()
        self._write(self._empty(), trailer)
        self._writer.close()
        self._out.close()
        self._file.close()
        self._closed = True

    def abort(self) -> None:
        """Stop writing without a trailer (the file reads as cut short)."""
        if not self._closed:
            self._out.close()
            self._file.close()
            self._closed = True

    def _flush_events(self) -> None:
        if not self._pending_events:
            return
        names = list(self._probe_names)
        batch = events_to_batch(self._pending_events, names)
        if len(names) != len(self._probe_names):
            raise ValueError(f"event from probe {names[len(self._probe_names)]!r}, which is "
                             "not in the header's probe dictionary")
        self._pending_events = []
        self._write(with_frames(batch, None))

    def _empty(self) -> pa.RecordBatch:
        # The same dictionaries as events_to_batch's: an empty batch then
        # adds no dictionary messages but for comm.
        return with_frames(events_to_batch([], list(self._probe_names)), None)

    def _write(self, batch: pa.RecordBatch, trailer: Trailer | None = None) -> None:
        meta: dict[bytes, bytes] = {}
        if self._pending_lost:
            meta[LOST_KEY] = _dumps([rec.to_record() for rec in self._pending_lost])
            self._pending_lost = []
        if trailer is not None:
            meta[TRAILER_KEY] = _dumps(trailer.to_record())
        self._writer.write_batch(batch, custom_metadata=meta or None)
        self._out.flush()
        self._written += batch.num_rows


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _arrow_msg(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class StreamReader:
    """Reads a version 2 stream batch by batch (the header at once)."""

    def __init__(self, source: pa.NativeFile, name: str) -> None:
        self.name = name
        self._source = source
        self.losses: LossMode = "records"  # how the loss records come: TraceScan.select_losses
        try:
            self._open()
        except BaseException:
            source.close()
            raise

    def _stream(self, fields: list[int]) -> ipc.RecordBatchStreamReader:
        # One thread: a batch (~65,536 events) decompresses in about a
        # millisecond, and handing its columns to Arrow's pool cost twice
        # the CPU time of decompressing them in this thread (1 M events:
        # 0.15 s against 0.07 s).
        options = ipc.IpcReadOptions(use_threads=False, included_fields=fields)
        try:
            return ipc.open_stream(self._source, options=options)
        except (pa.ArrowException, OSError, MemoryError) as exc:
            raise TraceFormatError(f"{self.name}: not a readable kpath trace (truncated or "
                                   f"corrupt Arrow stream: {_arrow_msg(exc)})") from None

    def _open(self) -> None:
        name = self.name
        self._reader = self._stream([])
        try:
            schema = self._reader.schema
            meta = schema.metadata or {}
            names = schema.names
        except (UnicodeDecodeError, pa.ArrowException, MemoryError) as exc:
            raise TraceFormatError(f"{name}: not a readable kpath trace (corrupt Arrow schema: "
                                   f"{_arrow_msg(exc)})") from None
        if HEADER_KEY not in meta:
            raise TraceFormatError(f"{name}: not a kpath trace (an Arrow stream without "
                                   "kpath metadata)")
        self.header = _parse_header(meta[HEADER_KEY], name)
        # Ours first, in order; a newer writer may append columns; an older
        # one lacks the late ones (LATE_COLUMNS), which read as their default.
        self._late = [f for f in list(EVENT_SCHEMA)[len(EVENT_SCHEMA) - len(LATE_COLUMNS):]
                      if f.name not in names]
        ours = len(EVENT_SCHEMA) - len(self._late)
        wrong = [f.name for i, f in enumerate(list(EVENT_SCHEMA)[:ours])
                 if i >= len(names) or not schema.field(i).remove_metadata().equals(f)]
        # (a file of before the late columns may still hold frames after its own)
        own = len([n for n in names if n != FRAME_FIELD.name])
        if wrong or len(set(names)) != len(names) or (self._late and own != ours):
            raise TraceFormatError(f"{name}: not a kpath trace (an Arrow stream with another "
                                   f"schema: columns {', '.join(wrong[:4])} differ)")
        # A newer writer's extra columns are left out; frames are kept apart.
        self._extra = names[:ours] != names
        self._ours = ours
        self._frame_at = schema.get_field_index(FRAME_FIELD.name)
        if self._frame_at >= 0 and not schema.field(self._frame_at).type.equals(FRAME_TYPE):
            raise TraceFormatError(f"{name}: not a kpath trace (its frame column is "
                                   f"{schema.field(self._frame_at).type}, not {FRAME_TYPE})")
        self._rows = 0
        self._stop_after: int | None = None
        self.stopped = False  # at stop_after's batch, before the file's end
        self.frames: list[pa.Table] = []  # the frames read so far (tracer/frames.py)
        self.trailer: Trailer | None = None
        self.cut_short: str | None = None
        self.batches_read = 0

    def select(self, columns: list[str]) -> None:
        """Read only these EVENT_SCHEMA columns, in schema order (before the
        first batch): the others are neither decompressed nor checked."""
        fields = sorted(EVENT_SCHEMA.get_field_index(c) for c in columns)
        if min(fields, default=0) < 0:
            raise ValueError(f"not event columns: {columns}")
        # A late column this file lacks is not read (past its own columns
        # lies the frame column) but added at its default.
        absent = {f.name for f in self._late}
        self._late = [f for f in self._late if f.name in columns]
        fields = [i for i in fields if EVENT_SCHEMA.field(i).name not in absent]
        self._source.seek(0)
        self._reader = self._stream(fields)  # its schema: these columns
        self._extra = False
        self._frame_at = -1  # frames are not among them

    def stop_after(self, offset: int) -> None:
        """End with the first batch that ends at or past file offset
        `offset` (the head of a file read in two halves: split.py), as
        `stopped`: neither cut short nor complete."""
        self._stop_after = offset

    def __iter__(self) -> Iterator[tuple[pa.RecordBatch, list[Lost] | LossColumns]]:
        while self.trailer is None:
            try:
                batch, meta = self._reader.read_next_batch_with_custom_metadata()
                # Checks every offset and dictionary index: a corrupt batch
                # is refused here, not dereferenced later.
                batch.validate(full=True)
                _check_enums(batch)
            except StopIteration:
                break
            except (pa.ArrowException, OSError, MemoryError, ValueError) as exc:
                self.cut_short = (f"batch {self.batches_read + 1} incomplete or unreadable "
                                  f"({_arrow_msg(exc)})")
                break
            self.batches_read += 1
            if self._frame_at >= 0:
                found = frames_of(batch.column(self._frame_at), self._rows)
                if found.num_rows:
                    self.frames.append(found)
            self._rows += batch.num_rows
            if self._extra:
                batch = batch.select(list(range(self._ours)))
            if self._late:
                batch = _with_late_columns(batch, self._late)
            lost: list[Lost] | LossColumns = []
            if meta:
                lost, self.trailer = self._records(meta)
            if self.trailer is None and self._stop_after is not None \
                    and self._source.tell() >= self._stop_after:
                self.stopped = True
            yield batch, lost
            if self.stopped:
                return
        if self.trailer is None:
            no_trailer = NO_TRAILER
            self.cut_short = f"{self.cut_short}; {no_trailer}" if self.cut_short else no_trailer

    def _records(self, meta: Any) -> tuple[list[Lost] | LossColumns, Trailer | None]:
        lost: list[Lost] | LossColumns = []
        trailer = None
        try:
            if LOST_KEY in meta and self.losses == "records":
                lost = decode_lost_list(meta[LOST_KEY])
            elif LOST_KEY in meta and self.losses == "columns":
                lost = decode_lost_columns(meta[LOST_KEY])
            if TRAILER_KEY in meta:
                trailer = decode_trailer(meta[TRAILER_KEY])
        except SchemaError as exc:
            raise TraceFormatError(f"{self.name}: batch {self.batches_read}: bad lost or "
                                   f"trailer record: {exc}") from None
        return lost, trailer

    def close(self) -> None:
        self._source.close()


def _with_late_columns(batch: pa.RecordBatch, late: list[pa.Field]) -> pa.RecordBatch:
    """A batch of a file written before `late` columns existed, with them
    added at their default value (LATE_COLUMNS)."""
    cols = batch.columns + [pa.array(np.full(batch.num_rows, LATE_COLUMNS[f.name]), f.type)
                            for f in late]
    return pa.record_batch(cols, schema=pa.schema(list(batch.schema) + late))


_ENUMS = {"kind": set(KIND_VALUES), "ctx": set(CTX_VALUES), "softirq": set(SOFTIRQ_NAMES)}


def _check_enums(batch: pa.RecordBatch) -> None:
    """What the record schema (schema.py) refuses in a version 1 line, refused
    in a batch (in the columns read): enumerations' unknown names, times
    past int64."""
    names = batch.schema.names
    for name, known in _ENUMS.items():
        if name not in names:
            continue
        values = batch.column(name).dictionary.to_pylist()
        if not known.issuperset(values):
            raise ValueError(f"unknown {name} value(s): {sorted(set(values) - known)[:3]}")
    if "ts_ns" not in names:
        return
    ts, valid = int_values(batch.column("ts_ns"))
    ts = ts if valid is None else ts[valid]
    latest = int(ts.max()) if len(ts) else None
    if latest is not None and latest > INT64_MAX:
        raise ValueError(f"ts_ns {latest} past 2^63 - 1")


def int_values(arr: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """An integer (or dictionary index) array's values as numpy sees its
    buffer, without a copy, and which are known (None: all). A null's
    value is whatever the buffer holds. Read from the buffers, not
    through pyarrow.compute's fill_null and is_null: importing that
    module alone costs a tenth of `replay --stats`' start-up."""
    n, at = len(arr), arr.offset
    validity, data = arr.buffers()[:2]
    values = np.frombuffer(data, dtype=arr.type.to_pandas_dtype(), count=at + n)[at:] \
        if data is not None else np.zeros(n, dtype=arr.type.to_pandas_dtype())
    if not arr.null_count or validity is None:
        return values, None
    bits = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), bitorder="little")
    return values, bits[at:at + n].view(np.bool_)


def _parse_header(raw: bytes, name: str) -> Header:
    try:
        return decode_header(raw, range(2, FORMAT_VERSION + 1),
                             "an Arrow trace must be version 2 or later")
    except SchemaError as exc:
        raise TraceFormatError(f"{name}: {exc}") from None
