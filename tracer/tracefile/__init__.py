"""Reader and writer of the kpath trace file (format: docs/trace-format.md).

JSON Lines, one record per line, each line an object with a single key that
names the record: header (first line), event, lost, trailer (last line).
Written and flushed as a stream so that a tracer killed mid-way leaves every
complete line readable; a missing trailer is how a reader knows it was cut.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tracer.events import Event, ProbeStatus, known_keys

FORMAT_NAME = "kpath-trace"
FORMAT_VERSION = 1


class TraceFormatError(Exception):
    """The file is not a readable kpath trace; the message names the problem."""


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
    probes: list[ProbeStatus] = field(default_factory=list)
    filters: dict[str, Any] = field(default_factory=dict)
    command: list[str] | None = None
    # Per layer: "full", "partial" or "none" (what the attached probes can see).
    coverage: dict[str, str] = field(default_factory=dict)
    attach_kinds: list[str] = field(default_factory=list)  # kprobe, tp_btf, tracepoint, ...

    @property
    def attached(self) -> list[ProbeStatus]:
        return [p for p in self.probes if p.attached]

    @property
    def missing(self) -> list[ProbeStatus]:
        return [p for p in self.probes if not p.attached]

    def to_record(self) -> dict[str, Any]:
        rec = dict(self.__dict__)
        rec["probes"] = [p.to_record() for p in self.probes]
        rec["format"] = FORMAT_NAME
        rec["version"] = FORMAT_VERSION
        return rec

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Header:
        data = known_keys(cls, rec)
        data["probes"] = [ProbeStatus.from_record(p) for p in data.get("probes", [])]
        return cls(**data)


@dataclass
class Lost:
    """Events the kernel could not hand over (full buffer), noticed at ts_ns."""

    ts_ns: int
    count: int
    probe: str | None = None  # None when the buffer cannot say which probe
    cpu: int | None = None

    def to_record(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Trailer:
    reason: str  # why tracing stopped: duration | count | command-exited | signal | ...
    events: int
    lost: int
    lost_by_probe: dict[str, int] = field(default_factory=dict)
    duration_ns: int = 0
    command_exit: int | None = None

    def to_record(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Trace:
    header: Header
    events: list[Event]
    lost: list[Lost]
    trailer: Trailer | None
    path: str = ""
    cut_short: str | None = None  # why the file ended early, if it did

    @property
    def lost_total(self) -> int:
        if self.trailer is not None:
            return self.trailer.lost
        return sum(rec.count for rec in self.lost)


class TraceWriter:
    """Streams records to a file; every line is flushed as soon as written."""

    def __init__(self, path: str | os.PathLike[str], header: Header) -> None:
        self.path = Path(path)
        self._fh: IO[str] = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        self.events = 0
        self.lost = 0
        self.lost_by_probe: dict[str, int] = {}
        self._write({"header": header.to_record()})
        self._closed = False

    def _write(self, rec: dict[str, Any]) -> None:
        self._fh.write(json.dumps(rec, separators=(",", ":")) + "\n")

    def event(self, ev: Event) -> None:
        self._write({"event": ev.to_record()})
        self.events += 1

    def events_batch(self, evs: Iterable[Event]) -> None:
        for ev in evs:
            self.event(ev)
        self._fh.flush()

    def lost_events(self, rec: Lost) -> None:
        self._write({"lost": rec.to_record()})
        self.lost += rec.count
        key = rec.probe or "(unknown)"
        self.lost_by_probe[key] = self.lost_by_probe.get(key, 0) + rec.count
        self._fh.flush()

    def flush(self) -> None:
        self._fh.flush()

    def close(
        self, reason: str, duration_ns: int = 0, command_exit: int | None = None
    ) -> Trailer:
        trailer = Trailer(
            reason=reason,
            events=self.events,
            lost=self.lost,
            lost_by_probe=dict(self.lost_by_probe),
            duration_ns=duration_ns,
            command_exit=command_exit,
        )
        if not self._closed:
            self._write({"trailer": trailer.to_record()})
            self._fh.close()
            self._closed = True
        return trailer


def read_trace(path: str | os.PathLike[str]) -> Trace:
    """Read a whole trace; raise TraceFormatError with a one-line reason."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise TraceFormatError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise TraceFormatError(f"{p}: is a directory, not a trace file") from None
    except PermissionError:
        raise TraceFormatError(f"{p}: permission denied") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TraceFormatError(
            f"{p}: not a kpath trace (binary data at byte {exc.start})"
        ) from None
    return parse_trace(text, str(p))


def parse_trace(text: str, name: str = "<trace>") -> Trace:
    if not text.strip():
        raise TraceFormatError(f"{name}: empty file, not a kpath trace")
    lines = text.split("\n")
    ends_with_newline = text.endswith("\n")
    if ends_with_newline:
        lines.pop()
    header = _parse_header(lines[0], name)
    events: list[Event] = []
    lost: list[Lost] = []
    trailer: Trailer | None = None
    cut_short: str | None = None
    last = len(lines) - 1
    for idx in range(1, len(lines)):
        line = lines[idx]
        lineno = idx + 1
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if idx == last and not ends_with_newline:
                cut_short = f"last record (line {lineno}) is incomplete"
                break
            raise TraceFormatError(f"{name}:{lineno}: not valid JSON") from None
        if trailer is not None:
            raise TraceFormatError(f"{name}:{lineno}: record after the trailer")
        if not isinstance(rec, dict) or len(rec) != 1:
            raise TraceFormatError(f"{name}:{lineno}: expected an object with one record key")
        (kind, body), = rec.items()
        try:
            if kind == "event":
                events.append(Event.from_record(body))
            elif kind == "lost":
                lost.append(Lost(**body))
            elif kind == "trailer":
                trailer = Trailer(**body)
            else:
                raise TraceFormatError(f"{name}:{lineno}: unknown record type {kind!r}")
        except (TypeError, ValueError) as exc:
            raise TraceFormatError(f"{name}:{lineno}: bad {kind} record: {exc}") from None
    if trailer is None:
        no_trailer = "no trailer: the tracer stopped before closing the file"
        cut_short = f"{cut_short}; {no_trailer}" if cut_short else no_trailer
    return Trace(header, events, lost, trailer, path=name, cut_short=cut_short)


def _parse_header(line: str, name: str) -> Header:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        raise TraceFormatError(f"{name}: not a kpath trace (first line is not JSON)") from None
    body = rec.get("header") if isinstance(rec, dict) else None
    if not isinstance(body, dict) or body.get("format") != FORMAT_NAME:
        raise TraceFormatError(f"{name}: not a kpath trace (no {FORMAT_NAME} header)")
    version = body.get("version")
    if not isinstance(version, int):
        raise TraceFormatError(f"{name}: header has no format version")
    if version > FORMAT_VERSION:
        raise TraceFormatError(
            f"{name}: trace format version {version} is newer than this kpath "
            f"reads ({FORMAT_VERSION}); upgrade kpath"
        )
    try:
        return Header.from_record(body)
    except TypeError as exc:
        raise TraceFormatError(f"{name}: bad header: {exc}") from None
