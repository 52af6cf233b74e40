"""The event columns the statistics read, as numpy arrays in time order.

Built from Arrow batches of EVENT_SCHEMA (tracer/events.py). Only the
columns the rules use are kept, with nulls turned into sentinels or masks,
so a trace costs about 100 bytes per event here instead of an Event object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer.events import CTX_VALUES, KIND_VALUES, SOFTIRQ_NAMES, Context, Kind

# Endpoint code: IPv4 address << 16 | port. For IPv4 its numeric order is
# ep_order's (address, then port), so normalising a 4-tuple is min/max.
NO_EP = -1
TASK = CTX_VALUES.index(Context.TASK.value)


@dataclass(frozen=True, slots=True)
class EventColumns:
    probe_names: tuple[str, ...]
    ts: np.ndarray  # int64
    probe: np.ndarray  # int32 code into probe_names
    is_return: np.ndarray  # bool
    ctx: np.ndarray  # int8, index into CTX_VALUES
    softirq: np.ndarray  # int8, index into SOFTIRQ_NAMES, -1 when null
    tid: np.ndarray  # int64
    sk: np.ndarray  # uint64, 0 when none
    skb: np.ndarray  # uint64, 0 when none
    netns: np.ndarray  # int64, 0 when unknown
    src: np.ndarray  # int64 endpoint code, NO_EP when address or port is null
    has_saddr: np.ndarray  # bool: the source address alone is known
    dst: np.ndarray
    seq: np.ndarray  # int64, -1 when null
    end_seq: np.ndarray
    ack: np.ndarray
    flags: np.ndarray  # int64, 0 when null (as segment_of reads it)
    length: np.ndarray  # int64, 0 when null
    has_length: np.ndarray  # bool
    ret: np.ndarray  # int64, 0 when null
    has_ret: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.ts)


def _ints(col: pa.ChunkedArray | pa.Array, null: int, dtype: type) -> np.ndarray:
    values: np.ndarray = np.asarray(pc.fill_null(col, 0).to_numpy(zero_copy_only=False),
                                    dtype=dtype)
    if col.null_count and null != 0:
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


def columns_of(table: pa.Table) -> EventColumns:
    """Columns of a table of EVENT_SCHEMA, sorted by time (stable: file order
    breaks ties, as build_timeline does)."""
    table = table.unify_dictionaries() if table.num_rows else table
    probe_col = table.column("probe").combine_chunks()
    if not pa.types.is_dictionary(probe_col.type):
        probe_col = probe_col.dictionary_encode()
    names = tuple(probe_col.dictionary.to_pylist())
    ts = _ints(table.column("ts_ns"), 0, np.int64)
    order = np.argsort(ts, kind="stable")

    def take(a: np.ndarray) -> np.ndarray:
        return a[order]

    length_null = table.column("length").is_null().to_numpy(zero_copy_only=False)
    ret_null = table.column("ret").is_null().to_numpy(zero_copy_only=False)
    return EventColumns(
        probe_names=names,
        ts=take(ts),
        probe=take(_ints(probe_col.indices, 0, np.int32)),
        is_return=take(_codes(table.column("kind"), KIND_VALUES) == KIND_VALUES.index(
            Kind.RETURN.value)),
        ctx=take(_codes(table.column("ctx"), CTX_VALUES).astype(np.int8)),
        softirq=take(_codes(table.column("softirq"), SOFTIRQ_NAMES).astype(np.int8)),
        tid=take(_ints(table.column("tid"), 0, np.int64)),
        sk=take(_ints(table.column("sk"), 0, np.uint64)),
        skb=take(_ints(table.column("skb"), 0, np.uint64)),
        netns=take(_ints(table.column("netns"), 0, np.int64)),
        src=take(_endpoint(table.column("saddr"), table.column("sport"))),
        has_saddr=take(~np.asarray(table.column("saddr").is_null().to_numpy(
            zero_copy_only=False), dtype=bool)),
        dst=take(_endpoint(table.column("daddr"), table.column("dport"))),
        seq=take(_ints(table.column("seq"), -1, np.int64)),
        end_seq=take(_ints(table.column("end_seq"), -1, np.int64)),
        ack=take(_ints(table.column("ack"), -1, np.int64)),
        flags=take(_ints(table.column("tcp_flags"), 0, np.int64)),
        length=take(_ints(table.column("length"), 0, np.int64)),
        has_length=take(~np.asarray(length_null, dtype=bool)),
        ret=take(_ints(table.column("ret"), 0, np.int64)),
        has_ret=take(~np.asarray(ret_null, dtype=bool)),
    )
