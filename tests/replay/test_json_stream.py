"""Differential test: `kpath replay --format json` writes its document piece
by piece (viz.jsonout.write_json), and without --flow rebuilds the trace in
parts of independent groups of events (tracer/timeline/groups.py,
viz/jsongroups.py write_json_groups; the time windows of
tracer/timeline/windows.py, write_json_windows, are checked alike); the
bytes must be those of the whole document made in memory from the whole
trace (render_json), on every recording (v1 and converted to v2) and on
synthetic many-connection traces, overlapping or not, whole and per flow."""

from __future__ import annotations

import gc
import io
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.synth import write_synthetic
from kpath.cli_replay import replay_cmd
from tests.replay.recordings import DATA, RECORDINGS, needs_recordings, overlapping_v2
from tracer.timeline import Timeline, build_timeline, use_recorded_probes
from tracer.timeline.groups import plan_groups
from tracer.timeline.windows import Plan
from tracer.tracefile import probe_specs, read_trace, scan_trace
from tracer.tracefile.convert import convert
from viz import jsonout
from viz.jsongroups import write_json_groups
from viz.jsonout import render_json, write_json, write_json_windows

pytestmark = needs_recordings


def _timeline(path: Path) -> Timeline:
    trace = read_trace(path)
    use_recorded_probes(probe_specs(trace.header.probes))
    return build_timeline(trace)


def _streamed(tl: Timeline, flow: int | None) -> str:
    out = io.StringIO()
    write_json(tl, out.write, flow)
    return out.getvalue()


def _windowed(path: Path, target: int) -> tuple[str, int]:
    plan = Plan(read_trace(path), target)
    out = io.StringIO()
    write_json_windows(plan, out.write)
    return out.getvalue(), len(plan.bounds)


def _grouped(path: Path, target: int) -> tuple[str, int]:
    """The document in parts of groups, and the number of parts."""
    plan = plan_groups(str(path), target)
    assert plan is not None, path.name
    out = io.StringIO()
    write_json_groups(plan, out.write)
    return out.getvalue(), plan.parts_made


def _check_all_selections(path: Path) -> tuple[int, int]:
    """Returns the number of windows and of parts (groups) at the smallest
    target."""
    tl = _timeline(path)
    assert tl.flows
    whole = render_json(tl)
    for flow in (None, *range(1, len(tl.flows) + 1)):
        assert _streamed(tl, flow) == render_json(tl, flow), (path.name, flow)
    windows = parts = 0
    for target in (100, 1, 0):
        text, windows = _windowed(path, target)
        assert text == whole, (path.name, target)
        if target == 100 or len(tl.events) < 2000:  # each part costs: one target
            text, parts = _grouped(path, target)
            assert text == whole, (path.name, target, "groups")
    return windows, parts


@pytest.mark.parametrize("recording", RECORDINGS, ids=[p.name for p in RECORDINGS])
def test_streamed_equals_whole_document(recording: Path, tmp_path: Path) -> None:
    _check_all_selections(recording)
    v2 = tmp_path / "v2.kpath"
    convert(recording, v2)
    _check_all_selections(v2)


@pytest.mark.parametrize("name", ["hello_hi", "veth_netns", "host_chat_tracepoints",
                                  "bulk_lossy"])
def test_streamed_equals_whole_document_many_connections(name: str, tmp_path: Path) -> None:
    # Overlapping copies (a busy host) leave no independent cut: one window.
    # Copies start a fraction of the recording's span apart (lost records
    # included, which a tracer may notice long after the last event): a
    # quarter of its events' span.
    trace = read_trace(DATA / f"{name}.kpath")
    stamps = [ev.ts_ns for ev in trace.events]
    every = stamps + [rec.ts_ns for rec in trace.lost]
    overlap = 4 * (max(every) - min(every) + 50_000) / (max(stamps) - min(stamps) + 50_000)
    out = tmp_path / "synthetic.kpath"
    write_synthetic(DATA / f"{name}.kpath", out, 12, overlap=overlap)
    windows, parts = _check_all_selections(out)
    assert windows == 1
    assert parts >= 2  # groups still fall apart
    # One copy after another: a window per copy at least.
    write_synthetic(DATA / f"{name}.kpath", out, 12, overlap=0.5)
    windows, parts = _check_all_selections(out)
    assert windows >= 12 and parts >= 2
    v2 = tmp_path / "v2.kpath"
    convert(out, v2)
    windows, parts = _check_all_selections(v2)
    assert windows >= 12 and parts >= 2


@pytest.mark.parametrize("name", ["hello_hi", "mixed", "veth_netns", "bulk_1mib",
                                  "host_chat_tracepoints", "closed_port_rst"])
def test_grouped_equals_whole_document_overlapping_copies(name: str, tmp_path: Path) -> None:
    # A busy host: 8 copies of the recording in flight at once (bench.synth
    # --overlap 8), as a version 2 file: no time window, but parts.
    # Copies enough to overlap, few enough to stay fast (~20 k events).
    recording = DATA / f"{name}.kpath"
    v2 = overlapping_v2(recording, tmp_path, 10, 20_000)
    whole = render_json(_timeline(v2))
    for target in (1, 2000):
        text, parts = _grouped(v2, target)
        assert text == whole, (recording.name, target)
        if target == 1:
            assert parts >= 2


def _version(path: Path) -> int:
    with scan_trace(path) as scan:
        return scan.version


@pytest.mark.parametrize("recording", [p for p in RECORDINGS if _version(p) == 1],
                         ids=lambda p: p.name)
def test_big_version_1_file_goes_through_a_version_2_copy(recording: Path) -> None:
    # A version 1 file over the size limit is converted to a scratch copy
    # first (limit 0 here): the same document, the original's name, and the
    # copy gone with the plan.
    whole = render_json(_timeline(recording))
    plan = plan_groups(str(recording), 1000, v1_whole_bytes=0)
    assert plan is not None and plan.scratch is not None
    scratch = Path(plan.scratch.name)
    assert plan.trace.path == str(recording) and plan.trace.num_events == 0
    out = io.StringIO()
    write_json_groups(plan, out.write)
    assert out.getvalue() == whole
    del plan
    gc.collect()
    assert not scratch.exists()


def test_cut_short_version_1_copy_is_named_as_the_original(tmp_path: Path) -> None:
    data = (DATA / "hello_hi.kpath").read_bytes()
    cut = tmp_path / "cut.kpath"
    cut.write_bytes(data[:len(data) * 2 // 3])
    plan = plan_groups(str(cut), 1000, v1_whole_bytes=0)
    assert plan is not None
    assert plan.trace.cut_short == read_trace(cut).cut_short
    assert plan.trace.cut_short and "no trailer" in plan.trace.cut_short


def test_cli_writes_the_streamed_document(tmp_path: Path) -> None:
    recording = DATA / "hello_hi.kpath"
    res = CliRunner().invoke(replay_cmd, [str(recording), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert res.stdout == render_json(_timeline(recording))
    copies = tmp_path / "copies.kpath"
    write_synthetic(recording, copies, 5, overlap=0.5)
    res = CliRunner().invoke(replay_cmd, [str(copies), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert res.stdout == render_json(_timeline(copies))
    res = CliRunner().invoke(replay_cmd, [str(recording), "--format", "json", "--flow", "1"])
    assert res.exit_code == 0, res.output
    assert res.stdout == render_json(_timeline(recording), 1)



def test_cli_rebuilds_whole_a_trace_the_groups_refuse(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tracer.timeline import groups

    copies = tmp_path / "copies.kpath"
    write_synthetic(DATA / "hello_hi.kpath", copies, 4, overlap=8)
    monkeypatch.setattr(groups, "plan_groups", lambda path: None)
    res = CliRunner().invoke(replay_cmd, [str(copies), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert res.stdout == render_json(_timeline(copies))


def test_streamed_records_leave_no_garbage_with_the_collector_paused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # replay and export run with the cyclic collector paused
    # (kpath/cli_view.py); an indented json.dumps leaves a reference cycle
    # per record, which must not pile up with the trace's records.
    monkeypatch.setattr(jsonout, "_COLLECT_EVERY", 16)
    out = tmp_path / "synthetic.kpath"
    write_synthetic(DATA / "hello_hi.kpath", out, 6, overlap=0.5)
    plan = Plan(read_trace(out), 1)
    text = io.StringIO()
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        write_json_windows(plan, text.write)
        left = gc.collect()
    finally:
        if enabled:
            gc.enable()
    records = text.getvalue().count('\n  {')
    assert records > 1000
    # About 33 objects per record without the collections; here what the
    # last 16 records left at most.
    assert left < 50 * 16, (left, records)
