"""Bulk reader of a BPF ring buffer map, with no Python per record.

The kernel maps a ring buffer as: one consumer page (read-write: we publish
how far we have read), then one producer page and the data area mapped twice
in a row (read-only), so that a span of records that wraps round the end of
the ring is still contiguous in memory. Each record has an 8-byte header:
u32 length with BUSY (still being written) and DISCARD (dropped by its
producer) in the top bits, u32 page offset; records are 8-byte aligned.

kpath's records are nearly all one size (struct kp_event), so a span of
them is an array with a fixed stride: the headers are checked as one numpy
column and the payloads copied out in one go before the consumer position
moves on. The few frame records (struct kp_frame_event: an event with the
packet's first bytes, one per packet and direction) break a run: their
event part joins the records in ring order, the rest is kept apart with the
event's position.
"""

from __future__ import annotations

import mmap
import select
from dataclasses import dataclass, field

import numpy as np

BUSY = 1 << 31
DISCARD = 1 << 30
HEADER = 8
# Records whose headers one numpy pass checks at first; doubled while runs
# stay uniform. Checking every header to the producer at each run would be
# quadratic where frame records cut the runs short (one per ~9 events).
FIRST_RUN = 64
PEEK = 16  # headers read one by one before a run is checked as an array


def record_stride(size: int) -> int:
    """Bytes a record of `size` payload bytes takes in the ring."""
    return (size + HEADER + 7) & ~7


@dataclass
class Span:
    """What one read took out of the ring."""

    records: np.ndarray  # (n, record size) uint8, a copy
    consumed: int  # the new consumer position
    discarded: int = 0  # records their producer dropped (never kpath's: it never discards)
    odd: int = 0  # committed records of another size (not a kp_event): skipped, counted
    busy: bool = False  # stopped at a record still being written
    # Frame records: the row of each one's event in `records`, and its bytes
    # after the event (frame_size - size each).
    frame_rows: list[int] = field(default_factory=list)
    frame_tails: list[bytes] = field(default_factory=list)


def scan(data: np.ndarray, mask: int, cons: int, prod: int, size: int,
         frame_size: int = 0) -> Span:
    """Take every committed record between the consumer and producer
    positions. `data` is the data area mapped twice (2 * (mask + 1) bytes),
    `size` the payload size of a regular record, `frame_size` that of a
    frame record (0: none expected)."""
    stride = record_stride(size)
    chunks: list[np.ndarray] = []
    span = Span(np.empty((0, size), np.uint8), cons)
    pos = cons
    taken = 0  # event rows in chunks so far
    window = FIRST_RUN
    heads = memoryview(data.data).cast("I")  # u32 words: a header's length at off // 4
    step = stride // 4
    while pos < prod:
        off = pos & mask
        # A few headers one by one first: between frame records runs are
        # short, and numpy's per-call cost would dominate them.
        few = min((prod - pos) // stride, PEEK)
        k = 0
        while k < few and heads[(off >> 2) + k * step] == size:
            k += 1
        if k < PEEK:
            if k:
                chunks.append(data[off:off + k * stride].reshape(k, stride)
                              [:, HEADER:HEADER + size].copy())
                taken += k
                pos += k * stride
            window = FIRST_RUN
            n = 0
        else:
            n = min((prod - pos) // stride, window)
        if n:
            rows = data[off:off + n * stride].reshape(n, stride)
            lens = rows[:, :4].copy().view("<u4")[:, 0]
            # A busy bit, another size or a header not yet written all end
            # the uniform run; DISCARD alone does not.
            irregular = (lens & ~np.uint32(DISCARD)) != size
            k = int(np.argmax(irregular)) if irregular.any() else n
            keep = (lens[:k] & np.uint32(DISCARD)) == 0
            kept = int(np.count_nonzero(keep))
            span.discarded += k - kept
            if kept == k:
                chunks.append(rows[:k, HEADER:HEADER + size].copy())
            elif kept:
                chunks.append(rows[:k][keep, HEADER:HEADER + size])
            taken += kept
            pos += k * stride
            if k == n:
                window *= 2
                continue
            window = FIRST_RUN
        if pos >= prod:
            break
        # One record that is not a regular committed kp_event.
        off = pos & mask
        hdr = int(data[off:off + 4].copy().view("<u4")[0])
        if hdr & BUSY:
            span.busy = True
            break
        if hdr == size:
            # Busy when the run's headers were read, committed since: the
            # next pass takes it with the records after it.
            continue
        if frame_size and hdr == frame_size:
            rec = data[off + HEADER:off + HEADER + frame_size].copy()
            chunks.append(rec[:size].reshape(1, size))
            span.frame_rows.append(taken)
            span.frame_tails.append(rec[size:].tobytes())
            taken += 1
        elif hdr & DISCARD:
            span.discarded += 1
        else:
            span.odd += 1
        pos += record_stride(hdr & ~(BUSY | DISCARD))
    if chunks:
        span.records = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    span.consumed = pos
    return span


class RingReader:
    """One BPF ring buffer map, mapped into this process and read in spans."""

    def __init__(self, map_fd: int, data_size: int, record_size: int,
                 frame_size: int = 0) -> None:
        if data_size <= 0 or data_size & (data_size - 1):
            raise ValueError(f"ring buffer size must be a power of two, got {data_size}")
        page = mmap.PAGESIZE
        self.data_size = data_size
        self.record_size = record_size
        self.frame_size = frame_size
        self._mask = data_size - 1
        self._cons_map = mmap.mmap(map_fd, page, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        try:
            self._prod_map = mmap.mmap(map_fd, page + 2 * data_size, mmap.MAP_SHARED,
                                       mmap.PROT_READ, offset=page)
        except OSError:
            self._cons_map.close()
            raise
        self._cons = np.frombuffer(self._cons_map, np.uint64, count=1)
        self._prod = np.frombuffer(self._prod_map, np.uint64, count=1)
        self._data = np.frombuffer(self._prod_map, np.uint8, offset=page)
        # Edge-triggered: the map fd is readable whenever unread records
        # exist, so level-triggered epoll would return at once while any are
        # there; edge-triggered, a wait ends only at the kernel's next wakeup
        # of readers (the BPF side forces one once a quarter of the ring is
        # unread) or at the timeout.
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN | select.EPOLLET)

    def wait(self, timeout_s: float) -> bool:
        """Block until the kernel wakes readers or the timeout passes."""
        return bool(self._epoll.poll(timeout_s))

    def pending(self) -> int:
        """Bytes written and not yet read."""
        return int(self._prod[0]) - int(self._cons[0])

    def read(self) -> Span:
        """Take every committed record, then hand their space back."""
        cons = int(self._cons[0])
        prod = int(self._prod[0])
        span = scan(self._data, self._mask, cons, prod, self.record_size, self.frame_size)
        if span.consumed != cons:
            self._cons[0] = span.consumed
        return span

    def close(self) -> None:
        # The numpy views hold the mappings' buffers: drop them first, or
        # mmap.close() refuses.
        for name in ("_cons", "_prod", "_data"):
            if hasattr(self, name):
                delattr(self, name)
        self._epoll.close()
        self._prod_map.close()
        self._cons_map.close()
