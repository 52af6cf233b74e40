"""The event columns the statistics read, as numpy arrays in time order.

Built from Arrow batches of EVENT_SCHEMA (tracer/events.py). Only the
columns the rules use are kept, with nulls turned into sentinels or masks,
so a trace costs about 100 bytes per event here instead of an Event object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa

from tracer.events import CTX_VALUES, EVENT_SCHEMA, KIND_VALUES, SOFTIRQ_NAMES, Context, Kind
from tracer.heap import keep_freed_heap
from tracer.tracefile.arrow import int_values

# Endpoint code: IPv4 address << 16 | port. For IPv4 its numeric order is
# ep_order's (address, then port), so normalising a 4-tuple is min/max.
NO_EP = -1
TASK = CTX_VALUES.index(Context.TASK.value)


@dataclass(frozen=True, slots=True)
class EventColumns:
    probe_names: tuple[str, ...]
    ts: np.ndarray  # int64
    probe: np.ndarray  # int16 code into probe_names
    is_return: np.ndarray  # bool
    ctx: np.ndarray  # int8, index into CTX_VALUES
    softirq: np.ndarray  # int8, index into SOFTIRQ_NAMES, -1 when null
    tid: np.ndarray  # uint32
    sk: np.ndarray  # uint64, 0 when none
    skb: np.ndarray  # uint64, 0 when none
    netns: np.ndarray  # uint32, 0 when unknown
    src: np.ndarray  # int64 endpoint code, NO_EP when address or port is null
    has_saddr: np.ndarray  # bool: the source address alone is known
    dst: np.ndarray
    seq: np.ndarray  # int64, -1 when null
    end_seq: np.ndarray
    ack: np.ndarray
    flags: np.ndarray  # uint8, 0 when null (as segment_of reads it)
    length: np.ndarray  # int64, 0 when null
    has_length: np.ndarray  # bool
    ret: np.ndarray  # int64, 0 when null
    has_ret: np.ndarray  # bool
    source: np.ndarray  # uint16: the host (header `sources` index); part of every key

    def __len__(self) -> int:
        return len(self.ts)


def _array(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _ints(col: pa.ChunkedArray | pa.Array, null: int, dtype: type) -> np.ndarray:
    raw, known = int_values(_array(col))
    values: np.ndarray = raw.astype(dtype, copy=known is not None)
    if known is not None:
        values[~known] = null
    return values


def _known(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    known = int_values(_array(col))[1]
    return np.ones(len(col), dtype=bool) if known is None else known.copy()


def _codes(col: pa.ChunkedArray | pa.Array, values: tuple[str, ...]) -> np.ndarray:
    """A dictionary (or string) column as codes into `values`, -1 for null."""
    arr = _array(col)
    if not pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_encode()
    lut = np.array([values.index(v) for v in arr.dictionary.to_pylist()] + [-1], dtype=np.int64)
    idx = _ints(arr.indices, len(arr.dictionary), np.int64)
    codes: np.ndarray = lut[idx]
    return codes


def _endpoint(addr: pa.ChunkedArray, port: pa.ChunkedArray) -> np.ndarray:
    a = _ints(addr, -1, np.int64)
    p = _ints(port, -1, np.int64)
    return np.where((a < 0) | (p < 0), NO_EP, (a << 16) | np.maximum(p, 0))


def batch_columns(batch: pa.RecordBatch, probe_code: dict[str, int],
                   names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """One batch's columns (all, or `names`); its probe dictionary mapped
    onto the trace's."""
    col = batch.column

    def probe() -> np.ndarray:
        probe_col = col("probe")
        if not pa.types.is_dictionary(probe_col.type):
            probe_col = probe_col.dictionary_encode()
        lut = np.array([probe_code.setdefault(name, len(probe_code))
                        for name in probe_col.dictionary.to_pylist()] + [0], dtype=np.int16)
        codes: np.ndarray = lut[_ints(probe_col.indices, len(lut) - 1, np.int64)]
        return codes

    def known(name: str) -> np.ndarray:
        return _known(col(name))

    make: dict[str, Callable[[], np.ndarray]] = {
        "ts": lambda: _ints(col("ts_ns"), 0, np.int64),
        "probe": probe,
        "is_return": lambda: _codes(col("kind"), KIND_VALUES) == KIND_VALUES.index(
            Kind.RETURN.value),
        "ctx": lambda: _codes(col("ctx"), CTX_VALUES).astype(np.int8),
        "softirq": lambda: _codes(col("softirq"), SOFTIRQ_NAMES).astype(np.int8),
        "tid": lambda: _ints(col("tid"), 0, np.uint32),
        "sk": lambda: _ints(col("sk"), 0, np.uint64),
        "skb": lambda: _ints(col("skb"), 0, np.uint64),
        "netns": lambda: _ints(col("netns"), 0, np.uint32),
        "src": lambda: _endpoint(col("saddr"), col("sport")),
        "has_saddr": lambda: known("saddr"),
        "dst": lambda: _endpoint(col("daddr"), col("dport")),
        "seq": lambda: _ints(col("seq"), -1, np.int64),
        "end_seq": lambda: _ints(col("end_seq"), -1, np.int64),
        "ack": lambda: _ints(col("ack"), -1, np.int64),
        "flags": lambda: _ints(col("tcp_flags"), 0, np.uint8),
        "length": lambda: _ints(col("length"), 0, np.int64),
        "has_length": lambda: known("length"),
        "ret": lambda: _ints(col("ret"), 0, np.int64),
        "has_ret": lambda: known("ret"),
        "source": lambda: _ints(col("source"), 0, np.uint16),
    }
    return {name: make[name]() for name in (make if names is None else names)}


# The file's columns each of batch_columns' columns is made of.
_SOURCES = {"ts": ("ts_ns",), "is_return": ("kind",), "src": ("saddr", "sport"),
            "has_saddr": ("saddr",), "dst": ("daddr", "dport"), "flags": ("tcp_flags",),
            "has_length": ("length",), "has_ret": ("ret",)}
ALL_COLUMNS = tuple(f.name for f in fields(EventColumns) if f.name != "probe_names")


def file_columns(names: Iterable[str] = ALL_COLUMNS) -> list[str]:
    """The EVENT_SCHEMA columns batch_columns reads to make `names`."""
    return list(dict.fromkeys(c for name in names for c in _SOURCES.get(name, (name,))))


_heap_reused = False  # use_system_allocator set the C heap to reuse freed memory


def release_freed_memory() -> None:
    """Hand freed memory back to the system. Small arrays freed between
    kept ones leave holes in the C heap that the later stages' large arrays
    (each its own mapping) never reuse: on a 10 M-event trace, a gigabyte
    held for nothing until the end. Nothing to do once use_system_allocator
    has the heap hold those arrays too (the holes are then reused)."""
    if _heap_reused:
        return
    # The system pool's release is malloc_trim (glibc), where numpy allocates.
    pa.system_memory_pool().release_unused()
    pa.default_memory_pool().release_unused()


def use_system_allocator() -> None:
    """Arrow buffers (the trace reader's batches) from the C heap instead
    of mimalloc, which keeps about 45 MB of freed pages mapped while a file
    is read batch by batch; to be called before the file is opened.

    And, with glibc, arrays below 32 MiB from the heap, not each from a
    mapping of its own, and up to 64 MiB of freed heap kept: the arrays of
    each part of a trace (parts.py) reuse the last part's pages instead of
    faulting new ones in (and trimming them after): `replay --stats` of a
    10 M-event trace took 3.4 s of system time that way, 0.5 s this way,
    at 207 MiB peak instead of 197 MiB."""
    global _heap_reused
    pa.set_memory_pool(pa.system_memory_pool())
    _heap_reused = keep_freed_heap()


def columns_of(events: pa.Table | Iterable[pa.RecordBatch]) -> EventColumns:
    """Columns of a table or of batches of EVENT_SCHEMA (read one batch at a
    time: only the columns kept here stay in memory), sorted by time
    (stable: file order breaks ties, as build_timeline does)."""
    batches = events.to_batches() if isinstance(events, pa.Table) else events
    probe_code: dict[str, int] = {}
    chunks: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        for name, col in batch_columns(batch, probe_code).items():
            chunks.setdefault(name, []).append(col)
    if not chunks:
        chunks = {name: [col] for name, col in batch_columns(
            pa.RecordBatch.from_pylist([], schema=EVENT_SCHEMA), probe_code).items()}
    ts = np.concatenate(chunks.pop("ts"))
    order: np.ndarray | None = None
    if len(ts) > 1 and (ts[1:] < ts[:-1]).any():
        order = np.argsort(ts, kind="stable")
        ts = ts[order]
    cols: dict[str, np.ndarray] = {"ts": ts}
    for name in list(chunks):
        col = np.concatenate(chunks.pop(name))
        cols[name] = col if order is None else col[order]
        del col
        # The column's batch pieces are freed: handed back now, the pieces
        # and the whole columns are never all held at once.
        release_freed_memory()
    return EventColumns(probe_names=tuple(probe_code), **cols)
