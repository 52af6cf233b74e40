"""The typed record schema (tracer/tracefile/schema.py) at the readers:
every JSON record of either version is checked, and what does not fit is
one line naming the file, the line (version 1) and the field; mutated
inputs (wrong types, truncation, duplicated and reordered lines, bad UTF-8,
giant lines, deep nesting, odd lost and trailer records, files that are not
regular) never escape as another exception.

Events and headers here are synthetic (built in code); the mutation pass at
the end runs over the recorded fixtures in tests/data."""

from __future__ import annotations

import json
import os
import random
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from tests.unit.test_tracefile import (
    bare_event,
    synthetic_event,
    synthetic_header,
    write_v1,
)
from tracer.events import EVENT_SCHEMA, events_to_batch
from tracer.tracefile import (
    FORMAT_VERSION,
    Lost,
    Trace,
    TraceFormatError,
    TraceWriter,
    Trailer,
    read_trace,
    scan_trace,
)
from tracer.tracefile.schema import MAX_LINE_BYTES

DATA = Path(__file__).resolve().parent.parent / "data"


def _v1(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "t.kpath"
    path.write_text("\n".join(lines) + "\n")
    return path


def _good_lines(tmp_path: Path) -> list[str]:
    path = write_v1(tmp_path / "good.kpath", synthetic_header(),
                    [synthetic_event(1), bare_event(2), synthetic_event(3)],
                    [Lost(ts_ns=2, count=4, probe="tcp_v4_rcv")], Trailer("count", 3, 4))
    return path.read_text().splitlines()


def _refused(path: Path, pattern: str) -> str:
    with pytest.raises(TraceFormatError, match=pattern) as exc:
        read_trace(path)
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def _event(**fields: Any) -> str:
    body = {"ts_ns": 1, "cpu": 0, "tgid": 1, "tid": 1, "comm": "x", "probe": "tcp_push",
            "kind": "entry", "ctx": "task"}
    body.update(fields)
    return json.dumps({"event": body})


def _header_line(**fields: Any) -> str:
    rec = synthetic_header().to_record(version=1)
    rec.update(fields)
    return json.dumps({"header": rec})


# ---- wrong types: refused at the reader, with the field named ----

@pytest.mark.parametrize(("line", "pattern"), [
    (_event(saddr=[127, 0, 0, 1]), r":3: bad event record: Expected `str \| null`, got `array`"
                                   r" - at `\$.event.saddr`"),
    (_event(comm=7), r":3: bad event record: Expected `str`, got `int` - at `\$.event.comm`"),
    (_event(cpu=True), r":3: bad event record: Expected `int`, got `bool`"),
    (_event(ts_ns=1.5), r":3: bad event record: Expected `int`, got `float`"),
    (_event(ts_ns=-1), r":3: bad event record: Expected `int` >= 0"),
    (_event(softirq="NET_XX"), r":3: bad event record: Invalid enum value 'NET_XX'"),
    (_event(kind=None), r":3: bad event record: Expected `str`, got `null`"),
    (_event(sk=2 ** 64), r":3: bad event record: event field 'sk' out of range"),
    (_event(ts_ns=2 ** 63), r":3: bad event record: Expected `int` <= 9223372036854775807"),
    (json.dumps({"lost": {"ts_ns": 2 ** 64 - 1, "count": 3}}),
     r":3: bad lost record: Expected `int` <= 9223372036854775807 - at `\$.lost.ts_ns`"),
    (_event(saddr="::1"), r":3: bad event record: event field 'saddr' is not an IPv4"),
    (json.dumps({"lost": {"ts_ns": 1, "count": -3}}), r":3: bad lost record: .*>= 0"),
    (json.dumps({"lost": {"ts_ns": "1", "count": 3}}), r":3: bad lost record: Expected `int`"),
    (json.dumps({"lost": [1, 2]}), r":3: bad lost record: Expected `object \| null`, got `array`"),
    (json.dumps({"trailer": {"reason": "x", "events": 0, "lost": 0,
                             "lost_by_probe": {"p": "many"}}}),
     r":3: bad trailer record: Expected `int`, got `str` - at `\$.trailer.lost_by_probe"),
    (json.dumps({"trailer": {"reason": 5, "events": 0, "lost": 0}}),
     r":3: bad trailer record: Expected `str`"),
    (json.dumps({"trailer": None}), r":3: bad record: expected an object with one record key"),
    (json.dumps({}), r":3: bad record: expected an object with one record key"),
    (json.dumps({"event": json.loads(_event())["event"], "lost": {"ts_ns": 1, "count": 1}}),
     r":3: bad record: expected an object with one record key .*got 2"),
    ("null", r":3: bad record: Expected `object`, got `null`"),
    ('"text"', r":3: bad record: Expected `object`, got `str`"),
])
def test_v1_wrong_types_are_one_line_errors(tmp_path: Path, line: str, pattern: str) -> None:
    lines = _good_lines(tmp_path)
    lines.insert(2, line)
    _refused(_v1(tmp_path, lines), pattern)


@pytest.mark.parametrize(("fields", "pattern"), [
    ({"hostname": 5}, r"bad header: Expected `str`, got `int` - at `\$.hostname`"),
    ({"probes": {"a": 1}}, r"bad header: Expected `array`, got `object` - at `\$.probes`"),
    ({"probes": [{"name": "p", "layer": "tcp", "direction": "rx", "attached": "yes"}]},
     r"bad header: Expected `bool`, got `str` - at `\$.probes\[0\].attached`"),
    ({"filters": {"port": [1, 2]}}, r"bad header: Expected `bool \| int \| float \| str \| null`, "
                                   r"got `array` - at `\$.filters"),
    ({"command": "ls -l"}, r"bad header: Expected `array \| null`, got `str`"),
    ({"coverage": {"tcp": 1}}, r"bad header: Expected `str`, got `int`"),
    ({"sources": [{"hostname": ["h"]}]}, r"bad header: .* at `\$.sources\[0\].hostname`"),
    ({"version": "1"}, r"header has no format version"),
    ({"format": "other"}, r"not a kpath trace \(no kpath-trace header\)"),
])
def test_header_of_wrong_types_is_refused_in_both_versions(tmp_path: Path, fields: dict[str, Any],
                                                          pattern: str) -> None:
    lines = _good_lines(tmp_path)
    lines[0] = _header_line(**fields)
    _refused(_v1(tmp_path, lines), pattern)
    rec = synthetic_header().to_record()
    rec.update({k: v for k, v in fields.items() if k != "version" or v == "1"})
    path = tmp_path / "v2.kpath"
    path.write_bytes(_arrow_stream({b"kpath": json.dumps(rec).encode()}))
    _refused(path, pattern)


def test_unknown_keys_in_header_lost_and_trailer_are_tolerated(tmp_path: Path) -> None:
    """A newer writer may add keys: the records still read, typed."""
    lines = _good_lines(tmp_path)
    lines[0] = _header_line(future={"nested": [1, 2]})
    lost = json.loads(lines[1])
    lost["lost"]["future"] = 1
    lines[1] = json.dumps(lost)
    trailer = json.loads(lines[-1])
    trailer["trailer"]["future"] = "x"
    lines[-1] = json.dumps(trailer)
    t = read_trace(_v1(tmp_path, lines))
    assert t.lost == [Lost(ts_ns=2, count=4, probe="tcp_v4_rcv")]
    assert t.trailer == Trailer("count", 3, 4) and t.cut_short is None


# ---- the version 2 metadata goes through the same schema ----

def _arrow_stream(schema_meta: dict[bytes, bytes],
                  batch_meta: dict[bytes, bytes] | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    batch = events_to_batch([], synthetic_header().probe_names)
    with ipc.new_stream(sink, EVENT_SCHEMA.with_metadata(schema_meta)) as w:
        w.write_batch(batch, custom_metadata=batch_meta)
    return bytes(sink.getvalue())


@pytest.mark.parametrize(("meta", "pattern"), [
    ({b"kpath.lost": b'{"ts_ns": 1}'}, r"batch 1: bad lost or trailer record: Expected `array`"),
    ({b"kpath.lost": b'[{"ts_ns": 1, "count": -1}]'}, r"bad lost or trailer record: .*>= 0"),
    ({b"kpath.lost": b'[{"ts_ns": 1, "count": 1, "cpu": [0]}]'},
     r"Expected `int \| null`, got `array`"),
    ({b"kpath.trailer": b'{"reason": "x", "events": "all", "lost": 0}'},
     r"bad lost or trailer record: Expected `int`, got `str` - at `\$.events`"),
    ({b"kpath.trailer": b"[" * 100_000}, r"bad lost or trailer record: Expected `object`"),
    ({b"kpath.trailer": b'{"future": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"},
     r"bad lost or trailer record: not valid JSON \(nested too deeply\)"),
    ({b"kpath.trailer": b'{"reason": "\xff", "events": 0, "lost": 0}'}, r"not valid JSON"),
])
def test_v2_lost_and_trailer_metadata_are_checked(tmp_path: Path, meta: dict[bytes, bytes],
                                                  pattern: str) -> None:
    path = tmp_path / "t.kpath"
    rec = json.dumps(synthetic_header().to_record()).encode()
    path.write_bytes(_arrow_stream({b"kpath": rec}, meta))
    _refused(path, pattern)


def test_v2_header_nested_too_deeply(tmp_path: Path) -> None:
    path = tmp_path / "t.kpath"
    path.write_bytes(_arrow_stream({b"kpath": b'{"format": "kpath-trace", "version": 2, '
                                              b'"filters": ' + b"[" * 100_000}))
    _refused(path, r"not a kpath trace|not valid JSON")


# ---- encodings, nesting, giant lines ----

@pytest.mark.parametrize(("raw", "pattern"), [
    (b'{"event": {"comm": "\xff\xfe"}}', r":3: not valid JSON \(Invalid UTF-8"),
    (b'{"event": {"comm": "\\udc80"}}', r":3: not valid JSON .*surrogate"),
    (b'{"event": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", r":3: bad event record"),
    (b'{"lost": {"ts_ns": 1, "count": 1, "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}}",
     r":3: not valid JSON \(nested too deeply\)"),
])
def test_bad_encodings_and_deep_nesting(tmp_path: Path, raw: bytes, pattern: str) -> None:
    lines = [s.encode() for s in _good_lines(tmp_path)]
    lines.insert(2, raw)
    path = tmp_path / "t.kpath"
    path.write_bytes(b"\n".join(lines) + b"\n")
    _refused(path, pattern)


def test_a_giant_line_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    """A 50 MB line: refused once the line outgrows MAX_LINE_BYTES, in a
    few chunks (the file is read no further)."""
    lines = [s.encode() for s in _good_lines(tmp_path)]
    path = tmp_path / "t.kpath"
    with path.open("wb") as fh:
        fh.write(b"\n".join(lines[:2]) + b"\n")
        fh.write(b'{"event": {"comm": "' + b"x" * (50 << 20) + b'"}}\n')
    scan = scan_trace(path)
    with pytest.raises(TraceFormatError, match=r":3: line longer than 1 MiB"):
        list(scan)
    # The first line too: the header line is read with the same cap.
    path.write_bytes(b'{"header": "' + b"y" * (MAX_LINE_BYTES + 10) + b'"}\n')
    _refused(path, r"first line longer than 1 MiB")


def test_a_long_line_under_the_cap_reads(tmp_path: Path) -> None:
    """Lines longer than a read chunk, shorter than the cap, still read."""
    lines = _good_lines(tmp_path)
    lines[0] = _header_line(command=["x" * (600 << 10)])
    path = _v1(tmp_path, lines)
    scan = scan_trace(path, chunk_bytes=4096)
    assert sum(b.num_rows for b in scan) == 3
    assert scan.header.command == ["x" * (600 << 10)]


# ---- truncation, duplicated and reordered lines ----

def test_truncated_at_every_offset(tmp_path: Path) -> None:
    data = "\n".join(_good_lines(tmp_path)).encode() + b"\n"
    path = tmp_path / "cut.kpath"
    for end in range(len(data) + 1):
        path.write_bytes(data[:end])
        try:
            t = read_trace(path)
        except TraceFormatError as exc:
            assert "\n" not in str(exc)
            continue
        assert isinstance(t, Trace)
        whole = end == len(data) or data[end - 1:end] == b"}" and end >= len(data) - 1
        assert (t.cut_short is None) == whole, end


def test_duplicated_and_reordered_lines(tmp_path: Path) -> None:
    lines = _good_lines(tmp_path)
    header, lost, events, trailer = lines[0], lines[1], lines[2:-1], lines[-1]
    # Events out of time order and a lost record repeated: read as written.
    t = read_trace(_v1(tmp_path, [header, *reversed(events), lost, lost, trailer]))
    assert [e.ts_ns for e in t.events] == [3, 2, 1] and len(t.lost) == 2
    _refused(_v1(tmp_path, [header, header, *events, trailer]),
             r":2: bad record: Object contains unknown field `header`")
    _refused(_v1(tmp_path, [header, *events, trailer, trailer]), r":6: record after the trailer")
    _refused(_v1(tmp_path, [header, trailer, *events]), r":3: record after the trailer")
    _refused(_v1(tmp_path, [*events, header]), r"not a kpath trace \(no kpath-trace header\)")


def test_blank_lines_are_skipped_and_numbers_kept(tmp_path: Path) -> None:
    lines = _good_lines(tmp_path)
    t = read_trace(_v1(tmp_path, [lines[0], "", "  ", *lines[1:]]))
    assert len(t.events) == 3 and t.trailer is not None
    _refused(_v1(tmp_path, [lines[0], "", "  ", lines[1], "{x", *lines[2:]]),
             r":5: not valid JSON")


def test_an_event_after_a_probe_the_header_lacks(tmp_path: Path) -> None:
    """Such events (hand-built files) read: the probe joins the dictionary."""
    lines = _good_lines(tmp_path)
    lines.insert(2, _event(probe="tcp_rcv_established"))
    t = read_trace(_v1(tmp_path, lines))
    assert "tcp_rcv_established" in set(t.table.column("probe").to_pylist())


# ---- files that are not regular files ----

def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.kpath"
    os.mkfifo(fifo)
    result: list[BaseException] = []
    worker = threading.Thread(target=lambda: _catch(result, fifo), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "reading a FIFO blocked"
    assert isinstance(result[0], TraceFormatError)
    assert "is a pipe (FIFO), not a trace file" in str(result[0])


def _catch(out: list[BaseException], path: Path) -> None:
    try:
        read_trace(path)
    except BaseException as exc:  # noqa: BLE001  (the test inspects it)
        out.append(exc)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_a_device_is_refused() -> None:
    with pytest.raises(TraceFormatError, match="/dev/zero: is a character device"):
        read_trace("/dev/zero")


def test_a_symlink_to_a_regular_file_reads(tmp_path: Path) -> None:
    target = write_v1(tmp_path / "t.kpath", synthetic_header(), [synthetic_event(1)])
    link = tmp_path / "link.kpath"
    link.symlink_to(target)
    assert len(read_trace(link).events) == 1


# ---- mutated recordings: never a traceback ----

def _mutations(data: bytes, rng: random.Random) -> bytes:
    lines = data.split(b"\n")
    op = rng.randrange(6)
    if op == 0:  # flip bytes
        buf = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        return bytes(buf)
    if op == 1:  # cut
        return data[:rng.randrange(len(data))]
    if op == 2:  # duplicate a line
        i = rng.randrange(len(lines))
        return b"\n".join(lines[:i] + [lines[i]] + lines[i:])
    if op == 3:  # swap two lines
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
        return b"\n".join(lines)
    if op == 4:  # a value replaced by another JSON type
        repl = rng.choice([b"[1,2]", b"null", b'"s"', b"{}", b"-1", b"1e400", b"true",
                           b"18446744073709551616", b'"\\udc80"'])
        i = rng.randrange(len(lines))
        parts = lines[i].split(b":")
        if len(parts) > 2:
            k = rng.randrange(2, len(parts))
            tail = parts[k].lstrip(b" ")
            end = next((n for n, c in enumerate(tail) if c in b",}]"), len(tail))
            parts[k] = repl + tail[end:]
            lines[i] = b":".join(parts)
        return b"\n".join(lines)
    i = rng.randrange(len(lines))  # nesting
    return b"\n".join(lines[:i] + [b'{"event":' + b"[" * 5000] + lines[i:])


def test_mutated_recordings_never_escape_as_other_errors(tmp_path: Path) -> None:
    fixtures = [p for p in sorted(DATA.glob("*.kpath")) if p.stat().st_size < 120_000
                and p.read_bytes()[:1] == b"{"]
    assert fixtures
    rng = random.Random(9)
    path = tmp_path / "m.kpath"
    outcomes = {"read": 0, "refused": 0}
    for k in range(240):
        path.write_bytes(_mutations(fixtures[k % len(fixtures)].read_bytes(), rng))
        try:
            t = read_trace(path)
            _ = (t.events, t.header.probe_names, t.lost_total)
            outcomes["read"] += 1
        except TraceFormatError as exc:
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
    assert outcomes["read"] and outcomes["refused"]


def test_writer_and_reader_agree_on_the_schema(tmp_path: Path) -> None:
    """What the writers put out, the schema takes back (both versions)."""
    path = tmp_path / "t.kpath"
    w = TraceWriter(path, synthetic_header())
    w.events_batch([synthetic_event(1), bare_event(2)])
    w.lost_events(Lost(ts_ns=1, count=2, probe="tcp_v4_rcv", cpu=1))
    trailer = w.close("count", duration_ns=5, command_exit=-9, clock_offsets_end_ns=[3])
    t = read_trace(path)
    assert t.trailer == trailer and t.lost == [Lost(1, 2, "tcp_v4_rcv", 1)]
    assert t.header.probes == synthetic_header().probes
    assert FORMAT_VERSION == 2


def test_v2_batch_with_a_time_past_int64_is_where_the_file_stops(tmp_path: Path) -> None:
    """The version 1 schema's bound on ts_ns, in a version 2 batch: the
    batch is unreadable, the file cut short there (as any corrupt batch)."""
    path = tmp_path / "t.kpath"
    good = events_to_batch([synthetic_event(1)], synthetic_header().probe_names)
    ts = EVENT_SCHEMA.get_field_index("ts_ns")
    bad = good.set_column(ts, "ts_ns", pa.array([2 ** 63], pa.uint64()))
    rec = json.dumps(synthetic_header().to_record()).encode()
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, EVENT_SCHEMA.with_metadata({b"kpath": rec})) as w:
        w.write_batch(good)
        w.write_batch(bad)
    path.write_bytes(bytes(sink.getvalue()))
    t = read_trace(path)
    assert len(t.events) == 1 and t.cut_short and "past 2^63 - 1" in t.cut_short
    with pytest.raises(ValueError, match="past 2"):
        TraceWriter(tmp_path / "w.kpath", synthetic_header()).write_batch(bad)
