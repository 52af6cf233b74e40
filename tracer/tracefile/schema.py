"""The one typed schema of a trace file's JSON records, and its strict
decoder (msgspec). Every JSON text a reader takes goes through here: each
version 1 line, and the version 2 header, lost and trailer metadata.

The types are the records' own: Header, Source, ProbeStatus, Lost and
Trailer (dataclasses; msgspec checks every field's type and ignores keys a
newer writer added), and for events a struct derived from Event and
EVENT_SCHEMA (unknown keys refused, integers range-checked, enumerations
closed). What does not fit is a SchemaError naming the field; readers turn
it into one line with the file name (and line number). Downstream code gets
well-typed records or nothing. Format: docs/trace-format.md."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

import msgspec
import pyarrow as pa

from tracer.events import CTX_VALUES, EVENT_SCHEMA, KIND_VALUES, SOFTIRQ_NAMES, Event
from tracer.tracefile.loss_columns import LossColumns, LostRow
from tracer.tracefile.records import FORMAT_NAME, FORMAT_VERSION, Count, Header, Lost, Trailer

# A version 1 line is at most this long (the header of a full profile is
# ~15 kB, an event ~400 B): longer is refused before it is parsed.
MAX_LINE_BYTES = 1 << 20


class SchemaError(ValueError):
    """A JSON text that is not a record of the schema; the message says why."""


class MalformedJSON(SchemaError):
    """Not JSON at all (or not UTF-8, or nested too deeply)."""


_ENUMS: dict[str, tuple[str, ...]] = {
    "kind": KIND_VALUES, "ctx": CTX_VALUES, "softirq": SOFTIRQ_NAMES}


def _field_type(f: pa.Field) -> Any:
    """The JSON type of an EVENT_SCHEMA column: integers bounded by the
    column's width (msgspec bounds stop at int64: a uint64 column is only
    bounded below here; the column build refuses what overflows it),
    enumerations closed, other strings free (addresses are checked when
    they become integers)."""
    if f.name in _ENUMS:
        return Literal[_ENUMS[f.name]]
    if pa.types.is_integer(f.type) and not pa.types.is_dictionary(f.type) \
            and f.name not in ("saddr", "daddr"):
        bits = f.type.bit_width
        if f.name == "ts_ns":  # a uint64 column, but a time the timeline computes with
            return Count
        if pa.types.is_unsigned_integer(f.type):
            meta = msgspec.Meta(ge=0) if bits == 64 else msgspec.Meta(ge=0, le=2 ** bits - 1)
        else:
            meta = msgspec.Meta(ge=-(2 ** (bits - 1)), le=2 ** (bits - 1) - 1)
        return Annotated[int, meta]
    return str


def _event_record() -> type:
    """Event's fields as a msgspec struct: required where Event requires
    them, defaults where Event has them. Not garbage-collected (it holds no
    containers), which keeps decoding millions cheap."""
    fields: list[tuple[Any, ...]] = []
    for f in dataclasses.fields(Event):
        ftype = _field_type(EVENT_SCHEMA.field(f.name))
        if f.default is dataclasses.MISSING:
            fields.append((f.name, ftype))
        elif f.default is None:
            fields.append((f.name, ftype | None, None))
        else:
            fields.append((f.name, ftype, f.default))
    # A captured frame (tracer/frames.py), data in hex.
    fields.append(("frame", FrameRecord | None, None))
    return msgspec.defstruct("EventRecord", fields, forbid_unknown_fields=True, gc=False)


_U16 = Annotated[int, msgspec.Meta(ge=0, le=0xFFFF)]
_U32 = Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)]


class FrameRecord(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """An event's `frame` (tracer/frames.py FRAME_TYPE), its bytes in hex."""

    ifindex: _U32
    ifname: str
    dev_type: _U16
    len: _U32
    data: Annotated[str, msgspec.Meta(pattern="^([0-9a-f]{2})*$", max_length=2 * 65535)]
    link: _U16 | None = None


EventRecord = _event_record()

# A version 1 line: an object with exactly one of these keys (checked after
# decoding: a struct cannot say "exactly one").
LineRecord = msgspec.defstruct("LineRecord", [
    ("event", EventRecord | None, None),
    ("lost", Lost | None, None),
    ("trailer", Trailer | None, None),
], forbid_unknown_fields=True)
RECORD_KINDS = ("event", "lost", "trailer")

_LINE = msgspec.json.Decoder(LineRecord)
_LINES = msgspec.json.Decoder(list[LineRecord])  # type: ignore[valid-type]
_LOST_LIST = msgspec.json.Decoder(list[Lost])
_LOST_ROWS = msgspec.json.Decoder(list[LostRow])  # type: ignore[valid-type]
_TRAILER = msgspec.json.Decoder(Trailer)
_HEADER = msgspec.json.Decoder(Header)


@dataclasses.dataclass
class _Identity:
    """What a header must say before the rest is read: whose and which version."""

    format: Any = None
    version: Any = None


class _HeaderLine(msgspec.Struct):
    header: msgspec.Raw = msgspec.Raw(b"null")


_IDENTITY = msgspec.json.Decoder(_Identity)
_HEADER_LINE = msgspec.json.Decoder(_HeaderLine)


def _decode(decoder: msgspec.json.Decoder[Any], data: bytes | memoryview) -> Any:
    """decoder.decode, with every way a JSON text can fail as a SchemaError."""
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise SchemaError(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise MalformedJSON(f"not valid JSON ({exc})") from None
    except RecursionError:
        raise MalformedJSON("not valid JSON (nested too deeply)") from None


def decode_header(raw: bytes | memoryview, versions: range, rule: str) -> Header:
    """The header object (version 2 metadata, or a version 1 line's
    `header` value): kpath's, a version this kpath reads, and one its
    container holds (`rule` says which). SchemaError otherwise."""
    try:
        ident = _decode(_IDENTITY, raw)
    except SchemaError:
        ident = _Identity()
    if ident.format != FORMAT_NAME:
        raise SchemaError(f"not a kpath trace (no {FORMAT_NAME} header)")
    version = ident.version
    if not isinstance(version, int) or isinstance(version, bool):
        raise SchemaError("header has no format version")
    if version > FORMAT_VERSION:
        raise SchemaError(f"trace format version {version} is newer than this kpath reads "
                          f"({FORMAT_VERSION}); upgrade kpath")
    if version not in versions:
        raise SchemaError(f"{rule}, this one says {version}")
    try:
        header: Header = _decode(_HEADER, raw)
    except SchemaError as exc:
        raise SchemaError(f"bad header: {exc}") from None
    return header


def decode_header_line(line: bytes, versions: range, rule: str) -> Header:
    """A version 1 first line, {"header": {...}}."""
    try:
        raw = _decode(_HEADER_LINE, line).header
    except MalformedJSON:
        raise SchemaError("not a kpath trace (first line is not JSON)") from None
    except SchemaError:
        raw = b"null"  # JSON, but not an object: no header
    return decode_header(raw, versions, rule)


def decode_lost_list(raw: bytes) -> list[Lost]:
    lost: list[Lost] = _decode(_LOST_LIST, raw)
    return lost


def decode_lost_columns(raw: bytes) -> LossColumns:
    """decode_lost_list's records, checked alike, as columns."""
    return LossColumns.of_rows(_decode(_LOST_ROWS, raw))


def decode_trailer(raw: bytes) -> Trailer:
    trailer: Trailer = _decode(_TRAILER, raw)
    return trailer


def decode_line(line: bytes | memoryview) -> Any:
    """One version 1 record line, a LineRecord (record_kind tells which)."""
    try:
        return _decode(_LINE, line)
    except MalformedJSON:
        raise
    except SchemaError as exc:
        # Name the record the field is in: "at `$.event.ts_ns`".
        kind = next((k for k in RECORD_KINDS if f"`$.{k}" in str(exc)), "")
        raise SchemaError(f"bad {kind + ' ' if kind else ''}record: {exc}") from None


def record_kind(rec: Any) -> tuple[str, Any]:
    """A LineRecord as (kind, record): kind one of RECORD_KINDS, record an
    EventRecord, Lost or Trailer."""
    found = [(k, v) for k in RECORD_KINDS if (v := getattr(rec, k)) is not None]
    if len(found) != 1:
        raise SchemaError("bad record: expected an object with one record key "
                          f"({', '.join(RECORD_KINDS)}), got {len(found)}")
    return found[0]


def decode_array(data: bytes | memoryview, count: int) -> list[Any] | None:
    """`count` record lines made into one JSON array (`[rec,rec,...]`),
    decoded at once: several times faster than line by line. None when any
    of them is not a record of the schema or the array does not hold
    `count` records: the caller goes line by line then, to say which line
    is at fault."""
    try:
        recs: list[Any] = _LINES.decode(data)
    except (msgspec.MsgspecError, RecursionError):
        return None
    # A record broken across two lines can join into one valid element.
    return recs if len(recs) == count else None
