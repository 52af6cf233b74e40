"""Trace file format: round trip, streaming, cut-short and foreign files.

Events here are synthetic (built in code), not recordings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracer.events import Context, Event, Kind, ProbeStatus
from tracer.tracefile import (
    FORMAT_VERSION,
    Header,
    Lost,
    TraceFormatError,
    TraceWriter,
    read_trace,
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
    )


def synthetic_event(ts: int, probe: str = "tcp_v4_rcv") -> Event:
    return Event(ts_ns=ts, cpu=1, tgid=10, tid=11, comm="chat-client", probe=probe,
                 kind=Kind.ENTRY, ctx=Context.SOFTIRQ, softirq="NET_RX", skb=0xffff1,
                 saddr="127.0.0.1", sport=40000, daddr="127.0.0.1", dport=10086,
                 seq=100, end_seq=102, ack=7, tcp_flags=0x18, length=2)


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "t.kpath"
    w = TraceWriter(path, synthetic_header())
    w.event(synthetic_event(1000))
    w.lost_events(Lost(ts_ns=1500, count=3, probe="tcp_v4_rcv"))
    w.event(synthetic_event(2000))
    w.close("duration", duration_ns=5)
    t = read_trace(path)
    assert t.cut_short is None
    assert [e.ts_ns for e in t.events] == [1000, 2000]
    assert t.events[0] == synthetic_event(1000)
    assert t.lost_total == 3 and t.trailer is not None and t.trailer.lost_by_probe == {
        "tcp_v4_rcv": 3}
    assert [p.name for p in t.header.missing] == ["tcp_push"]
    assert t.header.missing[0].reason == "inlined"
    assert t.header.filters == {"port": 10086}


def test_none_fields_are_not_written(tmp_path: Path) -> None:
    path = tmp_path / "t.kpath"
    w = TraceWriter(path, synthetic_header())
    w.event(Event(ts_ns=1, cpu=0, tgid=1, tid=1, comm="x", probe="tcp_push",
                  kind=Kind.ENTRY, ctx=Context.TASK))
    w.close("count")
    line = path.read_text().splitlines()[1]
    assert json.loads(line) == {"event": {"ts_ns": 1, "cpu": 0, "tgid": 1, "tid": 1,
                                          "comm": "x", "probe": "tcp_push",
                                          "kind": "entry", "ctx": "task"}}


def test_stream_is_readable_before_close(tmp_path: Path) -> None:
    path = tmp_path / "t.kpath"
    w = TraceWriter(path, synthetic_header())
    w.events_batch([synthetic_event(1), synthetic_event(2)])
    t = read_trace(path)  # tracer still "running": no trailer yet
    assert len(t.events) == 2
    assert t.cut_short is not None and "no trailer" in t.cut_short


def test_killed_mid_line_keeps_complete_records(tmp_path: Path) -> None:
    path = tmp_path / "t.kpath"
    w = TraceWriter(path, synthetic_header())
    w.events_batch([synthetic_event(1), synthetic_event(2)])
    with open(path, "a") as fh:
        fh.write('{"event":{"ts_ns":3,"cpu"')  # a write cut by SIGKILL
    t = read_trace(path)
    assert [e.ts_ns for e in t.events] == [1, 2]
    assert t.cut_short is not None and "incomplete" in t.cut_short


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty file"),
        ("hello world\n", "first line is not JSON"),
        ('{"traceEvents": []}\n', "no kpath-trace header"),
        ('{"header": {"format": "kpath-trace"}}\n', "no format version"),
        (json.dumps({"header": {"format": "kpath-trace", "version": FORMAT_VERSION + 1}}) + "\n",
         "newer than this kpath reads"),
    ],
)
def test_foreign_or_broken_files_name_the_problem(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.kpath"
    path.write_text(content)
    with pytest.raises(TraceFormatError) as exc:
        read_trace(path)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_corrupt_middle_line_is_an_error_with_line_number(tmp_path: Path) -> None:
    path = tmp_path / "t.kpath"
    w = TraceWriter(path, synthetic_header())
    w.event(synthetic_event(1))
    w.close("count")
    lines = path.read_text().splitlines()
    lines.insert(1, "{garbage")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceFormatError, match=r":2: not valid JSON"):
        read_trace(path)


def test_bad_event_field_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "t.kpath"
    w = TraceWriter(path, synthetic_header())
    w.close("count")
    lines = path.read_text().splitlines()
    lines.insert(1, json.dumps({"event": {"ts_ns": "soon", "cpu": 0, "tgid": 1, "tid": 1,
                                          "comm": "x", "probe": "p", "kind": "entry",
                                          "ctx": "task"}}))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceFormatError, match="ts_ns"):
        read_trace(path)


def test_binary_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "bin.kpath"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(TraceFormatError, match="binary data"):
        read_trace(path)
    with pytest.raises(TraceFormatError, match="no such file"):
        read_trace(tmp_path / "nope.kpath")
