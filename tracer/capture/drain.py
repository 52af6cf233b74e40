"""From a BPF ring buffer map to Arrow batches, with no Python per record:
the bulk reader (ringbuf.py) hands over spans of raw kp_event records, the
vectorised decoder (record.py) makes each span one batch in EVENT_SCHEMA.
Shared by both kernel backends (CO-RE's map fd from libbpf, BCC's from its
table)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from tracer.capture import libbpf
from tracer.capture.base import WAKEUP_FRACTION
from tracer.capture.errors import LoadError
from tracer.capture.record import (
    RAW_EVENT_SIZE,
    RAW_FRAME_SIZE,
    BlindWindow,
    ProbeTable,
    decode_records,
)
from tracer.capture.ringbuf import HEADER, RingReader, committed, scan
from tracer.heap import keep_freed_heap

BPF_MAP_TYPE_RINGBUF = 27
# Records below the wakeup mark are read this long after the last read at
# the latest (the live counter's pace; the ring holds minutes of them).
READ_INTERVAL_S = 1.0
# A drain at the end of a trace stops after this many spans even if the
# producers keep writing (the probes are still attached).
FINAL_SPANS = 64
# Records of the made-up span read before the trace starts (a quarter of
# the default ring, where the BPF side wakes the reader), one in FRAME_EVERY
# a frame record (one per packet and direction in a bulk transfer: ~1 in 9).
REHEARSAL_RECORDS = 1 << 16
FRAME_EVERY = 9


class RingDrain:
    """Reads one ring buffer map and feeds its records, decoded, to a sink."""

    def __init__(self, map_fd: int, table: ProbeTable,
                 sink: Callable[[pa.RecordBatch], None]) -> None:
        info = libbpf.map_info(map_fd)
        if info.type != BPF_MAP_TYPE_RINGBUF:
            raise LoadError(f"map {info.name.decode(errors='replace')} is not a ring buffer "
                            f"(type {info.type})", "")
        try:
            self._reader = RingReader(map_fd, info.max_entries, RAW_EVENT_SIZE, RAW_FRAME_SIZE)
        except OSError as exc:
            raise LoadError(f"cannot map the ring buffer: {exc.strerror}", "") from None
        self._table = table
        self._sink = sink
        self.size = int(info.max_entries)
        # Where the BPF side starts waking the reader (core.py wakeup_bytes;
        # BCC's per-CPU record counts come to about the same).
        self._wake_bytes = self.size // WAKEUP_FRACTION
        self._last_read = time.monotonic()
        self.undecoded = 0  # records that are not events of a known probe: lost
        self.blind: list[BlindWindow] = []

    def rehearse(self, rehearse: Callable[[pa.RecordBatch], None] | None) -> None:
        """Read and decode a made-up span as big as a real one before the
        traced command starts, its batch handed to `rehearse` (the trace
        writer's dry run), with the C heap set to keep what they free: what
        the first real read would pay otherwise, under TCG in the middle of
        the command's run, is paid here. Measured in the 6.1 guest on
        40,000 records: 0.37 s of CPU and 3,155 page faults the first time,
        0.09 s and none once the heap is warm (bench/README.md)."""
        keep_freed_heap()
        sizes = np.full(REHEARSAL_RECORDS, RAW_EVENT_SIZE, np.int64)
        sizes[FRAME_EVERY - 1::FRAME_EVERY] = RAW_FRAME_SIZE
        data, starts = committed(sizes)
        # Fields of some variety (its compression sets up what real data's
        # does): the time, and the ip of a probe the table knows.
        fields = data.view("<u8")
        fields[(starts + HEADER) // 8] = np.arange(REHEARSAL_RECORDS) * 1000
        fields[(starts + HEADER + 8) // 8] = self._table.keys[0] if len(self._table.keys) else 0
        span = scan(data, (1 << (len(data) - 1).bit_length()) - 1, 0, len(data),
                    RAW_EVENT_SIZE, RAW_FRAME_SIZE)
        batch = decode_records(span.records, self._table, span.frame_rows,
                               span.frame_tails).batch
        if rehearse is not None:
            rehearse(batch)

    def poll(self, timeout_ms: int) -> int:
        """Wait up to timeout_ms, or until the ring is WAKEUP_FRACTION full
        (the BPF side wakes the reader then); take all there is once it is
        that full or READ_INTERVAL_S after the last read. Each read has a
        fixed cost (a batch decoded and written: 8 ms on the host, about 20x
        that under TCG): reading whatever was there every 100 ms kept the
        reader busy for the whole of a traced transfer in the VM (7.5 s of
        CPU in 7.7 s), host CPU that the workload's vCPU needed."""
        if self._reader.pending() < self._wake_bytes:
            self._reader.wait(timeout_ms / 1000)
        now = time.monotonic()
        if (self._reader.pending() < self._wake_bytes
                and now - self._last_read < READ_INTERVAL_S):
            return 0
        self._last_read = now
        return self._read()

    def drain(self) -> int:
        n = 0
        for _ in range(FINAL_SPANS):
            got = self._read()
            n += got
            if not got:
                break
        return n

    def _read(self) -> int:
        span = self._reader.read()
        self.undecoded += span.odd + span.discarded
        if not len(span.records):
            return 0
        decoded = decode_records(span.records, self._table, span.frame_rows, span.frame_tails)
        self.undecoded += decoded.unknown
        self.blind.extend(decoded.blind)
        if decoded.batch.num_rows:
            self._sink(decoded.batch)
        return len(span.records)

    def take_undecoded(self) -> int:
        n, self.undecoded = self.undecoded, 0
        return n

    def take_blind(self) -> list[BlindWindow]:
        out, self.blind = self.blind, []
        return out

    def close(self) -> None:
        self._reader.close()
