"""The one definition of a kpath event record, and of a probe's status.

Every stage speaks these types: the backend produces them, the trace file
stores them (see docs/trace-format.md), the timeline and the renderers
consume them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from operator import attrgetter
from typing import Any

import numpy as np
import pyarrow as pa


class Kind(StrEnum):
    ENTRY = "entry"
    RETURN = "return"


class Context(StrEnum):
    """Execution context the probe fired in."""

    TASK = "task"  # process context (syscall path of a user task)
    SOFTIRQ = "softirq"  # softirq run on irq exit or on local_bh_enable
    KSOFTIRQD = "ksoftirqd"  # softirq deferred to the per-CPU ksoftirqd thread
    HARDIRQ = "hardirq"


# Linux softirq vector numbers (include/linux/interrupt.h), stable since 2.6.
SOFTIRQ_NAMES = (
    "HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU",
)

# TCP header flag bits, as on the wire.
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
TCP_FLAG_BITS = (
    (TCP_FIN, "FIN"), (TCP_SYN, "SYN"), (TCP_RST, "RST"), (TCP_PSH, "PSH"),
    (TCP_ACK, "ACK"), (0x20, "URG"), (0x40, "ECE"), (0x80, "CWR"),
)


def tcp_flag_names(flags: int | None) -> str:
    """'SYN|ACK' style text for a flags byte; '' when unknown or none set."""
    if not flags:
        return ""
    return "|".join(name for bit, name in TCP_FLAG_BITS if flags & bit)


@dataclass(frozen=True, slots=True)
class Endpoint:
    addr: str
    port: int

    def __str__(self) -> str:
        return f"{self.addr}:{self.port}"


@dataclass(frozen=True, slots=True)
class Event:
    """One probe hit.

    Optional fields are None when the probe could not know them (no socket,
    no skb, not a return probe). Addresses are kernel pointers as ints.
    """

    ts_ns: int  # CLOCK_MONOTONIC, as bpf_ktime_get_ns()
    cpu: int
    tgid: int
    tid: int
    comm: str
    probe: str  # catalog name of the probed function
    kind: Kind
    ctx: Context
    softirq: str | None = None  # vector name when ctx is softirq/ksoftirqd
    sk: int = 0
    skb: int = 0
    netns: int = 0
    saddr: str | None = None  # source/destination as the probe saw them:
    sport: int | None = None  # local/remote for socket probes, header
    daddr: str | None = None  # fields for packet probes
    dport: int | None = None
    seq: int | None = None
    end_seq: int | None = None
    ack: int | None = None
    tcp_flags: int | None = None
    length: int | None = None  # payload bytes, syscall size or bytes copied
    ret: int | None = None  # return value of return probes
    # Index into the header's `sources`: which host's kernel the event comes
    # from (0 in a trace of one host; a merged trace has several).
    source: int = 0

    @property
    def src(self) -> Endpoint | None:
        if self.saddr is None or self.sport is None:
            return None
        return Endpoint(self.saddr, self.sport)

    @property
    def dst(self) -> Endpoint | None:
        if self.daddr is None or self.dport is None:
            return None
        return Endpoint(self.daddr, self.dport)

    @property
    def flags_text(self) -> str:
        return tcp_flag_names(self.tcp_flags)

    def to_record(self) -> dict[str, Any]:
        """Compact mapping for the trace file: None and zero pointers dropped."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if value is None or (key in ZERO_OMITTED and value == 0):
                continue
            out[key] = str(value) if key in ("kind", "ctx") else value
        return out

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Event:
        unknown = set(rec) - _FIELD_NAMES
        if unknown:
            raise ValueError(f"unknown event field(s): {', '.join(sorted(unknown))}")
        missing = _REQUIRED - set(rec)
        if missing:
            raise ValueError(f"event lacks field(s): {', '.join(sorted(missing))}")
        data = dict(rec)
        try:
            data["kind"] = Kind(rec["kind"])
            data["ctx"] = Context(rec["ctx"])
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        for key in _INT_FIELDS & set(rec):
            if not isinstance(rec[key], int) or isinstance(rec[key], bool):
                raise ValueError(f"event field {key!r} must be an integer, got {rec[key]!r}")
        return cls(**data)


_FIELD_NAMES = {f.name for f in fields(Event)}
_REQUIRED = {"ts_ns", "cpu", "tgid", "tid", "comm", "probe", "kind", "ctx"}
ZERO_OMITTED = frozenset({"sk", "skb", "netns", "source"})  # left out of a record when 0
_INT_FIELDS = {
    "ts_ns", "cpu", "tgid", "tid", "sk", "skb", "netns", "sport", "dport",
    "seq", "end_seq", "ack", "tcp_flags", "length", "ret", "source",
}


@dataclass
class ProbeStatus:
    """One requested probe: attached (with the symbol used) or missing (with why)."""

    name: str
    layer: str
    direction: str
    attached: bool
    kinds: list[str] = field(default_factory=list)  # "entry", "return" when attached
    symbol: str | None = None  # kernel symbol actually probed
    reason: str | None = None  # absent | inlined | renamed | blacklisted | failed | ...
    detail: str | None = None
    # How it was observed: "kprobe:SYM", "kretprobe:SYM", "tracepoint:CAT:NAME",
    # "tp_btf:NAME", "raw_tp:NAME" (one per attachment).
    attach: list[str] = field(default_factory=list)
    source: str | None = None  # file:line of the probed function (debug info)
    # What replay needs to know about the probe as recorded (probes/catalog.py
    # ProbeSpec), so a trace reads the same with another kpath's catalog.
    # None in files written before these were recorded: the catalog decides.
    capture: str | None = None  # Capture: how the BPF side read the arguments
    returns: str | None = None  # Returns: what its return probe reports
    length_arg3: bool | None = None  # the third argument is a byte count

    def to_record(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, [])}


# ---- the same record as columns (trace format v2; docs/trace-format.md) ----
#
# One Arrow schema for a batch of events. Enumerations (kind, ctx, softirq)
# and repeated strings (comm, probe) are dictionary-encoded; `probe` indexes
# the trace's probe dictionary (header `probes`, in order). Addresses are
# IPv4 as unsigned integers (int(ipaddress.IPv4Address)). A null is a field
# the probe could not know, as None in Event.
KIND_VALUES: tuple[str, ...] = tuple(k.value for k in Kind)
CTX_VALUES: tuple[str, ...] = tuple(c.value for c in Context)

EVENT_SCHEMA = pa.schema([
    ("ts_ns", pa.uint64()),
    ("cpu", pa.uint32()),
    ("tgid", pa.uint32()),
    ("tid", pa.uint32()),
    ("comm", pa.dictionary(pa.int32(), pa.string())),
    ("probe", pa.dictionary(pa.uint16(), pa.string())),
    ("kind", pa.dictionary(pa.int8(), pa.string())),
    ("ctx", pa.dictionary(pa.int8(), pa.string())),
    ("softirq", pa.dictionary(pa.int8(), pa.string())),
    ("sk", pa.uint64()),
    ("skb", pa.uint64()),
    ("netns", pa.uint32()),
    ("saddr", pa.uint32()),
    ("sport", pa.uint16()),
    ("daddr", pa.uint32()),
    ("dport", pa.uint16()),
    ("seq", pa.uint32()),
    ("end_seq", pa.uint32()),
    ("ack", pa.uint32()),
    ("tcp_flags", pa.uint8()),
    ("length", pa.int64()),
    ("ret", pa.int64()),
    # Added after version 2's first files: a file without it reads as 0.
    ("source", pa.uint16()),
])
# Columns a version 2 file may lack (written before they were added), with
# the value they read as.
LATE_COLUMNS: dict[str, int] = {"source": 0}
_ADDR_FIELDS = ("saddr", "daddr")
# Columns that hold Event's values as they are (no dictionary, no conversion).
_PLAIN_FIELDS = tuple(f.name for f in EVENT_SCHEMA
                      if not pa.types.is_dictionary(f.type) and f.name not in _ADDR_FIELDS)


def dict_column(codes: np.ndarray, values: list[str] | tuple[str, ...],
                index_type: pa.DataType, mask: np.ndarray | None = None) -> pa.Array:
    """A dictionary column from integer codes into `values` (mask: True = null)."""
    indices = pa.array(codes.astype(index_type.to_pandas_dtype(), copy=False), mask=mask)
    return pa.DictionaryArray.from_arrays(indices, pa.array(list(values), pa.string()))


def events_to_batch(events: Sequence[Any], probe_names: list[str]) -> pa.RecordBatch:
    """Event objects, or records with Event's attributes (the version 1
    reader's), as one batch; probes not in probe_names are appended to it.
    Column by column: each field's values go straight from the objects into
    the column (no list between), strings dictionary-encoded as they go. ValueError names a field
    whose value the columns cannot hold."""
    cols: dict[str, pa.Array] = {}
    for name in _PLAIN_FIELDS:
        try:
            cols[name] = pa.array(map(attrgetter(name), events), EVENT_SCHEMA.field(name).type,
                                  size=len(events))
        except (OverflowError, pa.ArrowInvalid, pa.ArrowTypeError):
            raise ValueError(f"event field {name!r} out of range or not an integer") from None
    cols["comm"] = _strings(events, "comm")
    cols["probe"] = _recode(_strings(events, "probe"), probe_names, pa.uint16(), extend=True)
    for name, values in (("kind", KIND_VALUES), ("ctx", CTX_VALUES), ("softirq", SOFTIRQ_NAMES)):
        cols[name] = _recode(_strings(events, name), values, pa.int8())
    for name in _ADDR_FIELDS:
        enc = _strings(events, name)
        try:
            ints = [int(ipaddress.IPv4Address(v)) for v in enc.dictionary.to_pylist()]
        except ValueError:
            raise ValueError(f"event field {name!r} is not an IPv4 address") from None
        cols[name] = pa.array(ints, pa.uint32()).take(enc.indices)
    return pa.record_batch([cols[f.name] for f in EVENT_SCHEMA], schema=EVENT_SCHEMA)


_STR_DICT = pa.dictionary(pa.int32(), pa.string())


def _strings(events: Sequence[Any], name: str) -> pa.DictionaryArray:
    """A string field, dictionary-encoded as it is converted."""
    try:
        enc: pa.DictionaryArray = pa.array(map(attrgetter(name), events), _STR_DICT,
                                           size=len(events))
    except (UnicodeEncodeError, pa.ArrowInvalid, pa.ArrowTypeError):
        raise ValueError(f"event field {name!r} is not UTF-8 text") from None
    return enc


def _recode(enc: pa.DictionaryArray, values: list[str] | tuple[str, ...],
            index_type: pa.DataType, extend: bool = False) -> pa.Array:
    """Dictionary-encoded strings re-encoded against `values` (appending
    unseen ones when `extend`, else ValueError for them): the distinct
    strings are few, so they are mapped once, not per row."""
    index = {v: i for i, v in enumerate(values)}
    mapping = []
    for v in enc.dictionary.to_pylist():
        if v not in index:
            if not extend:
                raise ValueError(f"unknown value {v!r}; known: {', '.join(values)}")
            assert isinstance(values, list)
            index[v] = len(values)
            values.append(v)
        mapping.append(index[v])
    codes = pa.array(mapping, index_type).take(enc.indices)
    return pa.DictionaryArray.from_arrays(codes, pa.array(list(values), pa.string()))


def _pylist(col: pa.Array | pa.ChunkedArray) -> list[Any]:
    """A column as Python values. Dictionary columns are decoded through
    their indices: pyarrow's own to_pylist on them is ~50x slower."""
    out: list[Any] = []
    if not pa.types.is_dictionary(col.type):
        out.extend(col.to_pylist())
        return out
    for chunk in (col.chunks if isinstance(col, pa.ChunkedArray) else [col]):
        values = chunk.dictionary.to_pylist()
        out.extend(None if i is None else values[i] for i in chunk.indices.to_pylist())
    return out


def batch_columns(batch: pa.RecordBatch | pa.Table) -> dict[str, list[Any]]:
    """A batch's columns as Python values, as Event holds them (addresses as
    text), kind and ctx as plain strings."""
    cols = {name: _pylist(batch.column(name)) for name in EVENT_SCHEMA.names}
    for name in _ADDR_FIELDS:
        text: dict[int, str] = {}
        cols[name] = [None if v is None else text.get(v) or text.setdefault(
            v, str(ipaddress.IPv4Address(v))) for v in cols[name]]
    return cols


def batch_to_events(batch: pa.RecordBatch | pa.Table) -> list[Event]:
    """A batch's rows as Event objects (the object path: small traces, renderers)."""
    cols = batch_columns(batch)
    kinds = {v: Kind(v) for v in KIND_VALUES}
    ctxs = {v: Context(v) for v in CTX_VALUES}
    cols["kind"] = [kinds[v] for v in cols["kind"]]
    cols["ctx"] = [ctxs[v] for v in cols["ctx"]]
    # Positional: the schema's columns are Event's fields, in order (checked below).
    return list(map(Event, *cols.values()))


assert tuple(f.name for f in fields(Event)) == tuple(EVENT_SCHEMA.names)


# ---- captured frames ----
#
# The first bytes of a packet as a device had it (link header on), recorded
# at one device-layer probe per direction (tracer/capture/frames.py), with
# the frame's length and its interface. In a trace file a frame rides on its
# event: version 2 has an optional column `frame` after EVENT_SCHEMA's (null
# for events without one), version 1 an optional `frame` key in the event
# record (data in hex). Read back, a trace's frames are one table
# (FRAMES_SCHEMA) whose `row` is the event's row in the trace.

# The fields of one frame.
FRAME_TYPE = pa.struct([
    ("ifindex", pa.uint32()),  # the device's ifindex (per network namespace)
    ("ifname", pa.string()),
    ("dev_type", pa.uint16()),  # ARPHRD_* (1 Ethernet, 772 loopback, ...)
    ("link", pa.uint16()),  # link-header bytes before the IPv4 header; null: unknown
    ("len", pa.uint32()),  # the whole frame's length (skb->len from the link header)
    ("data", pa.binary()),  # its first bytes (the skb's linear part, at most 128)
])
FRAME_FIELD = pa.field("frame", FRAME_TYPE)
# A version 2 file's columns: the events', then the frame column.
FILE_SCHEMA = pa.schema(list(EVENT_SCHEMA) + [FRAME_FIELD])
# A trace's frames read back: the event row each belongs to, and the frame.
FRAMES_SCHEMA = pa.schema([("row", pa.uint64())] + list(FRAME_TYPE))
FRAME_KEYS = tuple(f.name for f in FRAME_TYPE)


def empty_frames() -> pa.Table:
    return FRAMES_SCHEMA.empty_table()


def frames_of(column: pa.Array, first_row: int) -> pa.Table:
    """The non-null entries of a batch's frame column, their rows counted
    from first_row."""
    import pyarrow.compute as pc  # lazily: 40+ ms of --stats' start-up
    valid = pc.is_valid(column)
    rows = np.flatnonzero(valid.to_numpy(zero_copy_only=False)).astype(np.uint64) + first_row
    taken = column.filter(valid)
    if not len(taken):
        return empty_frames()
    fields = [taken.field(i) for i in range(len(FRAME_TYPE))]
    return pa.table([pa.array(rows, pa.uint64()), *fields], schema=FRAMES_SCHEMA)


def frame_column(num_rows: int, frames: pa.Table | None, first_row: int = 0) -> pa.Array:
    """A batch's frame column (null where an event has none) from frames
    whose `row` falls in [first_row, first_row + num_rows)."""
    if frames is None or not frames.num_rows:
        return pa.nulls(num_rows, FRAME_TYPE)
    rows = frames.column("row").to_numpy().astype(np.int64) - first_row
    pos = np.full(num_rows, -1, np.int64)
    pos[rows] = np.arange(len(rows))
    struct = pa.StructArray.from_arrays(
        [frames.column(k).combine_chunks() for k in FRAME_KEYS], fields=list(FRAME_TYPE))
    mask = pos < 0
    return struct.take(pa.array(np.where(mask, 0, pos), mask=mask))


def frames_in(frames: pa.Table, first_row: int, num_rows: int) -> pa.Table:
    """The frames of rows [first_row, first_row + num_rows)."""
    rows = frames.column("row")
    import pyarrow.compute as pc  # lazily: 40+ ms of --stats' start-up
    keep = pc.and_(pc.greater_equal(rows, first_row), pc.less(rows, first_row + num_rows))
    return frames.filter(keep)


def with_frames(batch: pa.RecordBatch, frames: pa.Table | None,
                first_row: int = 0) -> pa.RecordBatch:
    """An EVENT_SCHEMA batch with its frame column (FILE_SCHEMA)."""
    return pa.record_batch(list(batch.columns) + [frame_column(batch.num_rows, frames,
                                                               first_row)], schema=FILE_SCHEMA)
