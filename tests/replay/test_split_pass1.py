"""--stats' pass 1 in two halves (tracer/tracefile/split.py,
tracer/timeline/columnar/pass1.py): the head and the tail of recorded
traces written in many batches read back as the whole file's batches, the
head's links merged with the tail's make the groups one pass makes, and
`replay --stats` with a worker linking the tail prints the same text."""

from __future__ import annotations

import os
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kpath.cli_replay import replay_cmd
from tests.replay.recordings import RECORDINGS, needs_recordings
from tests.replay.test_stats_columnar import _write_in_batches, recording
from tests.replay.test_stats_parts import _write
from tests.synthetic import mixed_trace
from tracer import workers as workers_module
from tracer.timeline import build_timeline
from tracer.timeline.columnar import pass1
from tracer.timeline.columnar.columns import file_columns
from tracer.timeline.columnar.links import Links
from tracer.timeline.event_rules import probe_spec, recorded_probes
from tracer.tracefile import probe_specs, read_trace, scan_trace
from tracer.tracefile.scan import scan_tail
from viz.stats_text import render_stats

pytestmark = needs_recordings

LOSSY = [p for p in RECORDINGS if "lossy" in p.name]


def _batch_ends(path: Path) -> list[int]:
    """Each record batch's end offset in the file."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    ends = []
    with pa.OSFile(str(path), "r") as src:
        reader = ipc.MessageReader.open_stream(src)
        while True:
            try:
                message = reader.read_next_message()
            except StopIteration:
                return ends
            if message.type == "record batch":
                ends.append(src.tell())


def _mixed(tmp_path: Path, rows: int = 53) -> Path:
    trace = mixed_trace([recording(p) for p in [*LOSSY, RECORDINGS[0]]], 2, 2)
    path = tmp_path / "mixed.kpath"
    _write_in_batches(trace, path, rows)
    return path


def _head(path: Path, split_at: int) -> tuple[list[object], object]:
    scan = scan_trace(path)
    scan.select(file_columns())
    scan.stop_after(split_at)
    return list(scan), scan


def test_head_and_tail_are_the_file(tmp_path: Path) -> None:
    """At every batch end (and between): the head's batches then the
    tail's are the file's; the tail has the file's records after the
    split, and the head stops only when a batch follows."""
    path = _mixed(tmp_path)
    whole = scan_trace(path)
    whole.select(file_columns())
    batches = list(whole)
    ends = _batch_ends(path)
    assert len(ends) == len(batches) > 5
    for split_at in sorted({0, *ends, *[e - 1 for e in ends], *[e + 1 for e in ends]}):
        head, scan = _head(path, split_at)
        tail = scan_tail(str(path), split_at)
        rest = []
        if tail is not None:
            tail.select(file_columns())
            rest = list(tail)
            assert tail.trailer == whole.trailer and tail.cut_short is None
            assert [*scan.lost, *tail.lost] == whole.lost
        assert scan.stopped == (tail is not None)
        assert len(head) + len(rest) == len(batches)
        assert all(a.equals(b) for a, b in zip([*head, *rest], batches, strict=True))


def _groups(links: Links) -> tuple[np.ndarray, np.ndarray]:
    """Each event's group as the number of its first event, and its
    group's last event: the partition, whatever the node numbers."""
    root, last = links.groups()
    node = np.concatenate(list(links.nodes))
    group = root[node]
    first = np.full(group.max() + 1, len(group))
    np.minimum.at(first, group, np.arange(len(group)))
    return first[group], last[group]


def _whole_links(path: Path) -> Links:
    links = Links(probe_spec)
    scan = scan_trace(path)
    scan.select(file_columns())
    pass1._link(links, scan)
    return links


@pytest.mark.parametrize("rows", [29, 401])
def test_merged_links_are_one_pass_links(tmp_path: Path, rows: int) -> None:
    path = _mixed(tmp_path, rows)
    with recorded_probes(probe_specs(scan_trace(path).header.probes)):
        whole = _whole_links(path)
        want = _groups(whole)
        known = pass1.KnownProbes({n: probe_spec(n) for n in scan_trace(path).header.probe_names})
        ends = _batch_ends(path)
        for split_at in ends[:-1:max(1, len(ends) // 7)]:
            links = Links(probe_spec)
            scan = scan_trace(path)
            scan.select(file_columns())
            scan.stop_after(split_at)
            pass1._link(links, scan)
            got = pass1.tail_links(str(path), split_at, known, str(tmp_path))
            assert got is not None
            links.merge(got[0])
            assert links.events == whole.events and links.first_ts == whole.first_ts
            assert links.ctx_disorder == whole.ctx_disorder
            names = list(links.probe_code)
            assert {names[p] for p in links.return_probes} == \
                {list(whole.probe_code)[p] for p in whole.return_probes}
            have = _groups(links)
            assert np.array_equal(have[0], want[0]) and np.array_equal(have[1], want[1])


class _FailingPool:
    """A pool whose worker fails the tail: linked here instead."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.calls = 0

    def call(self, *_: object) -> Future[object]:
        self.calls += 1
        fut: Future[object] = Future()
        fut.set_exception(self.exc)
        return fut


@pytest.mark.parametrize("exc", [pass1.UnknownProbe("tcp_v4_rcv"), BrokenPipeError("gone")])
def test_tail_linked_here_when_the_worker_cannot(tmp_path: Path, exc: BaseException,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = _mixed(tmp_path)
    monkeypatch.setattr(pass1, "SPLIT_FROM_BYTES", 0)
    with recorded_probes(probe_specs(scan_trace(path).header.probes)):
        want = _groups(_whole_links(path))
        scan = scan_trace(path)
        scan.select(file_columns())
        pool = _FailingPool(exc)
        links = pass1.link_scan(scan, probe_spec, pool)  # type: ignore[arg-type]
        assert pool.calls == 1 and scan.stopped
        assert scan.trailer is not None and scan.cut_short is None
        have = _groups(links)
        assert np.array_equal(have[0], want[0]) and np.array_equal(have[1], want[1])


def test_known_probes_refuse_others() -> None:
    known = pass1.KnownProbes({"tcp_v4_rcv": None})
    assert known("tcp_v4_rcv") is None
    with pytest.raises(pass1.UnknownProbe):
        known("ip_rcv")


def _cli_text(path: Path, jobs: str) -> tuple[str, str]:
    res = CliRunner().invoke(replay_cmd, [str(path), "--stats", "--jobs", jobs])
    assert res.exit_code == 0, res.output
    return res.stdout, res.stderr


def test_cli_tail_linked_by_a_worker_same_text(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """--jobs 2 on a trace taken for a big one: its worker links the tail
    (the merge runs here), the text is one process's, and the object
    timeline's."""
    from tracer.timeline.columnar import parts as parts_module

    path = _mixed(tmp_path)
    monkeypatch.setattr(workers_module, "PARTS_FROM_BYTES", 0)
    monkeypatch.setattr(pass1, "SPLIT_FROM_BYTES", 0)
    monkeypatch.setattr(parts_module, "PART_EVENTS", 400)
    merged: list[int] = []
    real = Links.merge

    def merge(self: Links, tail: object) -> None:
        merged.append(1)
        real(self, tail)  # type: ignore[arg-type]

    monkeypatch.setattr(Links, "merge", merge)
    two, err = _cli_text(path, "2")
    assert merged and not err
    one, _ = _cli_text(path, "1")
    assert two == one
    with recorded_probes(probe_specs(read_trace(path).header.probes)):
        assert two == render_stats(build_timeline(read_trace(path)))


@pytest.mark.parametrize("cut", ["after_split_batch", "inside_tail"])
def test_cli_cut_file_same_text_and_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         cut: str) -> None:
    """A file cut (a tracer killed) right after the batch the split falls
    on, or inside the tail: the worker's run says what one process says."""
    from tracer.timeline.columnar import parts as parts_module

    trace = mixed_trace([recording(RECORDINGS[0])], 4, 2)
    path = tmp_path / "whole.kpath"
    _write(trace, path, rows=61)
    ends = _batch_ends(path)
    size = os.stat(path).st_size
    split = ends[len(ends) // 2]
    keep = split if cut == "after_split_batch" else (ends[-3] + ends[-2]) // 2
    data = path.read_bytes()[:keep]
    cut_path = tmp_path / "cut.kpath"
    cut_path.write_bytes(data)
    assert keep < size
    monkeypatch.setattr(workers_module, "PARTS_FROM_BYTES", 0)
    monkeypatch.setattr(pass1, "SPLIT_FROM_BYTES", 0)
    monkeypatch.setattr(parts_module, "PART_EVENTS", 300)
    monkeypatch.setattr(pass1, "HEAD_SHARE", split / keep)
    two = CliRunner().invoke(replay_cmd, [str(cut_path), "--stats", "--jobs", "2"])
    one = CliRunner().invoke(replay_cmd, [str(cut_path), "--stats", "--jobs", "1"])
    assert two.exit_code == one.exit_code == 0, two.output
    assert two.stdout == one.stdout and two.stderr == one.stderr
    assert "no trailer" in one.stderr


def test_early_workers_only_for_a_version_2_file(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The replay command starts workers before it reads the file: for a
    version 2 file (a version 1 file is read whole, or converted first),
    never for a FIFO (opening it would wait for a writer)."""
    monkeypatch.setattr(workers_module, "PARTS_FROM_BYTES", 0)
    v1 = next(p for p in RECORDINGS if scan_trace(p).version == 1)
    assert not workers_module.parts_likely(str(v1))
    assert workers_module.parts_likely(str(_mixed(tmp_path)))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert not workers_module.parts_likely(str(fifo))
    assert workers_module.stats_pool(str(fifo), 2) is None
    assert workers_module.stats_pool(str(_mixed(tmp_path)), 1) is None


def test_small_file_linked_here_alone(tmp_path: Path) -> None:
    """Below SPLIT_FROM_BYTES the worker is not asked for the tail."""
    path = _mixed(tmp_path)
    assert os.stat(path).st_size < pass1.SPLIT_FROM_BYTES
    with recorded_probes(probe_specs(scan_trace(path).header.probes)):
        scan = scan_trace(path)
        scan.select(file_columns())
        pool = _FailingPool(AssertionError("asked"))
        links = pass1.link_scan(scan, probe_spec, pool)  # type: ignore[arg-type]
        assert pool.calls == 0 and not scan.stopped and links.events
