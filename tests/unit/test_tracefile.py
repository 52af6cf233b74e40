"""Trace file format: both versions' round trips, streaming, cut-short,
truncated and foreign files.

Events here are synthetic (built in code), not recordings."""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from tracer.events import (
    EVENT_SCHEMA,
    Context,
    Event,
    Kind,
    ProbeStatus,
    events_to_batch,
    with_frames,
)
from tracer.tracefile import (
    FORMAT_VERSION,
    Header,
    Lost,
    Source,
    Trace,
    TraceFormatError,
    TraceWriter,
    Trailer,
    read_trace,
    scan_trace,
    write_jsonl,
)


def synthetic_header() -> Header:
    return Header(
        kernel_release="6.1.0-test", kernel_version="#1 SMP", hostname="h", machine="x86_64",
        backend="bcc", buffer="ringbuf",
        probes=[
            ProbeStatus("tcp_v4_rcv", "tcp", "rx", attached=True, kinds=["entry"],
                        symbol="tcp_v4_rcv"),
            ProbeStatus("tcp_push", "tcp", "tx", attached=False, reason="inlined",
                        detail="no symbol"),
        ],
        filters={"port": 10086},
        sources=[Source("h", "b00t", "m4ch1ne", 1_700_000_000_000_000_000)],
    )


def synthetic_event(ts: int, probe: str = "tcp_v4_rcv", comm: str = "chat-client") -> Event:
    return Event(ts_ns=ts, cpu=1, tgid=10, tid=11, comm=comm, probe=probe,
                 kind=Kind.ENTRY, ctx=Context.SOFTIRQ, softirq="NET_RX", skb=0xffff1,
                 saddr="127.0.0.1", sport=40000, daddr="127.0.0.1", dport=10086,
                 seq=100, end_seq=102, ack=7, tcp_flags=0x18, length=2)


def bare_event(ts: int, probe: str = "tcp_push") -> Event:
    return Event(ts_ns=ts, cpu=0, tgid=1, tid=1, comm="x", probe=probe,
                 kind=Kind.ENTRY, ctx=Context.TASK)


def write_v1(path: Path, header: Header, events: list[Event], lost: list[Lost] | None = None,
             trailer: Trailer | None = None) -> Path:
    names = header.probe_names
    with path.open("w") as fh:
        write_jsonl(fh, header, iter([(events_to_batch(events, names), lost or [])]), trailer)
    return path


# ---- version 2 (Arrow stream) ----

def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "t.kpath"
    w = TraceWriter(path, synthetic_header())
    w.event(synthetic_event(1000))
    assert w.events == 1  # counted when handed over (a --count stop), written in batches
    w.lost_events(Lost(ts_ns=1500, count=3, probe="tcp_v4_rcv"))
    w.event(synthetic_event(2000, comm="other"))
    w.close("duration", duration_ns=5, clock_offsets_end_ns=[1_700_000_000_000_000_123])
    assert path.read_bytes()[:4] == b"\xff\xff\xff\xff"
    t = read_trace(path)
    assert t.cut_short is None
    assert [e.ts_ns for e in t.events] == [1000, 2000]
    assert t.events[0] == synthetic_event(1000)
    assert t.events[1] == synthetic_event(2000, comm="other")
    assert t.lost == [Lost(ts_ns=1500, count=3, probe="tcp_v4_rcv")]
    assert t.lost_total == 3 and t.trailer is not None and t.trailer.lost_by_probe == {
        "tcp_v4_rcv": 3}
    assert t.trailer.clock_offsets_end_ns == [1_700_000_000_000_000_123]
    assert [p.name for p in t.header.missing] == ["tcp_push"]
    assert t.header.missing[0].reason == "inlined"
    assert t.header.filters == {"port": 10086}
    assert t.header.sources == [Source("h", "b00t", "m4ch1ne", 1_700_000_000_000_000_000)]
    assert t.table.schema.equals(EVENT_SCHEMA)
    assert t.table.column("probe").to_pylist() == ["tcp_v4_rcv", "tcp_v4_rcv"]


def test_write_batch_and_scan_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "t.kpath"
    header = synthetic_header()
    w = TraceWriter(path, header)
    for k in range(3):
        names = header.probe_names
        w.write_batch(events_to_batch([synthetic_event(10 * k + i, comm=f"c{k}")
                                       for i in range(k + 1)], names))
        w.lost_events(Lost(ts_ns=10 * k + 5, count=k + 1))
    trailer = w.close("count")
    assert (trailer.events, trailer.lost, trailer.lost_by_probe) == (6, 6, {"(unknown)": 6})
    scan = scan_trace(path)
    assert scan.version == 2 and scan.header.hostname == "h"
    sizes = [b.num_rows for b in scan]
    assert sizes == [0, 1, 2, 3, 0]  # the first puts out the header; the last, the trailer
    assert [rec.count for rec in scan.lost] == [1, 2, 3]
    assert scan.trailer == trailer and scan.cut_short is None


def test_a_rehearsal_leaves_no_trace_in_the_file(tmp_path: Path) -> None:
    """SYNTHETIC events: the writer's dry run (before a live trace's
    command starts) writes nothing and counts nothing."""
    path = tmp_path / "t.kpath"
    header = synthetic_header()
    w = TraceWriter(path, header)
    before = path.read_bytes()
    batch = with_frames(events_to_batch([synthetic_event(i) for i in range(50)],
                                        header.probe_names), None)
    w.rehearse(batch)
    assert path.read_bytes() == before and w.events == 0
    w.write_batch(batch)
    w.close("count")
    assert [b.num_rows for b in scan_trace(path)] == [0, 50, 0]


def test_write_batch_refuses_another_probe_dictionary(tmp_path: Path) -> None:
    w = TraceWriter(tmp_path / "t.kpath", synthetic_header())
    with pytest.raises(ValueError, match="dictionary must be the header's probe names"):
        w.write_batch(events_to_batch([synthetic_event(1)], ["tcp_v4_rcv"]))
    good = events_to_batch([synthetic_event(1)], synthetic_header().probe_names)
    kinds = pa.DictionaryArray.from_arrays(pa.array([0], pa.int8()), pa.array(["enter"]))
    with pytest.raises(ValueError, match="unknown kind value"):
        w.write_batch(good.set_column(good.schema.get_field_index("kind"), "kind", kinds))
    with pytest.raises(ValueError, match="not in EVENT_SCHEMA"):
        w.write_batch(pa.record_batch([pa.array([1])], names=["ts_ns"]))
    with pytest.raises(ValueError, match="not in the header's probe dictionary"):
        w.events_batch([synthetic_event(1, probe="ip_rcv")])


def test_stream_is_readable_before_close(tmp_path: Path) -> None:
    path = tmp_path / "t.kpath"
    w = TraceWriter(path, synthetic_header())
    assert read_trace(path).num_events == 0  # the header alone is a readable file
    w.events_batch([synthetic_event(1), synthetic_event(2)])
    assert read_trace(path).num_events == 2  # each batch reaches the file when written
    w.lost_events(Lost(ts_ns=3, count=1))
    w.flush()
    t = read_trace(path)  # tracer still "running": no trailer yet
    assert len(t.events) == 2 and t.lost_total == 1
    assert t.cut_short is not None and "no trailer" in t.cut_short


def small_v2(tmp_path: Path) -> tuple[Path, Trace]:
    path = tmp_path / "small.kpath"
    w = TraceWriter(path, synthetic_header())
    w.events_batch([synthetic_event(1), synthetic_event(2, comm="b")])
    w.lost_events(Lost(ts_ns=3, count=4, probe="tcp_v4_rcv"))
    w.events_batch([synthetic_event(5, comm="c")])
    w.close("count")
    return path, read_trace(path)


def test_truncated_at_every_offset(tmp_path: Path) -> None:
    """A tracer killed anywhere: every complete batch reads back, flagged as
    cut short, or the file is refused in one line; never anything else."""
    path, whole = small_v2(tmp_path)
    data = path.read_bytes()
    cut_path = tmp_path / "cut.kpath"
    outcomes = set()
    for n in range(len(data)):
        cut_path.write_bytes(data[:n])
        try:
            t = read_trace(cut_path)
        except TraceFormatError as exc:
            assert "\n" not in str(exc)
            outcomes.add("error")
            continue
        if t.trailer is None:
            assert t.cut_short is not None, n
            assert t.events == whole.events[:len(t.events)]
        else:  # cut in the end-of-stream marker, after the trailer: nothing lost
            assert t.cut_short is None and t.events == whole.events
        assert t.lost == whole.lost[:len(t.lost)]
        outcomes.add(len(t.events))
    assert outcomes == {"error", 0, 2, 3}


def test_corrupt_bytes_never_escape_as_other_errors(tmp_path: Path) -> None:
    path, whole = small_v2(tmp_path)
    data = bytearray(path.read_bytes())
    rng = random.Random(33)
    bad = tmp_path / "bad.kpath"
    for _ in range(300):
        copy = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            copy[rng.randrange(len(copy))] = rng.randrange(256)
        bad.write_bytes(bytes(copy))
        try:
            t = read_trace(bad)
            _ = t.events
        except TraceFormatError as exc:
            assert "\n" not in str(exc)


def _arrow_stream(schema: pa.Schema, batch: pa.RecordBatch | None = None) -> bytes:
    sink = io.BytesIO()
    with ipc.new_stream(sink, schema) as w:
        if batch is not None:
            w.write_batch(batch)
    return sink.getvalue()


def test_foreign_files_are_refused_in_one_line(tmp_path: Path) -> None:
    other = pa.schema([("x", pa.int64())], metadata={b"kpath": b"{}"})
    batch = events_to_batch([synthetic_event(1)], ["tcp_v4_rcv"])
    kpath_meta = {b"kpath": json.dumps(synthetic_header().to_record()).encode()}
    table = pa.table({"x": [1, 2]})
    cases: dict[str, tuple[bytes, str]] = {
        "random": (random.Random(1).randbytes(4096), "binary data"),
        "png": (b"\x89PNG\r\n\x1a\n" + bytes(64), "a PNG image"),
        "other_schema": (_arrow_stream(other.with_metadata(kpath_meta),
                                       pa.record_batch([pa.array([1])], schema=other)),
                         "an Arrow stream with another schema"),
        "no_metadata": (_arrow_stream(EVENT_SCHEMA, batch), "without kpath metadata"),
        "other_metadata": (_arrow_stream(EVENT_SCHEMA.with_metadata({b"kpath": b"{}"})),
                           "no kpath-trace header"),
        "json": (b'{"traceEvents": []}\n', "no kpath-trace header"),
        "text": (b"hello world\n", "first line is not JSON"),
        "empty": (b"", "empty file"),
        "blank": (b"\n\n  \n", "empty file"),
    }
    pq.write_table(table, tmp_path / "t.parquet")
    cases["parquet"] = ((tmp_path / "t.parquet").read_bytes(), "a Parquet file")
    with pa.OSFile(str(tmp_path / "t.arrow"), "wb") as f, ipc.new_file(f, table.schema) as w:
        w.write_table(table)
    cases["arrow_file"] = ((tmp_path / "t.arrow").read_bytes(), "an Arrow IPC file")
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}.kpath"
        path.write_bytes(content)
        with pytest.raises(TraceFormatError) as exc:
            read_trace(path)
        assert message in str(exc.value), name
        assert "\n" not in str(exc.value)
        assert str(exc.value).startswith(str(path))


def test_newer_version_is_refused(tmp_path: Path) -> None:
    rec = synthetic_header().to_record()
    rec["version"] = FORMAT_VERSION + 1
    path = tmp_path / "new.kpath"
    path.write_bytes(_arrow_stream(EVENT_SCHEMA.with_metadata({b"kpath": json.dumps(rec)})))
    with pytest.raises(TraceFormatError, match="newer than this kpath reads"):
        read_trace(path)


def test_unknown_keys_are_tolerated(tmp_path: Path) -> None:
    rec = synthetic_header().to_record()
    rec["future_key"] = {"a": 1}
    rec["probes"][0]["future_probe_key"] = 3
    rec["sources"][0]["future_source_key"] = "x"
    path = tmp_path / "t.kpath"
    path.write_bytes(_arrow_stream(EVENT_SCHEMA.with_metadata({b"kpath": json.dumps(rec)})))
    t = read_trace(path)
    assert t.header.probes[0].name == "tcp_v4_rcv" and t.header.sources[0].boot_id == "b00t"


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(TraceFormatError, match="no such file"):
        read_trace(tmp_path / "nope.kpath")
    with pytest.raises(TraceFormatError, match="is a directory"):
        read_trace(tmp_path)


# ---- version 1 (JSON Lines) ----

def test_v1_round_trip(tmp_path: Path) -> None:
    header = synthetic_header()
    evs = [synthetic_event(1000), bare_event(1500), synthetic_event(2000)]
    lost = [Lost(ts_ns=1200, count=3, probe="tcp_v4_rcv")]
    trailer = Trailer("duration", 3, 3, {"tcp_v4_rcv": 3}, 5)
    path = write_v1(tmp_path / "t.kpath", header, evs, lost, trailer)
    first = json.loads(path.read_text().splitlines()[0])
    assert first["header"]["version"] == 1
    t = read_trace(path)
    assert t.cut_short is None and t.events == evs and t.lost == lost and t.trailer == trailer
    assert t.header == header


def test_v1_none_fields_are_not_written(tmp_path: Path) -> None:
    path = write_v1(tmp_path / "t.kpath", synthetic_header(), [bare_event(1)])
    line = path.read_text().splitlines()[1]
    assert json.loads(line) == {"event": {"ts_ns": 1, "cpu": 0, "tgid": 1, "tid": 1,
                                          "comm": "x", "probe": "tcp_push",
                                          "kind": "entry", "ctx": "task"}}


def test_v1_killed_mid_line_keeps_complete_records(tmp_path: Path) -> None:
    path = write_v1(tmp_path / "t.kpath", synthetic_header(),
                    [synthetic_event(1), synthetic_event(2)])
    with open(path, "a") as fh:
        fh.write('{"event":{"ts_ns":3,"cpu"')  # a write cut by SIGKILL
    t = read_trace(path)
    assert [e.ts_ns for e in t.events] == [1, 2]
    assert t.cut_short is not None and "last record (line 4) is incomplete" in t.cut_short


def test_v1_last_line_without_newline_is_a_record(tmp_path: Path) -> None:
    path = write_v1(tmp_path / "t.kpath", synthetic_header(), [synthetic_event(1)],
                    trailer=Trailer("count", 1, 0))
    path.write_text(path.read_text().rstrip("\n"))
    t = read_trace(path)
    assert t.cut_short is None and len(t.events) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"header": {"format": "kpath-trace"}}\n', "no format version"),
        (json.dumps({"header": {"format": "kpath-trace", "version": FORMAT_VERSION + 1}}) + "\n",
         "newer than this kpath reads"),
        (json.dumps({"header": {"format": "kpath-trace", "version": 2}}) + "\n",
         "a JSON Lines trace must be version 1"),
    ],
)
def test_v1_broken_headers_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.kpath"
    path.write_text(content)
    with pytest.raises(TraceFormatError) as exc:
        read_trace(path)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def _with_line(tmp_path: Path, at: int, line: str) -> Path:
    path = write_v1(tmp_path / "t.kpath", synthetic_header(),
                    [synthetic_event(1), synthetic_event(2)], trailer=Trailer("count", 2, 0))
    lines = path.read_text().splitlines()
    lines.insert(at, line)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("at", "line", "message"),
    [
        (2, "{garbage", r":3: not valid JSON"),
        (1, json.dumps({"event": {"ts_ns": "soon", "cpu": 0, "tgid": 1, "tid": 1, "comm": "x",
                                  "probe": "p", "kind": "entry", "ctx": "task"}}),
         r":2: bad event record: .*ts_ns"),
        (2, json.dumps({"event": {"ts_ns": 1, "cpu": 0, "tgid": 1, "tid": 1, "comm": "x",
                                  "probe": "p", "kind": "entry", "ctx": "task", "zz": 1}}),
         r":3: bad event record: Object contains unknown field `zz`"),
        (2, json.dumps({"event": {"ts_ns": 1, "cpu": 0, "tgid": 1, "tid": 1, "comm": "x",
                                  "probe": "p", "kind": "entry", "ctx": "nowhere"}}),
         r":3: bad event record: Invalid enum value 'nowhere' - at `\$.event.ctx`"),
        (2, json.dumps({"event": {"ts_ns": 1, "cpu": 0, "tgid": 1, "tid": 1, "comm": "x",
                                  "probe": "p", "kind": "entry", "ctx": "task",
                                  "sport": 70000}}),
         r":3: bad event record: Expected `int` <= 65535 - at `\$.event.sport`"),
        (2, json.dumps({"event": {"ts_ns": 1, "cpu": 0, "tgid": 1, "tid": 1, "comm": "x",
                                  "probe": "p", "kind": "entry", "ctx": "task",
                                  "saddr": "localhost"}}),
         r":3: bad event record: event field 'saddr' is not an IPv4 address"),
        (2, json.dumps({"event": {"ts_ns": 1, "cpu": 0}}),
         r":3: bad event record: Object missing required field `tgid`"),
        (2, json.dumps({"lost": {"ts_ns": 1}}), r":3: bad lost record"),
        (2, json.dumps({"mystery": {}}),
         r":3: bad record: Object contains unknown field `mystery`"),
        (2, "[1, 2]", r":3: bad record: Expected `object`, got `array`"),
        (3, json.dumps({"trailer": {"reason": "x", "events": 0, "lost": 0}}),
         r":5: record after the trailer"),
    ],
)
def test_v1_bad_line_is_an_error_with_line_number(tmp_path: Path, at: int, line: str,
                                                  message: str) -> None:
    with pytest.raises(TraceFormatError, match=message) as exc:
        read_trace(_with_line(tmp_path, at, line))
    assert "\n" not in str(exc.value)


def test_v1_chunks_read_the_same_as_one_pass(tmp_path: Path) -> None:
    """Scanning in small chunks (each through the fast path, lines split
    across reads) gives the same records as reading at once."""
    evs = [synthetic_event(i, comm=f"c{i % 7}") if i % 3 else bare_event(i) for i in range(200)]
    lost = [Lost(ts_ns=5, count=1)]
    path = write_v1(tmp_path / "t.kpath", synthetic_header(), evs, lost,
                    Trailer("count", 200, 1))
    whole = read_trace(path)
    scan = scan_trace(path, chunk_bytes=700)
    batches = list(scan)
    assert len(batches) > 10
    assert pa.Table.from_batches(batches).to_pylist() == whole.table.to_pylist()
    assert whole.events == evs and scan.lost == lost and scan.trailer == whole.trailer


def test_v1_error_line_numbers_hold_across_chunks(tmp_path: Path) -> None:
    evs = [synthetic_event(i) for i in range(100)]
    path = write_v1(tmp_path / "t.kpath", synthetic_header(), evs)
    lines = path.read_text().splitlines()
    lines.insert(80, "{garbage")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceFormatError, match=r":81: not valid JSON"):
        list(scan_trace(path, chunk_bytes=500))


def test_v1_binary_data(tmp_path: Path) -> None:
    path = tmp_path / "bin.kpath"
    path.write_bytes(b"{\xff\xfe\n")
    with pytest.raises(TraceFormatError, match="binary data at byte 1"):
        read_trace(path)
    assert os.path.exists(path)
