"""Trace format version 1: JSON Lines (docs/trace-format.md), read into the
same columns as version 2, and written by `kpath convert --to jsonl`.

Reading goes chunk by chunk: pyarrow's JSON reader parses a chunk of lines
straight into columns against an explicit schema; when it refuses a chunk,
or what it parsed breaks a rule it does not know, the same chunk goes
through the strict line-by-line parser, whose one-line errors carry the line
number. A good file never takes the slow path."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from tracer.events import (
    CTX_VALUES,
    EVENT_SCHEMA,
    KIND_VALUES,
    SOFTIRQ_NAMES,
    ZERO_OMITTED,
    Event,
    batch_columns,
    events_to_batch,
)
from tracer.tracefile.records import (
    JSONL_VERSION,
    Header,
    Lost,
    TraceFormatError,
    Trailer,
    header_from_body,
)

# Bytes of lines parsed at a time: bounds memory when scanning a big file.
CHUNK_BYTES = 32 << 20

_DICT_FIELDS = {"comm", "probe", "kind", "ctx", "softirq"}
_ADDR_FIELDS = ("saddr", "daddr")
_REQUIRED = ("ts_ns", "cpu", "tgid", "tid", "comm", "probe", "kind", "ctx")


def _json_type(f: pa.Field) -> pa.DataType:
    """The type pyarrow.json parses a column as: integers with their range
    checked by the parser, dictionary columns and addresses as text."""
    if f.name in _DICT_FIELDS or f.name in _ADDR_FIELDS:
        return pa.string()
    return f.type


_LINE_SCHEMA = pa.schema([
    ("event", pa.struct([(f.name, _json_type(f)) for f in EVENT_SCHEMA])),
    ("lost", pa.struct([("ts_ns", pa.int64()), ("count", pa.int64()), ("probe", pa.string()),
                        ("cpu", pa.int64())])),
])
_PARSE = pj.ParseOptions(explicit_schema=_LINE_SCHEMA, unexpected_field_behavior="error")
_INT_RANGES = {
    f.name: (0, 2 ** f.type.bit_width - 1) if pa.types.is_unsigned_integer(f.type)
    else (-(2 ** (f.type.bit_width - 1)), 2 ** (f.type.bit_width - 1) - 1)
    for f in EVENT_SCHEMA if pa.types.is_integer(f.type) and f.name not in _ADDR_FIELDS
}


class _FastPathRefused(Exception):
    """The chunk needs the strict parser (which names the line at fault)."""


def parse_header_line(line: bytes, name: str) -> Header:
    try:
        rec = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise TraceFormatError(f"{name}: not a kpath trace (first line is not JSON)") from None
    body = rec.get("header") if isinstance(rec, dict) else None
    return header_from_body(body, name, range(JSONL_VERSION, JSONL_VERSION + 1),
                            f"a JSON Lines trace must be version {JSONL_VERSION}")


@dataclass
class Chunk:
    """What one run of complete lines held."""

    batch: pa.RecordBatch
    lost: list[Lost] = field(default_factory=list)
    trailer: Trailer | None = None


@dataclass
class JsonlReader:
    """Parses the lines after the header, a chunk at a time, keeping what
    spans chunks: the probe dictionary and whether the trailer was seen."""

    name: str
    probe_names: list[str]
    trailer: Trailer | None = None

    def parse(self, data: bytes | memoryview, first_lineno: int) -> Chunk:
        """Complete lines (each ending in a newline), the first being line
        `first_lineno` of the file."""
        if self.trailer is not None and bytes(data).strip():
            line = first_lineno + _leading_blank_lines(bytes(data))
            raise TraceFormatError(f"{self.name}:{line}: record after the trailer")
        try:
            return self._fast(data)
        except (_FastPathRefused, pa.ArrowException, ValueError, TypeError, KeyError,
                OverflowError):
            return self._strict(bytes(data), first_lineno)

    def _fast(self, data: bytes | memoryview) -> Chunk:
        body, trailer = _split_trailer(data)
        if _blank(body):
            self.trailer = trailer
            return Chunk(_empty_batch(self.probe_names), trailer=trailer)
        # Read in place: a chunk is tens of megabytes, not to be copied.
        table = pj.read_json(pa.BufferReader(pa.py_buffer(body)), parse_options=_PARSE)
        ev_col, lost_col = table.column("event"), table.column("lost")
        # Each line holds exactly one record.
        if lost_col.null_count == len(lost_col):
            if ev_col.null_count:
                raise _FastPathRefused
            lost: list[Lost] = []
        else:
            is_ev, is_lost = pc.is_valid(ev_col), pc.is_valid(lost_col)
            if not pc.all(pc.xor(is_ev, is_lost)).as_py():
                raise _FastPathRefused
            lost = [Lost.from_record({k: v for k, v in rec.items() if v is not None})
                    for rec in lost_col.filter(is_lost).to_pylist()]
            ev_col = ev_col.filter(is_ev)
        events = pa.Table.from_struct_array(ev_col)
        if any(events.column(name).null_count for name in _REQUIRED):
            raise _FastPathRefused
        batch = _to_event_batch(events, self.probe_names)
        self.trailer = trailer
        return Chunk(batch, lost, trailer)

    def _strict(self, data: bytes, first_lineno: int) -> Chunk:
        """The line-by-line parser: slow, exact about what is wrong and where."""
        events: list[Event] = []
        lost: list[Lost] = []
        trailer: Trailer | None = None
        for idx, line in enumerate(data.split(b"\n")):
            lineno = first_lineno + idx
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise TraceFormatError(f"{self.name}:{lineno}: not valid JSON") from None
            if trailer is not None or self.trailer is not None:
                raise TraceFormatError(f"{self.name}:{lineno}: record after the trailer")
            if not isinstance(rec, dict) or len(rec) != 1:
                raise TraceFormatError(
                    f"{self.name}:{lineno}: expected an object with one record key")
            (kind, body), = rec.items()
            try:
                if not isinstance(body, dict):
                    raise ValueError("not an object")
                if kind == "event":
                    ev = Event.from_record(body)
                    _check_event(ev)
                    events.append(ev)
                elif kind == "lost":
                    lost.append(Lost.from_record(body))
                elif kind == "trailer":
                    trailer = Trailer.from_record(body)
                else:
                    raise TraceFormatError(
                        f"{self.name}:{lineno}: unknown record type {kind!r}")
            except (TypeError, ValueError) as exc:
                raise TraceFormatError(
                    f"{self.name}:{lineno}: bad {kind} record: {exc}") from None
        self.trailer = trailer
        return Chunk(events_to_batch(events, self.probe_names), lost, trailer)


def _leading_blank_lines(data: bytes) -> int:
    n = 0
    for line in data.split(b"\n"):
        if line.strip():
            break
        n += 1
    return n


_WHITESPACE = frozenset(b" \t\r\n")
_LONGEST_LINE = 1 << 16  # the trailer line is a few kB


def _blank(data: bytes | memoryview) -> bool:
    return all(b in _WHITESPACE for b in data) if len(data) < 64 else not bytes(data).strip()


def _split_trailer(data: bytes | memoryview) -> tuple[bytes | memoryview, Trailer | None]:
    """The chunk without its last line when that line is the trailer (its
    lost_by_probe object has free keys, which a fixed schema cannot take)."""
    end = len(data)
    while end and data[end - 1] in _WHITESPACE:
        end -= 1
    tail_start = max(0, end - _LONGEST_LINE)
    tail = bytes(data[tail_start:end])
    nl = tail.rfind(b"\n")
    if nl < 0 and tail_start > 0:
        raise _FastPathRefused
    start = tail_start + nl + 1
    last = tail[nl + 1:]
    if b'"trailer"' not in last:
        return data, None
    try:
        rec = json.loads(last)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _FastPathRefused from None
    if not isinstance(rec, dict) or set(rec) != {"trailer"} or not isinstance(
            rec["trailer"], dict):
        raise _FastPathRefused
    try:
        return data[:start], Trailer.from_record(rec["trailer"])
    except TypeError:
        raise _FastPathRefused from None


def _check_event(ev: Event) -> None:
    """What the columns will refuse, said with the field's name."""
    for name, (lo, hi) in _INT_RANGES.items():
        value = getattr(ev, name)
        if value is not None and not lo <= value <= hi:
            raise ValueError(f"event field {name!r} out of range: {value}")
    if ev.softirq is not None and ev.softirq not in SOFTIRQ_NAMES:
        raise ValueError(f"unknown softirq {ev.softirq!r}")
    for name in _ADDR_FIELDS:
        value = getattr(ev, name)
        if value is not None:
            try:
                ipaddress.IPv4Address(value)
            except ValueError:
                raise ValueError(f"event field {name!r} is not an IPv4 address: "
                                 f"{value!r}") from None


def _empty_batch(probe_names: list[str]) -> pa.RecordBatch:
    return events_to_batch([], probe_names)


def _codes(col: pa.ChunkedArray, values: list[str] | tuple[str, ...],
           extend: bool) -> tuple[pa.Array, np.ndarray]:
    """Strings as indices into `values` (appending unseen ones when `extend`):
    the distinct strings are few, so they are mapped once, not per row."""
    enc = pc.dictionary_encode(col).combine_chunks()
    index = {v: i for i, v in enumerate(values)}
    mapping = []
    for v in enc.dictionary.to_pylist():
        if v not in index:
            if not extend:
                raise _FastPathRefused
            assert isinstance(values, list)
            index[v] = len(values)
            values.append(v)
        mapping.append(index[v])
    return enc.indices, np.array(mapping, dtype=np.int64)


def _dict_column(col: pa.ChunkedArray, values: list[str] | tuple[str, ...],
                 index_type: pa.DataType, extend: bool = False) -> pa.Array:
    indices, mapping = _codes(col, values, extend)
    if len(mapping) == 0:
        codes = pa.nulls(len(indices), index_type)
    else:
        codes = pc.take(pa.array(mapping.astype(index_type.to_pandas_dtype())), indices)
    return pa.DictionaryArray.from_arrays(codes, pa.array(list(values), pa.string()))


def _addr_column(col: pa.ChunkedArray) -> pa.Array:
    enc = pc.dictionary_encode(col).combine_chunks()
    ints = [int(ipaddress.IPv4Address(v)) for v in enc.dictionary.to_pylist()]
    return pc.take(pa.array(ints, pa.uint32()), enc.indices)


def _to_event_batch(events: pa.Table, probe_names: list[str]) -> pa.RecordBatch:
    cols: dict[str, pa.Array | pa.ChunkedArray] = {}
    for f in EVENT_SCHEMA:
        col = events.column(f.name)
        if f.name in ZERO_OMITTED:
            cols[f.name] = pc.fill_null(col, 0)
        elif f.name in _ADDR_FIELDS:
            cols[f.name] = _addr_column(col)
        elif f.name == "comm":
            enc = pc.dictionary_encode(col).combine_chunks()
            cols[f.name] = enc
        elif f.name == "probe":
            cols[f.name] = _dict_column(col, probe_names, pa.uint16(), extend=True)
        elif f.name == "kind":
            cols[f.name] = _dict_column(col, KIND_VALUES, pa.int8())
        elif f.name == "ctx":
            cols[f.name] = _dict_column(col, CTX_VALUES, pa.int8())
        elif f.name == "softirq":
            cols[f.name] = _dict_column(col, SOFTIRQ_NAMES, pa.int8())
        else:
            cols[f.name] = col
    arrays = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c
              for c in (cols[f.name] for f in EVENT_SCHEMA)]
    return pa.record_batch(arrays, schema=EVENT_SCHEMA)


def read_chunks(fh: IO[bytes], first_lineno: int, chunk_bytes: int = CHUNK_BYTES,
                ) -> Iterator[tuple[memoryview, int, bool]]:
    """Runs of complete lines as (data, first line number, True); at the
    end, the unterminated last line, if any, as (line, its number, False).
    Each run is read into a buffer of its own, not copied again."""
    rest = b""
    lineno = first_lineno
    while True:
        buf = bytearray(len(rest) + chunk_bytes)
        buf[:len(rest)] = rest
        got = fh.readinto(memoryview(buf)[len(rest):])  # type: ignore[attr-defined]
        if not got:
            break
        total = len(rest) + got
        cut = buf.rfind(b"\n", 0, total) + 1
        if cut:
            yield memoryview(buf)[:cut], lineno, True
            lineno += buf.count(b"\n", 0, cut)
        rest = bytes(buf[cut:total])
    if rest:
        yield memoryview(rest), lineno, False


class JsonlWriter:
    """Writes version 1 JSON Lines: the header at once, then each batch's
    lost records before its events, then the trailer."""

    def __init__(self, fh: IO[str], header: Header) -> None:
        self._fh = fh
        self.events = 0
        self._line({"header": header.to_record(version=JSONL_VERSION)})

    def _line(self, rec: dict[str, Any]) -> None:
        self._fh.write(json.dumps(rec, separators=(",", ":")) + "\n")

    def write(self, batch: pa.RecordBatch, lost: list[Lost]) -> None:
        for rec in lost:
            self._line({"lost": rec.to_record()})
        # Event.to_record's mapping, built from the columns without Event
        # objects (asdict per event would be most of the time).
        cols = batch_columns(batch)
        names = list(cols)
        dumps = json.JSONEncoder(separators=(",", ":")).encode
        out = []
        for row in zip(*cols.values(), strict=True):
            fields = {k: v for k, v in zip(names, row, strict=True)
                      if v is not None and not (v == 0 and k in ZERO_OMITTED)}
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
