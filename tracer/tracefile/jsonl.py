"""Trace format version 1: JSON Lines (docs/trace-format.md), read into the
same columns as version 2, and written by `kpath convert --to jsonl`.

Reading goes chunk by chunk, each line checked against the schema
(schema.py): a chunk's lines are decoded at once; when that fails, line by
line, so that the one-line error names the line at fault. Lines are
bounded (MAX_LINE_BYTES), so no line can take more memory than that."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import IO, Any

import numpy as np
import pyarrow as pa

from tracer.events import FRAME_TYPE, FRAMES_SCHEMA, ZERO_OMITTED, batch_columns, events_to_batch
from tracer.tracefile.records import JSONL_VERSION, Header, Lost, TraceFormatError, Trailer
from tracer.tracefile.schema import (
    MAX_LINE_BYTES,
    SchemaError,
    decode_array,
    decode_header_line,
    decode_line,
    record_kind,
)

_EVENT, _LOST, _TRAILER = attrgetter("event"), attrgetter("lost"), attrgetter("trailer")
_FRAME = attrgetter("frame")

# Bytes of lines parsed at a time: bounds memory when scanning a big file
# (chosen by measurement, bench/bench_format.py: larger is no faster).
CHUNK_BYTES = 1 << 20


def parse_header_line(line: bytes, name: str) -> Header:
    try:
        return decode_header_line(line, range(JSONL_VERSION, JSONL_VERSION + 1),
                                  f"a JSON Lines trace must be version {JSONL_VERSION}")
    except SchemaError as exc:
        raise TraceFormatError(f"{name}: {exc}") from None


@dataclass
class Chunk:
    """What one run of complete lines held."""

    batch: pa.RecordBatch
    lost: list[Lost] = field(default_factory=list)
    trailer: Trailer | None = None
    frames: pa.Table | None = None  # FRAMES_SCHEMA, rows counted in this chunk


def _frames(events: list[Any]) -> pa.Table | None:
    """The events' `frame` keys as frames (rows: the events' positions)."""
    found = list(map(_FRAME, events))
    if found.count(None) == len(found):
        return None
    rows = [i for i, f in enumerate(found) if f is not None]
    recs = [found[i] for i in rows]
    cols = {"row": pa.array(rows, pa.uint64()),
            "data": pa.array([bytes.fromhex(r.data) for r in recs], pa.binary())}
    for f in FRAME_TYPE:
        if f.name != "data":
            cols[f.name] = pa.array([getattr(r, f.name) for r in recs], f.type)
    return pa.table([cols[f.name] for f in FRAMES_SCHEMA], schema=FRAMES_SCHEMA)


@dataclass
class JsonlReader:
    """Parses the lines after the header, a chunk at a time, keeping what
    spans chunks: the probe dictionary and whether the trailer was seen."""

    name: str
    probe_names: list[str]
    trailer: Trailer | None = None

    def parse(self, run: Run) -> Chunk:
        """A run of lines (read_chunks)."""
        recs = run.decode() if self.trailer is None else None
        if recs:
            events = list(map(_EVENT, recs))
            # All events (the common case): checked without a loop in Python.
            if events.count(None) == 0 and list(map(_LOST, recs)).count(None) == len(recs) \
                    and list(map(_TRAILER, recs)).count(None) == len(recs):
                return Chunk(self._batch(events, run), frames=_frames(events))
        numbered = (enumerate(recs, run.first_lineno) if recs is not None
                    else self._line_by_line(run))
        events = []
        lost: list[Lost] = []
        trailer = None
        for lineno, rec in numbered:
            kind, value = self._kind(rec, lineno)
            if kind == "event":
                events.append(value)
            elif kind == "lost":
                lost.append(value)
            else:
                self.trailer = trailer = value
        return Chunk(self._batch(events, run), lost, trailer, _frames(events))

    def _batch(self, events: list[Any], run: Run) -> pa.RecordBatch:
        try:
            return events_to_batch(events, self.probe_names)
        except ValueError:
            return self._blame(run)

    def _kind(self, rec: Any, lineno: int) -> tuple[str, Any]:
        if self.trailer is not None:
            raise TraceFormatError(f"{self.name}:{lineno}: record after the trailer")
        try:
            return record_kind(rec)
        except SchemaError as exc:
            raise TraceFormatError(f"{self.name}:{lineno}: {exc}") from None

    def _line_by_line(self, run: Run) -> Iterator[tuple[int, Any]]:
        """The records of the lines one at a time (blank lines skipped),
        the first that does not decode a one-line error with its number."""
        for lineno, line in enumerate(run.text().split(b"\n"), run.first_lineno):
            if not line.strip():
                continue
            try:
                yield lineno, decode_line(line)
            except SchemaError as exc:
                raise TraceFormatError(f"{self.name}:{lineno}: {exc}") from None

    def _blame(self, run: Run) -> pa.RecordBatch:
        """The run's events decode but do not fit the columns (a uint64
        overflow, an address that is not IPv4): find the line, say why."""
        for lineno, rec in self._line_by_line(run):
            if rec.event is not None:
                try:
                    events_to_batch([rec.event], list(self.probe_names))
                except ValueError as exc:
                    raise TraceFormatError(
                        f"{self.name}:{lineno}: bad event record: {exc}") from None
        raise AssertionError("events that fail together pass one by one")


_NL, _COMMA, _OPEN, _CLOSE = b"\n,[]"


@dataclass
class Run:
    """Lines read at once: `buf[1:end]`, after one spare byte, the first
    being line `first_lineno` of the file; `newlines` are the indices in
    `buf` of their newlines (none: the file's unterminated last line)."""

    buf: bytearray
    end: int
    first_lineno: int
    newlines: np.ndarray

    def text(self) -> bytes:
        return bytes(memoryview(self.buf)[1:self.end])

    def decode(self) -> list[Any] | None:
        """The records, decoded as one JSON array made in place (the spare
        byte '[', the newlines ',' but the last ']'; put back after): no
        copy of the text. None when that is not an array of one record per
        line (a blank line, a line that is not a record, no newline)."""
        nl = self.newlines
        if not len(nl):
            return None
        at = np.frombuffer(self.buf, np.uint8, self.end)
        self.buf[0] = _OPEN
        at[nl[:-1]] = _COMMA
        at[nl[-1]] = _CLOSE
        try:
            return decode_array(memoryview(self.buf)[:self.end], len(nl))
        finally:
            at[nl] = _NL


def read_chunks(fh: IO[bytes], name: str, first_lineno: int, chunk_bytes: int = CHUNK_BYTES,
                ) -> Iterator[Run]:
    """The file from here as runs of complete lines, each read into a
    buffer of its own; at the end, the unterminated last line, if any, as a
    run without newlines. A line longer than MAX_LINE_BYTES is a
    TraceFormatError, found before more than that is held."""
    rest = b""
    lineno = first_lineno
    while True:
        buf = bytearray(1 + len(rest) + chunk_bytes)
        buf[1:1 + len(rest)] = rest
        got = fh.readinto(memoryview(buf)[1 + len(rest):])  # type: ignore[attr-defined]
        if not got:
            break
        total = 1 + len(rest) + got
        newlines = np.flatnonzero(np.frombuffer(buf, np.uint8, total) == _NL)
        cut = 1
        if len(newlines):
            cut = int(newlines[-1]) + 1
            yield Run(buf, cut, lineno, newlines)
            lineno += len(newlines)
        rest = bytes(buf[cut:total])
        if len(rest) > MAX_LINE_BYTES:
            raise TraceFormatError(f"{name}:{lineno}: line longer than "
                                   f"{MAX_LINE_BYTES >> 20} MiB, not a kpath record")
    if rest:
        yield Run(bytearray(1) + rest, 1 + len(rest), lineno, np.empty(0, np.intp))


class JsonlWriter:
    """Writes version 1 JSON Lines: the header at once, then each batch's
    lost records before its events, then the trailer."""

    def __init__(self, fh: IO[str], header: Header) -> None:
        self._fh = fh
        self.events = 0
        self._line({"header": header.to_record(version=JSONL_VERSION)})

    def _line(self, rec: dict[str, Any]) -> None:
        self._fh.write(json.dumps(rec, separators=(",", ":")) + "\n")

    def write(self, batch: pa.RecordBatch, lost: list[Lost],
              frames: pa.Table | None = None) -> None:
        """frames: the batch's (FRAMES_SCHEMA, rows counted in the batch)."""
        for rec in lost:
            self._line({"lost": rec.to_record()})
        # Event.to_record's mapping, built from the columns without Event
        # objects (asdict per event would be most of the time).
        cols = batch_columns(batch)
        names = list(cols)
        dumps = json.JSONEncoder(separators=(",", ":")).encode
        by_row = {}
        if frames is not None:
            for rec in frames.to_pylist():
                row = rec.pop("row")
                rec["data"] = rec["data"].hex()
                by_row[row] = {k: v for k, v in rec.items() if v is not None}
        out = []
        for i, row in enumerate(zip(*cols.values(), strict=True)):
            fields = {k: v for k, v in zip(names, row, strict=True)
                      if v is not None and not (v == 0 and k in ZERO_OMITTED)}
            if i in by_row:
                fields["frame"] = by_row[i]
            out.append(f'{{"event":{dumps(fields)}}}\n')
        self._fh.write("".join(out))
        self.events += batch.num_rows

    def trailer(self, trailer: Trailer) -> None:
        self._line({"trailer": trailer.to_record()})


def write_jsonl(fh: IO[str], header: Header,
                records: Iterator[tuple[pa.RecordBatch, list[Lost]]],
                trailer: Trailer | None) -> int:
    """A whole version 1 file; returns the number of events written."""
    w = JsonlWriter(fh, header)
    for batch, lost in records:
        w.write(batch, lost)
    if trailer is not None:
        w.trailer(trailer)
    return w.events
