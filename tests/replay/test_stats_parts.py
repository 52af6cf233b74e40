"""Differential tests of `--stats` rebuilt in parts (tracer/timeline/columnar/
parts.py): on a version 2 file, the text of the parts, however small, is the
text of the whole trace's columnar statistics (itself the object path's,
test_stats_columnar.py), for all flows and for one."""

from __future__ import annotations

import dataclasses
import difflib
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kpath.cli_replay import replay_cmd
from tests.replay.recordings import DATA, RECORDINGS, needs_recordings
from tests.replay.test_stats_columnar import _unit_traces, _write_in_batches, recording
from tests.synthetic import mixed_trace, synthetic_trace
from tracer import workers as workers_module
from tracer.events import Context
from tracer.timeline import build_timeline
from tracer.timeline.columnar import (
    Irregular,
    PartedStats,
    PreparedStats,
    stats_input_of,
    stats_of_scan,
)
from tracer.timeline.columnar import parts as parts_module
from tracer.timeline.event_rules import probe_spec, recorded_probes
from tracer.tracefile import (
    Trace,
    TraceWriter,
    probe_specs,
    read_trace,
    scan_trace,
    with_probes,
)
from viz.stats_columnar import pieces_of, prepared_stats_text, render_trace_stats
from viz.stats_text import render_stats

pytestmark = needs_recordings

LOSSLESS = [p for p in RECORDINGS if "lossy" not in p.name]


def _write(trace: Trace, path: Path, rows: int = 97) -> None:
    """A version 2 file of the trace's events in file order, `rows` a batch
    (its header lists every probe the events name)."""
    writer = TraceWriter(path, with_probes(trace.header, [ev.probe for ev in trace.events]))
    for at in range(0, len(trace.events), rows):
        writer.events_batch(trace.events[at:at + rows])
    for rec in trace.lost:
        writer.lost_events(rec)
    writer.close("test")


def _in_time_order(trace: Trace) -> Trace:
    return dataclasses.replace(trace, events=sorted(trace.events, key=lambda ev: ev.ts_ns))


def _parted_text(path: Path, flow: int | None, jobs: int = 1) -> tuple[str, bool]:
    """(--stats text from the file, whether it was rebuilt in parts)."""
    scan = scan_trace(path)
    with recorded_probes(probe_specs(scan.header.probes)):
        # Workers that cannot start fall back to one process; the CLI's note
        # for it is checked by test_cli_stats_workers_not_started_in_one_process.
        prepared = stats_of_scan(scan, lambda: scan_trace(path), probe_spec, jobs,
                                 lambda _text: None, pieces_of)
        return ("".join(prepared_stats_text(prepared, flow)),
                isinstance(prepared, PartedStats))


def assert_parts_same_text(trace: Trace, tmp_path: Path, flows: list[int | None],
                           parts: tuple[int, ...] = (1, 50, 1 << 17),
                           jobs: tuple[int, ...] = (1,)) -> None:
    path = tmp_path / "trace.kpath"
    _write(trace, path)
    with recorded_probes(probe_specs(trace.header.probes)):
        whole = PreparedStats(stats_input_of(read_trace(path)), probe_spec)
        want = {flow: render_trace_stats(whole.stats(flow)) for flow in flows}
    for part, job in [(part, job) for part in parts for job in jobs]:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(parts_module, "PART_EVENTS", part)
            for flow in flows:
                got, parted = _parted_text(path, flow, job)
                assert parted
                assert got == want[flow], f"part {part}, jobs {job}, flow {flow}:\n" + "".join(
                    difflib.unified_diff(want[flow].splitlines(True), got.splitlines(True),
                                         "whole", "parts"))


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.name)
def test_recording_in_parts_same_text(path: Path, tmp_path: Path) -> None:
    assert_parts_same_text(recording(path), tmp_path, [None, 1])


@pytest.mark.parametrize("path", LOSSLESS, ids=lambda p: p.name)
def test_overlapping_copies_in_parts_same_text(path: Path, tmp_path: Path) -> None:
    """Copies in flight together: groups complete out of flow order, so
    flows and steps are numbered across parts."""
    trace = _in_time_order(synthetic_trace(recording(path), 7, 3))
    assert_parts_same_text(trace, tmp_path, [None, 2, 7])


@pytest.mark.parametrize("path", LOSSLESS, ids=lambda p: p.name)
def test_overlapping_copies_in_worker_parts_same_text(path: Path, tmp_path: Path) -> None:
    """Parts rebuilt by a worker process and by this one, their steps
    numbered from 0 each and renumbered here in part order."""
    trace = _in_time_order(synthetic_trace(recording(path), 7, 3))
    assert_parts_same_text(trace, tmp_path, [None], parts=(37,), jobs=(3,))


def test_mixed_recordings_out_of_time_order_in_parts_same_text(tmp_path: Path) -> None:
    """Copies of every recording written copy after copy: the file is not
    in time order (each part is sorted as the whole trace is)."""
    trace = mixed_trace([recording(p) for p in LOSSLESS], 3, 3)
    events = trace.events
    assert any(b.ts_ns < a.ts_ns for a, b in zip(events, events[1:], strict=False))
    assert_parts_same_text(trace, tmp_path, [None, 1, 3 * len(LOSSLESS)], jobs=(1, 2))


def _shared_contexts(trace: Trace) -> Trace:
    """Every copy's softirq events on one thread, and every task event on
    another: lead-ins, trailers and syscalls of all flows in two contexts."""
    return dataclasses.replace(trace, events=[
        dataclasses.replace(ev, tid=1 if ev.ctx is not Context.TASK else 2, tgid=2)
        for ev in trace.events])


def test_shared_contexts_in_parts_same_text(tmp_path: Path) -> None:
    trace = _shared_contexts(_in_time_order(mixed_trace([recording(p) for p in LOSSLESS], 2, 2)))
    assert_parts_same_text(trace, tmp_path, [None, 2])


def test_unit_traces_in_parts_same_text(tmp_path: Path) -> None:
    """The correlation unit tests' hand-made traces."""
    done = 0
    for i, (_, trace) in enumerate(_unit_traces()):
        try:
            with recorded_probes(probe_specs(trace.header.probes)):
                PreparedStats(stats_input_of(trace), probe_spec)
        except Irregular:
            continue
        sub = tmp_path / str(i)
        sub.mkdir()
        assert_parts_same_text(trace, sub, [None], parts=(1, 1 << 17))
        done += 1
    assert done >= 20


@pytest.mark.parametrize("copies,overlap", [(1, 1), (4, 3)])
def test_lossy_trace_in_parts_same_text(tmp_path: Path, copies: int, overlap: int) -> None:
    """Loss records riding on the batches: each part marks its packets by
    the whole trace's loss windows, and each flow counts the losses during
    it (up to the trace's next event) as the whole trace does."""
    lossy = [p for p in RECORDINGS if "lossy" in p.name]
    trace = mixed_trace([recording(p) for p in [*lossy, LOSSLESS[0]]], copies, overlap)
    assert trace.lost
    path = tmp_path / "lossy.kpath"
    _write_in_batches(_in_time_order(trace), path, 13)
    with recorded_probes(probe_specs(trace.header.probes)):
        tl = build_timeline(read_trace(path))
    for part, jobs in ((1, 1), (40, 1), (40, 2), (1 << 17, 1)):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(parts_module, "PART_EVENTS", part)
            for flow in (None, 1, len(tl.flows)):
                got, parted = _parted_text(path, flow, jobs)
                assert parted
                with recorded_probes(probe_specs(trace.header.probes)):
                    assert got == render_stats(tl, flow), f"part {part}, flow {flow}"


@pytest.mark.parametrize("jobs", [1, 2])
def test_blind_windows_in_parts_same_text(tmp_path: Path, jobs: int) -> None:
    """A recording with 228 blind windows (tests/data/two_hosts_rx_blind):
    the parts get the records as arrays (LossTimes), the head and each
    flow count the windows as the object timeline does."""
    path = DATA / "two_hosts_rx_blind" / "two_hosts_a.kpath"
    trace = read_trace(path)
    assert sum(g.since_ns is not None for g in trace.lost) == 228
    with recorded_probes(probe_specs(trace.header.probes)):
        tl = build_timeline(trace)
        want = {flow: render_stats(tl, flow) for flow in (None, 1, len(tl.flows))}
    assert "kprobes blind 228 time(s)" in want[None]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(parts_module, "PART_EVENTS", 300)
        for flow, text in want.items():
            got, parted = _parted_text(path, flow, jobs)
            assert parted and got == text, f"flow {flow}"


def test_cli_stats_in_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trace = _in_time_order(synthetic_trace(recording(LOSSLESS[0]), 5, 3))
    path = tmp_path / "five.kpath"
    _write(trace, path)
    monkeypatch.setattr(parts_module, "PART_EVENTS", 100)
    tl = build_timeline(read_trace(path))
    for args in ([], ["--flow", "4"]):
        res = CliRunner().invoke(replay_cmd, [str(path), "--stats", *args])
        assert res.exit_code == 0, res.output
        assert res.stdout == render_stats(tl, int(args[1]) if args else None)
    bad = CliRunner().invoke(replay_cmd, [str(path), "--stats", "--flow", "6"])
    assert bad.exit_code == 2 and "no flow 6" in bad.stderr
    res = CliRunner().invoke(replay_cmd, [str(path), "--stats", "--jobs", "2"])
    assert res.exit_code == 0, res.output
    assert res.stdout == render_stats(tl) and not res.stderr


_REBUILD = parts_module.rebuild_in_worker


def _die(*args: Any) -> Any:
    """A worker's rebuild that kills its process (as the OOM killer would);
    rebuilt as usual where the parent runs a part taken back (PartPool.drain)."""
    if not workers_module.IN_WORKER:
        return _REBUILD(*args)
    os.kill(os.getpid(), signal.SIGKILL)
    return None


def _out_of_memory(*args: Any) -> Any:
    if not workers_module.IN_WORKER:
        return _REBUILD(*args)
    raise MemoryError


def _five_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    trace = _in_time_order(synthetic_trace(recording(LOSSLESS[0]), 5, 3))
    path = tmp_path / "five.kpath"
    _write(trace, path)
    monkeypatch.setattr(parts_module, "PART_EVENTS", 50)
    return path


@pytest.mark.parametrize("rebuild,said", [(_die, "died"), (_out_of_memory, "out of memory")])
def test_cli_stats_worker_failure_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           rebuild: Callable[..., None], said: str) -> None:
    """A worker killed, or out of memory: a one-line error, no traceback, no hang."""
    path = _five_copies(tmp_path, monkeypatch)
    monkeypatch.setattr(parts_module, "rebuild_in_worker", rebuild)
    res = CliRunner().invoke(replay_cmd, [str(path), "--stats", "--jobs", "2"])
    assert res.exit_code == 1
    assert said in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.output and not res.stdout


def test_cli_stats_workers_not_started_in_one_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No worker process can start (a sandbox): a note, the same text."""
    path = _five_copies(tmp_path, monkeypatch)

    def refused(*_: object, **__: object) -> None:
        raise OSError(38, "Function not implemented")

    import subprocess

    monkeypatch.setattr(subprocess, "Popen", refused)
    res = CliRunner().invoke(replay_cmd, [str(path), "--stats", "--jobs", "2"])
    assert res.exit_code == 0, res.output
    assert res.stdout == render_stats(build_timeline(read_trace(path)))
    assert res.stderr.startswith("kpath: note: --stats in one process: its worker processes "
                                 "did not start (OSError")


def test_one_part_starts_no_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A trace of one part is rebuilt here: no worker pays its start-up
    (neither before pass 1, the file being small, nor after it)."""
    trace = _in_time_order(synthetic_trace(recording(LOSSLESS[0]), 5, 3))
    path = tmp_path / "five.kpath"
    _write(trace, path, rows=len(trace.events))
    assert not workers_module.parts_likely(str(path))

    def no_pool(*_: object, **__: object) -> None:
        raise AssertionError("a worker pool started for one part")

    monkeypatch.setattr(workers_module, "PartPool", no_pool)
    got, parted = _parted_text(path, None, 2)
    assert parted
    assert got == render_stats(build_timeline(read_trace(path)))


def test_empty_trace_in_parts_same_text(tmp_path: Path) -> None:
    from tests.unit.synthetic_traces import SyntheticTrace

    assert_parts_same_text(SyntheticTrace().trace(), tmp_path, [None])


def test_batches_out_of_time_order_in_parts_same_text(tmp_path: Path) -> None:
    """Each batch's events written newest first (its contexts' neighbours in
    time are not file neighbours; the copies' softirq events share one
    context): still rebuilt in parts, same text."""
    trace = _in_time_order(mixed_trace([recording(p) for p in LOSSLESS], 3, 3))
    trace = dataclasses.replace(trace, events=[
        ev if ev.ctx is Context.TASK else dataclasses.replace(ev, tid=1)
        for ev in trace.events])
    rows = 97
    events = [ev for at in range(0, len(trace.events), rows)
              for ev in reversed(trace.events[at:at + rows])]
    assert_parts_same_text(dataclasses.replace(trace, events=events), tmp_path, [None, 2],
                           parts=(1, 1 << 17))


def test_context_out_of_time_order_across_batches_rebuilt_whole(tmp_path: Path) -> None:
    """A context whose events go back in time from one batch to the next:
    its neighbours in time are not known batch by batch, so the trace is
    rebuilt whole (same text)."""
    trace = _in_time_order(synthetic_trace(recording(LOSSLESS[0]), 3, 2))
    trace = dataclasses.replace(trace, events=trace.events[::-1])
    path = tmp_path / "backwards.kpath"
    _write(trace, path)
    got, parted = _parted_text(path, None)
    assert not parted
    with recorded_probes(probe_specs(trace.header.probes)):
        assert got == render_stats(build_timeline(read_trace(path)))


@pytest.mark.parametrize("path", [LOSSLESS[0], *[p for p in RECORDINGS
                                                  if "lossy" in p.name and "v2" not in p.name]],
                         ids=lambda p: p.name)
def test_big_version_1_file_converted_then_in_parts(path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A version 1 file past V1_WHOLE_BYTES: rebuilt in parts from a scratch
    version 2 copy, its text the original's (path and cut-short note too)."""
    assert scan_trace(path).version == 1
    monkeypatch.setattr(parts_module, "V1_WHOLE_BYTES", 0)
    monkeypatch.setattr(parts_module, "PART_EVENTS", 60)
    got, parted = _parted_text(path, None)
    assert parted
    with recorded_probes(probe_specs(read_trace(path).header.probes)):
        assert got == render_stats(build_timeline(read_trace(path)))
    res = CliRunner().invoke(replay_cmd, [str(path), "--stats", "--jobs", "2"])
    assert res.exit_code == 0, res.output
    with recorded_probes(probe_specs(read_trace(path).header.probes)):
        assert res.stdout == render_stats(build_timeline(read_trace(path)))


def test_last_parts_cut_inside_batches_same_text(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """With a worker, the last LAST_PARTS parts' events are rebuilt in
    parts LAST_PARTS times smaller, cut inside the file's batches (so that
    neither process waits long for the other's last part); the text is the
    one of parts cut at batch ends only (one process)."""
    trace = _in_time_order(synthetic_trace(recording(LOSSLESS[0]), 12, 3))
    path = tmp_path / "twelve.kpath"
    rows = 200
    _write(trace, path, rows)
    monkeypatch.setattr(parts_module, "PART_EVENTS", 120)
    cuts: list[int] = []
    part = PartedStats._part

    def record(self: PartedStats, held: Any, read: int) -> Any:
        cuts.append(read)
        return part(self, held, read)

    monkeypatch.setattr(PartedStats, "_part", record)
    one, _ = _parted_text(path, None, 1)
    at_batch_ends = list(cuts)
    assert all(cut % rows == 0 for cut in at_batch_ends[:-1]), at_batch_ends
    cuts.clear()
    two, parted = _parted_text(path, None, 2)
    assert parted and two == one
    inside = [cut for cut in cuts[:-1] if cut % rows]
    assert inside, cuts
    events = len(trace.events)
    step = 120 // parts_module.LAST_PARTS
    # only in the last parts, and that much smaller
    assert min(inside) > events - (parts_module.LAST_PARTS + 1) * rows
    last = [cut for cut in cuts[:-1] if cut >= min(inside) - step]
    assert all(0 < b - a <= step for a, b in zip(last, last[1:], strict=False)), last
