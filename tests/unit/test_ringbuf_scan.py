"""The ring buffer drain (tracer/capture/ringbuf.py) on synthetic rings: a
numpy buffer laid out as the kernel lays out a BPF ring buffer's data area
(8-byte record headers, BUSY/DISCARD bits, 8-byte alignment), mapped twice
in a row as the kernel maps it, so a span that wraps is contiguous."""

from __future__ import annotations

import numpy as np

from tracer.capture.record import FRAME_TAIL_DTYPE, RAW_FRAME_SIZE
from tracer.capture.ringbuf import BUSY, DISCARD, HEADER, record_stride, scan

SIZE = 120  # a kp_event
STRIDE = record_stride(SIZE)
FRAME = RAW_FRAME_SIZE  # a kp_frame_event: three slots of STRIDE
TAIL = FRAME - SIZE


class SyntheticRing:
    def __init__(self, data_size: int) -> None:
        self.ring = np.zeros(data_size, np.uint8)
        self.mask = data_size - 1
        self.prod = 0

    def put(self, payload: bytes, flags: int = 0) -> None:
        """Append a record at the producer position, wrapping round the end."""
        rec = np.zeros(record_stride(len(payload)), np.uint8)
        rec[:4] = np.frombuffer(np.uint32(len(payload) | flags).tobytes(), np.uint8)
        rec[HEADER:HEADER + len(payload)] = np.frombuffer(payload, np.uint8)
        for i, byte in enumerate(rec):
            self.ring[(self.prod + i) & self.mask] = byte
        self.prod += len(rec)

    def doubled(self) -> np.ndarray:
        return np.concatenate([self.ring, self.ring])


def _payload(i: int) -> bytes:
    return bytes([i & 0xFF]) * SIZE


def test_uniform_records_come_out_in_order() -> None:
    ring = SyntheticRing(4096)
    for i in range(10):
        ring.put(_payload(i))
    span = scan(ring.doubled(), ring.mask, 0, ring.prod, SIZE)
    assert span.records.shape == (10, SIZE)
    assert [int(r[0]) for r in span.records] == list(range(10))
    assert span.consumed == ring.prod and not span.busy


def test_stops_at_the_first_busy_record() -> None:
    ring = SyntheticRing(4096)
    ring.put(_payload(1))
    ring.put(_payload(2))
    busy_at = ring.prod
    ring.put(_payload(3), BUSY)
    ring.put(_payload(4))  # committed, but after a busy one: must wait
    span = scan(ring.doubled(), ring.mask, 0, ring.prod, SIZE)
    assert [int(r[0]) for r in span.records] == [1, 2]
    assert span.busy and span.consumed == busy_at


def test_discarded_and_odd_records_are_skipped_and_counted() -> None:
    ring = SyntheticRing(4096)
    ring.put(_payload(1))
    ring.put(_payload(2), DISCARD)
    ring.put(b"short record")  # another size: not a kp_event
    ring.put(b"dropped short", DISCARD)
    ring.put(_payload(5))
    span = scan(ring.doubled(), ring.mask, 0, ring.prod, SIZE)
    assert [int(r[0]) for r in span.records] == [1, 5]
    assert (span.discarded, span.odd) == (2, 1)
    assert span.consumed == ring.prod


def test_a_span_that_wraps_round_the_end_is_read_whole() -> None:
    ring = SyntheticRing(1024)  # 8 records of 128 bytes
    ring.put(b"x" * 56)  # 64 bytes: the kp_events after it straddle the end
    for i in range(6):
        ring.put(_payload(i))
    first = scan(ring.doubled(), ring.mask, 0, ring.prod, SIZE)
    assert len(first.records) == 6 and first.odd == 1
    # The producer goes on round the end of the ring: positions keep growing.
    for i in range(6, 13):
        ring.put(_payload(i))
    assert ring.prod & ring.mask < first.consumed & ring.mask  # it wrapped
    span = scan(ring.doubled(), ring.mask, first.consumed, ring.prod, SIZE)
    assert [int(r[0]) for r in span.records] == list(range(6, 13))
    # Without the second mapping the wrapped tail would be garbage.
    half = np.concatenate([ring.ring, np.zeros_like(ring.ring)])
    broken = scan(half, ring.mask, first.consumed, ring.prod, SIZE)
    assert [bytes(r) for r in span.records] == [_payload(i) for i in range(6, 13)]
    assert [bytes(r) for r in broken.records] != [_payload(i) for i in range(6, 13)]


def test_nothing_to_read() -> None:
    ring = SyntheticRing(1024)
    span = scan(ring.doubled(), ring.mask, 512, 512, SIZE)
    assert span.records.shape == (0, SIZE) and span.consumed == 512


class CommitsWhileRead(np.ndarray):
    """A ring whose producer commits the busy record at `at` just after the
    reader's first look at its header (the race of a live ring)."""

    at: int
    committed: bool

    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        out = super().__getitem__(key)
        # Views made by slicing have no `committed`: only the ring itself acts.
        if (not getattr(self, "committed", True) and isinstance(key, slice)
                and (key.start or 0) <= self.at < (key.stop or len(self))):
            out = np.array(out)  # what the reader saw: still busy
            self.committed = True
            for base in (self.at, self.at + len(self) // 2):
                self.view(np.ndarray)[base + 3] &= 0x7F  # BUSY is bit 31 of the u32
        return out


def test_a_record_committed_while_the_run_is_read_is_taken_not_skipped() -> None:
    ring = SyntheticRing(4096)
    ring.put(_payload(1))
    at = ring.prod
    ring.put(_payload(2), BUSY)
    ring.put(_payload(3))
    data = ring.doubled().view(CommitsWhileRead)
    data.at, data.committed = at, False
    # Seen busy at one look and committed at the next: taken in this pass or
    # the next (a busy record ends a pass), never counted odd or skipped.
    got: list[int] = []
    cons = 0
    for _ in range(2):
        span = scan(data, ring.mask, cons, ring.prod, SIZE)
        got += [int(r[0]) for r in span.records]
        assert (span.odd, span.discarded) == (0, 0)
        cons = span.consumed
    assert got == [1, 2, 3] and cons == ring.prod


def _frame(i: int, fill: int) -> bytes:
    """A SYNTHETIC kp_frame_event: event i, then its tail filled with
    `fill` but for the two guard words (0), as kp_event.h lays it out."""
    tail = np.full(TAIL, fill, np.uint8)
    for guard in ("guard1", "guard2"):
        at = FRAME_TAIL_DTYPE.fields[guard][1]
        tail[at:at + 4] = 0
    return _payload(i) + tail.tobytes()


def test_frame_records_fill_whole_slots() -> None:
    assert record_stride(FRAME) == 3 * STRIDE


def test_frame_records_join_the_events_in_ring_order() -> None:
    """SYNTHETIC frame records (kp_frame_event: an event, then the frame)
    between plain events: their event parts come out in ring order, their
    frame parts apart with the event's row, a discarded one nowhere."""
    ring = SyntheticRing(8192)
    ring.put(_payload(1))
    ring.put(_frame(2, 0xA2))
    ring.put(_payload(3))
    ring.put(_frame(4, 0xA4), DISCARD)
    ring.put(_frame(5, 0xA5))
    ring.put(_payload(6))
    span = scan(ring.doubled(), ring.mask, 0, ring.prod, SIZE, FRAME)
    assert [int(r[0]) for r in span.records] == [1, 2, 3, 5, 6]
    assert span.frame_rows.tolist() == [1, 3]
    assert span.frame_tails.shape == (2, TAIL)
    assert span.frame_tails[:, 4].tolist() == [0xA2, 0xA5]
    assert (span.discarded, span.odd, span.consumed) == (1, 0, ring.prod)
    # Without frame records expected, they are odd records, counted.
    plain = scan(ring.doubled(), ring.mask, 0, ring.prod, SIZE)
    assert [int(r[0]) for r in plain.records] == [1, 3, 6] and plain.odd == 2


def test_a_frame_whose_guards_are_not_0_is_still_taken() -> None:
    """SYNTHETIC: a frame record with its tail all 0xEE (guards included,
    which kpath's programs never write): the slots cannot tell its end, so
    it is taken alone, by its header; the records after it are not lost."""
    ring = SyntheticRing(8192)
    ring.put(_payload(1))
    ring.put(_payload(2) + bytes([0xEE]) * TAIL)
    for i in range(3, 8):
        ring.put(_payload(i))
    span = scan(ring.doubled(), ring.mask, 0, ring.prod, SIZE, FRAME)
    assert [int(r[0]) for r in span.records] == list(range(1, 8))
    assert span.frame_rows.tolist() == [1] and span.frame_tails[0, 0] == 0xEE
    assert (span.odd, span.consumed, span.busy) == (0, ring.prod, False)


def test_a_busy_frame_record_ends_the_span() -> None:
    ring = SyntheticRing(8192)
    ring.put(_frame(1, 0xA1))
    busy_at = ring.prod
    ring.put(_frame(2, 0xA2), BUSY)
    ring.put(_payload(3))
    span = scan(ring.doubled(), ring.mask, 0, ring.prod, SIZE, FRAME)
    assert [int(r[0]) for r in span.records] == [1]
    assert span.busy and span.consumed == busy_at


def test_runs_of_every_length_between_frame_records() -> None:
    """SYNTHETIC: runs of 0 to 300 plain events between frame records,
    wrapping round the end: every event once, in ring order, each frame's
    tail with its own event."""
    ring = SyntheticRing(1 << 17)
    ring.prod = ring.mask + 1 - 7 * STRIDE  # start near the end: the span wraps
    want: list[int] = []
    frames: list[int] = []
    i = 0
    for run in (0, 1, 63, 64, 65, 300, 2, 129):
        for _ in range(run):
            ring.put(_payload(i))
            want.append(i & 0xFF)
            i += 1
        ring.put(_frame(i, i & 0xFF))
        frames.append(len(want))
        want.append(i & 0xFF)
        i += 1
    start = ring.mask + 1 - 7 * STRIDE
    span = scan(ring.doubled(), ring.mask, start, ring.prod, SIZE, FRAME)
    assert [int(r[0]) for r in span.records] == want
    assert span.frame_rows.tolist() == frames
    assert span.frame_tails[:, 4].tolist() == [want[r] for r in frames]
    assert (span.discarded, span.odd, span.consumed, span.busy) == (0, 0, ring.prod, False)


def test_random_mixes_against_a_walk() -> None:
    """SYNTHETIC: random sequences of events, frames, discarded and odd
    records, read in spans from random consumer positions: the same
    records as walking the headers one by one."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        ring = SyntheticRing(1 << 16)  # more than 90 frames take
        ring.prod = int(rng.integers(0, 1 << 16)) & ~7
        start = ring.prod
        want: list[tuple[int, int | None]] = []
        for i in range(int(rng.integers(0, 90))):
            kind = rng.choice(4, p=[0.7, 0.2, 0.05, 0.05])
            if kind == 0:
                ring.put(_payload(i))
                want.append((i & 0xFF, None))
            elif kind == 1:
                ring.put(_frame(i, (i * 7) & 0xFF))
                want.append((i & 0xFF, (i * 7) & 0xFF))
            elif kind == 2:
                ring.put(_payload(i), DISCARD)
            else:
                ring.put(bytes(int(rng.choice([n for n in range(1, 200) if n != SIZE]))))
        span = scan(ring.doubled(), ring.mask, start, ring.prod, SIZE, FRAME)
        assert [int(r[0]) for r in span.records] == [w[0] for w in want]
        assert span.frame_rows.tolist() == [j for j, w in enumerate(want) if w[1] is not None]
        assert span.frame_tails[:, 4].tolist() == [w[1] for w in want if w[1] is not None]
        assert span.consumed == ring.prod and not span.busy
