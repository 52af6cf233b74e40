"""Synthetic multi-flow traces: shifted copies of a real recording.

Copy k of a recording is the same connection made again: every identifier
that tells connections apart is moved by k (addresses, socket and skb
pointers, thread ids) and every sequence space by the same amount (seq,
end_seq, ack and the copies' seq alike), so each copy stays internally
consistent; timestamps move by k * stride, so with a stride shorter than the
recording, copies overlap in time and their events interleave.

    python -m tests.synthetic tests/data/hello_hi_core.kpath out.kpath --copies 3500
    python -m tests.synthetic tests/data/hello_hi_core.kpath out.arrows --copies 35200

An output ending in .arrows is an Arrow IPC stream of EVENT_SCHEMA batches,
one per copy, shifted on the columns (shifted_batch): for traces too large
to build as Event objects; its loss records are left out. With --columns, a
.kpath output is made the same way as a version 2 trace (copies in batch
order, not time order; loss records kept, each copy's with its batch):

    python -m tests.synthetic tests/data/hello_hi_core.kpath big.kpath --copies 35211 --columns
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from tracer.events import EVENT_SCHEMA, Event, events_to_batch
from tracer.tracefile import Lost, Trace, TraceWriter, read_trace

SEQ_MOD = 1 << 32
ADDR_STEP = 1 << 8  # 127.0.0.1 -> 127.0.1.1 -> ...: stays inside 127/8 for 65536 copies
POINTER_STEP = 1 << 32
TID_STEP = 1 << 16
SEQ_STEP = 1_000_003  # prime: copies' sequence numbers never line up
BATCH_ROWS = 1 << 16  # rows per Arrow batch, about what a trace reader hands over


def _addr(addr: str | None, k: int) -> str | None:
    if addr is None or addr == "0.0.0.0":
        return addr
    return str(ipaddress.IPv4Address((int(ipaddress.IPv4Address(addr)) + k * ADDR_STEP)
                                     % (1 << 32)))


def _seq(value: int | None, k: int) -> int | None:
    return None if value is None else (value + k * SEQ_STEP) % SEQ_MOD


def _pointer(value: int, k: int) -> int:
    return value + k * POINTER_STEP if value else 0


def shifted_event(ev: Event, k: int, dt: int) -> Event:
    return dataclasses.replace(
        ev, ts_ns=ev.ts_ns + dt, tgid=ev.tgid + k * TID_STEP, tid=ev.tid + k * TID_STEP,
        sk=_pointer(ev.sk, k), skb=_pointer(ev.skb, k), saddr=_addr(ev.saddr, k),
        daddr=_addr(ev.daddr, k), seq=_seq(ev.seq, k), end_seq=_seq(ev.end_seq, k),
        ack=_seq(ev.ack, k))


def _shift_column(col: pa.Array, add: int, mod: int | None = None,
                  keep_zero: bool = False) -> pa.Array:
    values = col.fill_null(0).to_numpy(zero_copy_only=False).astype(np.uint64)
    shifted = values + np.uint64(add)
    if mod is not None:
        shifted %= np.uint64(mod)
    if keep_zero:
        shifted = np.where(values == 0, values, shifted)
    return pa.array(shifted.astype(col.type.to_pandas_dtype()), col.type,
                    mask=np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool))


def shifted_batch(batch: pa.RecordBatch, k: int, dt: int) -> pa.RecordBatch:
    """shifted_event on a whole batch of EVENT_SCHEMA at once."""
    shift = {
        "ts_ns": (dt, None, False), "tgid": (k * TID_STEP, None, False),
        "tid": (k * TID_STEP, None, False), "sk": (k * POINTER_STEP, None, True),
        "skb": (k * POINTER_STEP, None, True), "saddr": (k * ADDR_STEP, 1 << 32, True),
        "daddr": (k * ADDR_STEP, 1 << 32, True), "seq": (k * SEQ_STEP, SEQ_MOD, False),
        "end_seq": (k * SEQ_STEP, SEQ_MOD, False), "ack": (k * SEQ_STEP, SEQ_MOD, False),
    }
    cols = [_shift_column(batch.column(name), *shift[name]) if name in shift
            else batch.column(name) for name in EVENT_SCHEMA.names]
    return pa.record_batch(cols, schema=EVENT_SCHEMA)


def span_of(trace: Trace) -> int:
    stamps = [ev.ts_ns for ev in trace.events] + [rec.ts_ns for rec in trace.lost]
    return max(stamps) - min(stamps) + 1 if stamps else 1


def copies(trace: Trace, count: int, overlap: int = 1, first: int = 0
           ) -> Iterator[tuple[list[Event], list[Lost]]]:
    """`count` shifted copies numbered from `first` (copies of different
    recordings mixed in one trace need distinct numbers); about `overlap`
    of them run at once."""
    stride = max(span_of(trace) // max(overlap, 1), 1)
    for k in range(first, first + count):
        dt = (k - first) * stride
        yield ([shifted_event(ev, k, dt) for ev in trace.events],
               [dataclasses.replace(rec, ts_ns=rec.ts_ns + dt) for rec in trace.lost])


def synthetic_trace(trace: Trace, count: int, overlap: int = 1, first: int = 0) -> Trace:
    events: list[Event] = []
    lost: list[Lost] = []
    for evs, recs in copies(trace, count, overlap, first):
        events.extend(evs)
        lost.extend(recs)
    trailer = None
    if trace.trailer is not None:
        trailer = dataclasses.replace(trace.trailer, events=len(events),
                                      lost=sum(rec.count for rec in lost), lost_by_probe={})
    return Trace(header=trace.header, events=events, lost=lost, trailer=trailer,
                 path=f"synthetic:{count}x{Path(trace.path).name}", cut_short=trace.cut_short)


def mixed_trace(traces: list[Trace], count: int, overlap: int) -> Trace:
    """Copies of several recordings in one trace, each recording's copies
    numbered apart; the first trace's header, with every probe listed."""
    parts = [synthetic_trace(t, count, overlap, first=i * count) for i, t in enumerate(traces)]
    probes = {p.name: p for t in traces for p in t.header.probes}
    header = dataclasses.replace(traces[0].header, probes=list(probes.values()))
    lost = [rec for part in parts for rec in part.lost]
    return Trace(header=header, events=[ev for part in parts for ev in part.events], lost=lost,
                 trailer=None, path=f"synthetic:mixed{len(traces)}x{count}",
                 cut_short=None)


def write_synthetic(src: str, out: str, count: int, overlap: int = 1) -> int:
    """Write `count` copies of `src` to `out` as they are made; events written."""
    trace = read_trace(src)
    writer = TraceWriter(out, trace.header)
    for evs, recs in copies(trace, count, overlap):
        for ev in evs:
            writer.event(ev)
        for rec in recs:
            writer.lost_events(rec)
    writer.close(trace.trailer.reason if trace.trailer else "synthetic")
    return writer.events


def write_synthetic_arrow(src: str, out: str, count: int, overlap: int = 1) -> int:
    """Write `count` copies of `src`'s events as an Arrow IPC stream; events written."""
    trace = read_trace(src)
    base = events_to_batch(trace.events, [p.name for p in trace.header.probes])
    stride = max(span_of(trace) // max(overlap, 1), 1)
    per_batch = max(BATCH_ROWS // max(base.num_rows, 1), 1)
    with pa.OSFile(out, "wb") as sink, pa.ipc.new_stream(sink, EVENT_SCHEMA) as writer:
        for first in range(0, count, per_batch):
            copies = [shifted_batch(base, k, k * stride)
                      for k in range(first, min(first + per_batch, count))]
            writer.write_table(pa.Table.from_batches(copies).combine_chunks())
    return count * base.num_rows


def write_synthetic_v2(src: str, out: str, count: int, overlap: int = 1) -> int:
    """`count` copies of `src` shifted on the columns, as a version 2 trace;
    events written."""
    trace = read_trace(src)
    base = events_to_batch(trace.events, [p.name for p in trace.header.probes])
    stride = max(span_of(trace) // max(overlap, 1), 1)
    per_batch = max(BATCH_ROWS // max(base.num_rows, 1), 1)
    writer = TraceWriter(out, trace.header)
    for first in range(0, count, per_batch):
        ks = range(first, min(first + per_batch, count))
        for k in ks:
            for rec in trace.lost:
                writer.lost_events(dataclasses.replace(rec, ts_ns=rec.ts_ns + k * stride))
        table = pa.Table.from_batches([shifted_batch(base, k, k * stride) for k in ks])
        for batch in table.combine_chunks().to_batches():
            writer.write_batch(batch)
    writer.close(trace.trailer.reason if trace.trailer else "synthetic")
    return writer.events


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--copies", type=int, required=True)
    ap.add_argument("--overlap", type=int, default=4, help="copies running at once")
    ap.add_argument("--columns", action="store_true",
                    help="a .kpath output written as version 2 from shifted columns")
    args = ap.parse_args(argv)
    write = (write_synthetic_arrow if args.out.endswith(".arrows")
             else write_synthetic_v2 if args.columns else write_synthetic)
    n = write(args.src, args.out, args.copies, args.overlap)
    print(f"wrote {n} events to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
