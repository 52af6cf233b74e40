"""The records of a kpath trace file, whatever its version: header (with its
probe dictionary and source records), lost, trailer, and the Trace read
back. Format: docs/trace-format.md."""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pyarrow as pa

from tracer.events import Event, ProbeStatus, batch_to_events, events_to_batch
from tracer.tracefile.probe_dictionary import describe_unlisted

# Field types the schema's decoder checks (tracer/tracefile/schema.py).
# Counts, timestamps and durations: non-negative, and within int64, as the
# timeline computes with them (a CLOCK_MONOTONIC ns reaches 2^63 after 292 years).
INT64_MAX = 2 ** 63 - 1
Count = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
FilterValue = str | int | bool | float | None

FORMAT_NAME = "kpath-trace"
FORMAT_VERSION = 2  # what this kpath writes; it reads every version up to this one
JSONL_VERSION = 1  # JSON Lines, still written by `kpath convert --to jsonl`


class TraceFormatError(Exception):
    """The file is not a readable kpath trace; the message names the problem."""


@dataclass
class Source:
    """One host whose kernel the events come from. A monotonic timestamp is
    only meaningful with its boot: boot_id says which; the clock offsets map
    it to wall-clock time at the start (here) and at the end (the trailer)."""

    hostname: str = ""
    boot_id: str = ""  # /proc/sys/kernel/random/boot_id
    machine_id: str = ""  # /etc/machine-id
    clock_offset_ns: int = 0  # CLOCK_REALTIME - CLOCK_MONOTONIC when tracing started
    # A merged trace (kpath merge): added to this source's own CLOCK_MONOTONIC
    # times to put them on source 0's clock, estimated from the segments both
    # hosts saw (tracer/merge): within +- shift_uncertainty_ns, from
    # shift_segments segments. None where no shift was applied.
    shift_ns: int | None = None
    shift_uncertainty_ns: int | None = None
    shift_segments: int | None = None

    def to_record(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def clock_offset_ns() -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC now: add to a ts_ns for wall-clock ns."""
    return time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def _first_line(path: str) -> str:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return Path(path).read_text(encoding="ascii").strip()
    return ""


def local_source() -> Source:
    """This host, as a source record (ids are empty where the files are not)."""
    return Source(hostname=socket.gethostname(),
                  boot_id=_first_line("/proc/sys/kernel/random/boot_id"),
                  machine_id=_first_line("/etc/machine-id"),
                  clock_offset_ns=clock_offset_ns())


@dataclass
class Header:
    kernel_release: str
    kernel_version: str
    hostname: str
    machine: str
    backend: str  # "core" (CO-RE object via libbpf) or "bcc"
    buffer: str  # "ringbuf" | "perfbuf"
    clock: str = "CLOCK_MONOTONIC"
    clock_offset_ns: int = 0  # add to ts_ns to get CLOCK_REALTIME ns
    started: str = ""  # ISO 8601 wall-clock time
    tool_version: str = ""
    profile: str = "default"
    # The probe dictionary: every requested probe, in order; events name a
    # probe by its position here (version 2) or by name (version 1).
    probes: list[ProbeStatus] = field(default_factory=list)
    filters: dict[str, FilterValue] = field(default_factory=dict)  # tracer/filters.py
    command: list[str] | None = None
    # Per layer: "full", "partial" or "none" (what the attached probes can see).
    coverage: dict[str, str] = field(default_factory=dict)
    attach_kinds: list[str] = field(default_factory=list)  # kprobe, tp_btf, tracepoint, ...
    sources: list[Source] = field(default_factory=list)  # one per host (absent in version 1)

    @property
    def attached(self) -> list[ProbeStatus]:
        return [p for p in self.probes if p.attached]

    @property
    def missing(self) -> list[ProbeStatus]:
        return [p for p in self.probes if not p.attached]

    @property
    def probe_names(self) -> list[str]:
        return [p.name for p in self.probes]

    def to_record(self, version: int = FORMAT_VERSION) -> dict[str, Any]:
        rec = dict(self.__dict__)
        rec["probes"] = [p.to_record() for p in self.probes]
        rec["sources"] = [s.to_record() for s in self.sources]
        if not self.sources:
            del rec["sources"]
        rec["format"] = FORMAT_NAME
        rec["version"] = version
        return rec


def with_probes(header: Header, names: list[str]) -> Header:
    """The header with a dictionary entry for each of `names` it lacks (a
    version 1 file or hand-built events may name probes its header does
    not list): such a probe produced events, so it counts as attached."""
    have = set(header.probe_names)
    extra = [n for n in names if n not in have]
    if not extra:
        return header
    return replace(header, probes=[*header.probes, *(describe_unlisted(n) for n in extra)])


@dataclass(slots=True)  # a lossy trace holds a million: ~130 bytes each, not ~190
class Lost:
    """Events the kernel could not hand over (full buffer), noticed at ts_ns;
    or, with since_ns, a blind window: from since_ns to ts_ns the kernel
    skipped every kprobe program on `cpu` while `blind` (an interrupt or a
    softirq, "softirq NET_RX") ran inside one or a kprobe handler. A window's count is 0: before
    Linux 6.7 the kernel counts none of the events it skips there (from
    6.7 they are in the probes' own loss records)."""

    ts_ns: Count
    count: Count
    probe: str | None = None  # None when the buffer cannot say which probe
    cpu: Count | None = None
    since_ns: Count | None = None
    blind: str | None = None

    def to_record(self) -> dict[str, Any]:
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}


@dataclass
class Trailer:
    reason: str  # why tracing stopped: duration | count | command-exited | signal | ...
    events: Count
    lost: Count
    lost_by_probe: dict[str, Count] = field(default_factory=dict)
    duration_ns: Count = 0
    command_exit: int | None = None
    # CLOCK_REALTIME - CLOCK_MONOTONIC when tracing stopped, one per header
    # source, in order: with the start offsets, how far the clocks drifted.
    clock_offsets_end_ns: list[int] = field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None and v != []}


class _Events:
    """Trace.events: Event objects built from the table on first use (and
    cached); assigning events drops the table, which is rebuilt from them.
    A descriptor so that dataclasses.replace(trace, events=...) works."""

    def __get__(self, obj: Trace | None, objtype: type | None = None) -> list[Event]:
        if obj is None:
            return None  # type: ignore[return-value]  # the dataclass default: from the table
        if obj._events is None:
            obj._events = batch_to_events(obj.table)
        return obj._events

    def __set__(self, obj: Trace, value: list[Event] | None) -> None:
        obj._events = value
        if value is not None:
            obj._table = None


@dataclass
class Trace:
    """A trace read back: the events as columns (`table`, EVENT_SCHEMA) and,
    built from them on first use, as Event objects (`events`)."""

    header: Header
    events: _Events = field(default=_Events(), repr=False)  # list[Event]; see _Events
    lost: list[Lost] = field(default_factory=list)
    trailer: Trailer | None = None
    path: str = ""
    cut_short: str | None = None  # why the file ended early, if it did
    # Captured frames (tracer/frames.py FRAMES_SCHEMA; `row` indexes `table`);
    # None: none read (a trace made of Event objects).
    frames: pa.Table | None = field(default=None, repr=False, compare=False)
    _table: pa.Table | None = field(default=None, init=False, repr=False, compare=False)
    _events: list[Event] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_table(cls, header: Header, table: pa.Table, lost: list[Lost] | None = None,
                   trailer: Trailer | None = None, path: str = "",
                   cut_short: str | None = None) -> Trace:
        trace = cls(header, None, lost or [], trailer, path, cut_short)
        trace._table = table
        return trace

    @property
    def table(self) -> pa.Table:
        if self._table is None:
            names = self.header.probe_names
            self._table = pa.Table.from_batches([events_to_batch(self._events or [], names)])
        return self._table

    @property
    def num_events(self) -> int:
        return len(self._events) if self._events is not None else self.table.num_rows

    @property
    def lost_total(self) -> int:
        if self.trailer is not None:
            return self.trailer.lost
        return sum(rec.count for rec in self.lost)
