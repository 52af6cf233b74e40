"""Bulk reader of a BPF ring buffer map, with no Python per record.

The kernel maps a ring buffer as: one consumer page (read-write: we publish
how far we have read), then one producer page and the data area mapped twice
in a row (read-only), so that a span of records that wraps round the end of
the ring is still contiguous in memory. Each record has an 8-byte header:
u32 length with BUSY (still being written) and DISCARD (dropped by its
producer) in the top bits, u32 page offset; records are 8-byte aligned.

kpath's records take whole 128-byte slots: an event (struct kp_event) one,
a frame record (struct kp_frame_event: an event with the packet's first
bytes, one per packet and direction) three, the words where its second and
third slots begin 0, which no record's length is (kp_event.h). So the words
at 128-byte steps from the consumer position tell every record's start at
once: one numpy pass over a span, whatever its mix of records, before the
consumer position moves on. Anything else (a record still being written,
one dropped by its producer, one of another size) is taken alone, and the
slots start again after it.
"""

from __future__ import annotations

import mmap
import select
from dataclasses import dataclass, field

import numpy as np

BUSY = 1 << 31
DISCARD = 1 << 30
HEADER = 8


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
    # after the event (an (n, frame_size - size) uint8 array).
    frame_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    frame_tails: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.uint8))


def scan(data: np.ndarray, mask: int, cons: int, prod: int, size: int,
         frame_size: int = 0) -> Span:
    """Take every committed record between the consumer and producer
    positions. `data` is the data area mapped twice (2 * (mask + 1) bytes),
    `size` the payload size of a regular record, `frame_size` that of a
    frame record (0: none expected; it must fill whole slots of a regular
    record's stride, its first word in each slot after the first 0)."""
    stride = record_stride(size)
    tail = frame_size - size if frame_size else 0
    slots = record_stride(frame_size) // stride if frame_size else 0
    if slots and (record_stride(frame_size) % stride or HEADER + size != stride):
        raise ValueError(f"frame records of {frame_size} bytes do not fill whole slots")
    events: list[np.ndarray] = []
    rows_of_frames: list[np.ndarray] = []
    tails: list[np.ndarray] = []
    span = Span(np.empty((0, size), np.uint8), cons,
                frame_tails=np.zeros((0, tail), np.uint8))
    pos = cons
    taken = 0  # event rows so far
    while pos < prod:
        off = pos & mask
        n = (prod - pos) // stride
        if n:
            block = data[off:off + n * stride].reshape(n, stride)
            k, starts, frames = _slots(block[:, :4].copy().view("<u4")[:, 0], size,
                                       frame_size, slots)
            if len(starts):
                events.append(block[starts, HEADER:HEADER + size])
                if len(frames):
                    rows_of_frames.append(taken + np.searchsorted(starts, frames))
                    tails.append(np.concatenate([block[frames + j] for j in range(1, slots)],
                                                axis=1)[:, :tail])
                taken += len(starts)
            pos += k * stride
            if k == n and pos >= prod:
                break
            off = pos & mask
        # One record the slots did not take.
        hdr = int(data[off:off + 4].copy().view("<u4")[0])
        if hdr & BUSY:
            span.busy = True
            break
        if hdr == size:  # committed since its word was read
            events.append(data[off + HEADER:off + HEADER + size].copy().reshape(1, size))
            taken += 1
        elif frame_size and hdr == frame_size:  # its guards were not 0 (never kpath's)
            rec = data[off + HEADER:off + HEADER + frame_size].copy()
            events.append(rec[:size].reshape(1, size))
            rows_of_frames.append(np.array([taken], np.int64))
            tails.append(rec[size:].reshape(1, tail))
            taken += 1
        elif hdr & DISCARD:
            span.discarded += 1
        else:
            span.odd += 1
        pos += record_stride(hdr & ~(BUSY | DISCARD))
    if events:
        span.records = events[0] if len(events) == 1 else np.concatenate(events)
    if rows_of_frames:
        span.frame_rows = np.concatenate(rows_of_frames).astype(np.int64)
        span.frame_tails = np.concatenate(tails)
    span.consumed = pos
    return span


def committed(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A data area holding committed records of these payload sizes one
    after another from position 0 (headers written, payloads 0; the caller
    fills them in) and the position of each record's header: a made-up span
    for scan() (drain.py's rehearsal, bench_capture's drain timing)."""
    strides = (sizes + HEADER + 7) & ~7
    starts = np.concatenate([[0], np.cumsum(strides)[:-1]]).astype(np.int64)
    data = np.zeros(int(strides.sum()), np.uint8)
    data.view("<u4")[starts // 4] = sizes
    return data, starts


def _slots(words: np.ndarray, size: int, frame_size: int, slots: int
           ) -> tuple[int, np.ndarray, np.ndarray]:
    """From the first words of consecutive slots (the first a record's
    header): how many slots hold whole committed records (k), the slots
    where those records start and, of these, the frame records'."""
    n = len(words)
    event = words == size
    if not slots:
        k = int(np.argmax(~event)) if not event.all() else n
        return k, np.arange(k), np.zeros(0, np.int64)
    frame = words == frame_size
    zero = words == 0
    wrong = ~(event | frame | zero)
    at = np.flatnonzero(frame)
    inner = at[:, None] + np.arange(1, slots)
    whole = np.all(zero[np.minimum(inner, n - 1)] & (inner < n), axis=1)
    wrong[at[~whole]] = True  # a frame cut short, or its guards not 0
    covered = np.zeros(n, bool)
    covered[inner[whole].reshape(-1)] = True
    wrong |= zero & ~covered  # a 0 that is no frame's guard
    k = int(np.argmax(wrong)) if wrong.any() else n
    return k, np.flatnonzero((event | frame)[:k]), at[at < k]


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
