"""Bytes placed where the kernel put them (tp->write_seq at tcp_sendmsg_locked
and tcp_sendpage, tp->copied_seq at tcp_recvmsg), and the bytes no traced
call wrote, on the VM recordings of `kpath demo mixed` (tests/data/README.md):
one stream written by send, sendfile, send, write, sendmsg, writev, splice,
send. The workload's own list of its calls is beside each recording."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tests.replay.recordings import DATA
from tests.replay.test_stats_columnar import assert_same_text
from tracer.events import Event
from tracer.timeline import build_timeline
from tracer.timeline.accounting import account_bytes
from tracer.timeline.model import ByteRange, Flow, Message, RangeSource, Role, Timeline
from tracer.tracefile import Trace, read_trace
from viz.jsonout import render_json
from vm.mixed import read_report
from vm.scenarios import as_traced

MIXED, UNTRACED = DATA / "mixed.kpath", DATA / "mixed_untraced.kpath"
PAGE_SEND_WAY = "sendfile/splice (page-send path, syscall not traced)"


def _trace(path: Path) -> Trace:
    if not path.exists():
        pytest.skip(f"no recording {path.name}")
    return read_trace(path)


def _flow(tl: Timeline) -> Flow:
    (fl,) = tl.flows
    return fl


def _sends(tl: Timeline) -> list[Message]:
    return [m for m in tl.messages(_flow(tl).number) if m.op == "send" and m.side is Role.CLIENT]


def _call_ranges(path: Path) -> list[tuple[str, ByteRange]]:
    """Each call of the workload's report with its place in the stream."""
    pos, out = 1, []
    for way, n in read_report(path.with_name(path.stem + "_calls.json")).writes:
        out.append((way, ByteRange(pos, pos + n)))
        pos += n
    return out


def _without(trace: Trace, probes: set[str]) -> Trace:
    return dataclasses.replace(trace, events=[e for e in trace.events if e.probe not in probes])


def _old_captures(trace: Trace) -> Trace:
    """The trace as an older kpath recorded it: its probe dictionary says
    tcp_sendmsg_locked, tcp_sendpage and tcp_recvmsg captured a plain sock."""
    olds = {"tcp_sendmsg_locked", "tcp_sendpage", "tcp_recvmsg"}
    probes = [dataclasses.replace(p, capture="sock") if p.name in olds else p
              for p in trace.header.probes]
    return dataclasses.replace(trace, header=dataclasses.replace(trace.header, probes=probes))


def test_every_send_where_the_kernel_put_it() -> None:
    tl = build_timeline(_trace(MIXED))
    sends = _sends(tl)
    assert [(m.byte_range, m.range_from) for m in sends] == \
        [(r, RangeSource.KERNEL) for _, r in _call_ranges(MIXED)]
    # the case: send(1000), sendfile(50000), send(1000)
    assert [m.byte_range for m in sends[:3]] == \
        [ByteRange(1, 1001), ByteRange(1001, 51001), ByteRange(51001, 52001)]
    assert not _flow(tl).streams[_flow(tl).client].problems


def test_every_way_counted_and_the_accounting_closes() -> None:
    tl = build_timeline(_trace(MIXED))
    a = account_bytes(tl, 1, Role.CLIENT)
    report = read_report(MIXED.with_name("mixed_calls.json"))
    assert a.balanced and a.written_total == a.carried == a.read_total == a.copied == 60500
    assert dict(a.written_by) == as_traced(report.writes)
    assert dict(a.read_by) == as_traced(report.reads)
    assert a.other_written == 0 and not a.written_other


def test_untraced_writer_between_two_sends() -> None:
    tl = build_timeline(_trace(UNTRACED))
    a = account_bytes(tl, 1, Role.CLIENT)
    calls = _call_ranges(UNTRACED)
    traced = [r for way, r in calls if way not in ("sendfile", "splice")]
    assert [m.byte_range for m in _sends(tl)] == traced
    assert traced[1] == ByteRange(51001, 52001)  # not 1001:2001
    assert [(r, way) for r, way in a.written_other] == [
        (r, "untraced writer") for way, r in calls if way in ("sendfile", "splice")]
    assert a.other_written == 54000 and a.written == 6500
    assert a.balanced and "54000 B written by untraced writer" in a.notes
    assert not _flow(tl).streams[_flow(tl).client].problems


def test_page_send_path_seen_without_its_syscall() -> None:
    """sendfile and splice untraced at the syscall, their tcp_sendpage calls
    traced: the bytes are theirs, not an untraced writer's."""
    trace = _without(_trace(MIXED), {"do_sendfile", "__x64_sys_splice"})
    tl = build_timeline(trace)
    a = account_bytes(tl, 1, Role.CLIENT)
    assert [(r, way) for r, way in a.written_other] == [
        (r, PAGE_SEND_WAY) for way, r in _call_ranges(MIXED) if way in ("sendfile", "splice")]
    assert a.balanced
    assert assert_same_text(trace) == 1


def test_recvs_placed_by_copied_seq_without_the_copies() -> None:
    trace = _trace(MIXED)
    by_copy = build_timeline(trace)
    by_kernel = build_timeline(_without(trace, {"__skb_datagram_iter"}))

    def recvs(tl: Timeline) -> list[tuple[ByteRange | None, RangeSource | None]]:
        return [(m.byte_range, m.range_from) for m in tl.messages(1)
                if m.op == "recv" and m.nbytes]  # not the 0 at EOF

    assert {src for _, src in recvs(by_copy)} == {RangeSource.COPY}
    assert [(r, RangeSource.KERNEL) for r, _ in recvs(by_copy)] == recvs(by_kernel)


def test_old_traces_keep_their_own_placement() -> None:
    """A trace whose dictionary says the old capture is placed by stream
    order, as before: the send after the untraced sendfile lands on the
    sendfile's bytes, and the warning says so."""
    tl = build_timeline(_old_captures(_trace(UNTRACED)))
    sends = _sends(tl)
    assert {m.range_from for m in sends} == {RangeSource.ISN}
    assert sends[1].byte_range == ByteRange(1001, 2001)
    assert any("may be shifted" in p for p in _flow(tl).streams[_flow(tl).client].problems)
    assert not account_bytes(tl, 1, Role.CLIENT).balanced


@pytest.mark.parametrize("path", [MIXED, UNTRACED], ids=lambda p: p.name)
def test_old_captures_same_text_both_paths(path: Path) -> None:
    assert assert_same_text(_old_captures(_trace(path))) == 1


def test_json_flow_bytes() -> None:
    doc = json.loads(render_json(build_timeline(_trace(UNTRACED))))
    client = doc["flows"][0]["bytes"]["client"]
    assert client["written"] == client["carried"] == client["read"] == 60500
    assert client["balanced"] is True
    assert client["written_by"]["untraced writer"] == 54000
    assert client["written_other"] == [{"bytes": [1001, 51001], "way": "untraced writer"},
                                       {"bytes": [55501, 59501], "way": "untraced writer"}]


def test_stream_positions_only_from_tcp_sockets_entries() -> None:
    """The positions are recorded on entry (seq) and counted by the return."""
    trace = _trace(MIXED)
    pos = [e for e in trace.events if e.probe in ("tcp_sendmsg_locked", "tcp_sendpage",
                                                  "tcp_recvmsg")]
    entries = [e for e in pos if str(e.kind) == "entry"]
    assert entries and all(isinstance(e, Event) and e.seq is not None for e in entries)
    assert all(e.seq is None for e in pos if str(e.kind) == "return")
