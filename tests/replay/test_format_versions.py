"""Both trace format versions on every real recording in tests/data: the
version 1 files read as a plain json.loads of their lines says, conversion
to version 2 and back keeps every record, and replay reads the same from
either version (the committed version 2 fixture included)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kpath.cli_replay import replay_cmd
from tests.replay.recordings import DATA, RECORDINGS, needs_recordings
from tracer.events import Event
from tracer.tracefile import Lost, Trailer, read_trace
from tracer.tracefile.convert import convert

pytestmark = needs_recordings

V1 = [p for p in RECORDINGS if p.read_bytes()[:1] == b"{"]
V2_FIXTURE = DATA / "bulk_lossy_v2.kpath"


def _plain(path: Path) -> tuple[list[Event], list[Lost], Trailer | None]:
    """The records as json.loads sees them, line by line: the reference
    (an event's frame, if any, apart: _frames)."""
    events, lost, trailer = [], [], None
    for line in path.read_text().splitlines()[1:]:
        ((kind, body),) = json.loads(line).items()
        if kind == "event":
            body.pop("frame", None)
            events.append(Event.from_record(body))
        elif kind == "lost":
            lost.append(Lost(**body))
        else:
            trailer = Trailer(**body)
    return events, lost, trailer


def _replay_json(path: Path) -> dict[str, object]:
    res = CliRunner().invoke(replay_cmd, [str(path), "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    doc["trace"].pop("path")
    return doc


def test_every_version_1_recording_is_found() -> None:
    assert len(V1) >= 7 and V2_FIXTURE not in V1


def _frames(path: Path) -> list[dict[str, object]]:
    """Each event's frame as its line says, with the event's row."""
    out = []
    events = [json.loads(line)["event"] for line in path.read_text().splitlines()[1:]
              if line.startswith('{"event"')]
    for row, ev in enumerate(events):
        if "frame" in ev:
            frame = {"row": row, "link": None, **ev["frame"]}
            frame["data"] = bytes.fromhex(frame["data"])
            out.append(frame)
    return out


@pytest.mark.parametrize("path", V1, ids=[p.name for p in V1])
def test_version_1_reads_as_its_lines_say(path: Path) -> None:
    trace = read_trace(path)
    events, lost, trailer = _plain(path)
    assert trace.events == events
    assert trace.lost == lost and trace.trailer == trailer
    assert trace.table.num_rows == len(events)
    assert trace.frames is not None
    assert trace.frames.to_pylist() == _frames(path)


@pytest.mark.parametrize("path", V1, ids=[p.name for p in V1])
def test_v1_to_v2_to_v1_keeps_every_record(path: Path, tmp_path: Path) -> None:
    v2, back = tmp_path / "v2.kpath", tmp_path / "back.jsonl"
    convert(path, v2)
    assert v2.read_bytes()[:4] == b"\xff\xff\xff\xff"
    convert(v2, back, to="jsonl")
    orig, via2, again = read_trace(path), read_trace(v2), read_trace(back)
    for t in (via2, again):
        assert t.events == orig.events
        assert t.frames is not None and orig.frames is not None
        assert t.frames.equals(orig.frames)
        assert sorted(t.lost, key=lambda r: r.ts_ns) == sorted(orig.lost, key=lambda r: r.ts_ns)
        assert t.trailer == orig.trailer and t.cut_short == orig.cut_short
        # The header gains what version 2 describes (a source record, each
        # probe's capture); what version 1 recorded is unchanged.
        assert dataclasses.replace(t.header, probes=orig.header.probes,
                                   sources=orig.header.sources) == orig.header
        for mine, theirs in zip(t.header.probes, orig.header.probes, strict=True):
            assert mine.capture is not None
            if theirs.capture is None:  # recorded before the probe dictionary
                mine = dataclasses.replace(mine, capture=None, returns=None, length_arg3=None)
            assert mine == theirs
        assert [s.hostname for s in t.header.sources] == [orig.header.hostname]
    assert _replay_json(v2) == _replay_json(path)


@pytest.mark.parametrize("path", V1, ids=[p.name for p in V1])
def test_back_to_jsonl_is_byte_identical_after_the_header(path: Path, tmp_path: Path) -> None:
    """The version 1 writer writes each record as kpath trace once did (the
    lost records come before the events of the batch they rode on)."""
    v2, back = tmp_path / "v2.kpath", tmp_path / "back.jsonl"
    convert(path, v2)
    convert(v2, back, to="jsonl")
    orig = path.read_text().splitlines()[1:]
    again = back.read_text().splitlines()[1:]
    assert [x for x in again if not x.startswith('{"lost"')] == \
        [x for x in orig if not x.startswith('{"lost"')]
    assert sorted(x for x in again if x.startswith('{"lost"')) == \
        sorted(x for x in orig if x.startswith('{"lost"'))


def test_the_version_2_fixture_replays_as_its_source() -> None:
    """tests/data/bulk_lossy_v2.kpath is `kpath convert` of bulk_lossy.kpath."""
    v2, v1 = read_trace(V2_FIXTURE), read_trace(DATA / "bulk_lossy.kpath")
    assert V2_FIXTURE.read_bytes()[:4] == b"\xff\xff\xff\xff"
    assert v2.events == v1.events and v2.lost == v1.lost and v2.trailer == v1.trailer
    assert v2.lost_total == v1.lost_total == sum(rec.count for rec in v1.lost) > 0
    assert v2.cut_short is None
    assert _replay_json(V2_FIXTURE) == _replay_json(DATA / "bulk_lossy.kpath")
