"""The event columns the statistics read, as numpy arrays in time order.

Built from Arrow batches of EVENT_SCHEMA (tracer/events.py). Only the
columns the rules use are kept, with nulls turned into sentinels or masks,
so a trace costs about 100 bytes per event here instead of an Event object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer.events import CTX_VALUES, EVENT_SCHEMA, KIND_VALUES, SOFTIRQ_NAMES, Context, Kind

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

    def __len__(self) -> int:
        return len(self.ts)


def _ints(col: pa.ChunkedArray | pa.Array, null: int, dtype: type) -> np.ndarray:
    if not col.null_count:  # the common case: no copy through fill_null
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=dtype)
    values: np.ndarray = np.asarray(pc.fill_null(col, 0).to_numpy(zero_copy_only=False),
                                    dtype=dtype)
    if null != 0:
        values[np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)] = null
    return values


def _codes(col: pa.ChunkedArray | pa.Array, values: tuple[str, ...]) -> np.ndarray:
    """A dictionary (or string) column as codes into `values`, -1 for null."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
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
        return ~np.asarray(col(name).is_null().to_numpy(zero_copy_only=False), dtype=bool)

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
    }
    return {name: make[name]() for name in (make if names is None else names)}


def release_freed_memory() -> None:
    """Hand freed memory back to the system. Small arrays freed between
    kept ones leave holes in the C heap that the later stages' large arrays
    (each its own mapping) never reuse: on a 10 M-event trace, a gigabyte
    held for nothing until the end."""
    # The system pool's release is malloc_trim (glibc), where numpy allocates.
    pa.system_memory_pool().release_unused()
    pa.default_memory_pool().release_unused()


def use_system_allocator() -> None:
    """Arrow buffers (the trace reader's batches) from the C heap instead
    of mimalloc, which keeps about 45 MB of freed pages mapped while a file
    is read batch by batch; to be called before the file is opened."""
    pa.set_memory_pool(pa.system_memory_pool())


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
