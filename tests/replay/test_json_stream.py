"""Differential test: `kpath replay --format json` writes its document piece
by piece (viz.jsonout.write_json); the bytes must be those of the whole
document made in memory (render_json), on every recording (v1 and converted
to v2) and on synthetic many-connection traces, whole and per flow."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.synth import write_synthetic
from kpath.cli_view import replay_cmd
from tests.replay.recordings import DATA, RECORDINGS, needs_recordings
from tracer.timeline import Timeline, build_timeline, use_recorded_probes
from tracer.tracefile import probe_specs, read_trace
from tracer.tracefile.convert import convert
from viz.jsonout import render_json, write_json

pytestmark = needs_recordings


def _timeline(path: Path) -> Timeline:
    trace = read_trace(path)
    use_recorded_probes(probe_specs(trace.header.probes))
    return build_timeline(trace)


def _streamed(tl: Timeline, flow: int | None) -> str:
    out = io.StringIO()
    write_json(tl, out.write, flow)
    return out.getvalue()


def _check_all_selections(path: Path) -> None:
    tl = _timeline(path)
    assert tl.flows
    for flow in (None, *range(1, len(tl.flows) + 1)):
        assert _streamed(tl, flow) == render_json(tl, flow), (path.name, flow)


@pytest.mark.parametrize("recording", RECORDINGS, ids=[p.name for p in RECORDINGS])
def test_streamed_equals_whole_document(recording: Path, tmp_path: Path) -> None:
    _check_all_selections(recording)
    v2 = tmp_path / "v2.kpath"
    convert(recording, v2)
    _check_all_selections(v2)


@pytest.mark.parametrize("name", ["hello_hi", "veth_netns"])
def test_streamed_equals_whole_document_many_connections(name: str, tmp_path: Path) -> None:
    out = tmp_path / "synthetic.kpath"
    write_synthetic(DATA / f"{name}.kpath", out, 12, overlap=4)
    _check_all_selections(out)


def test_cli_writes_the_streamed_document() -> None:
    recording = DATA / "hello_hi.kpath"
    res = CliRunner().invoke(replay_cmd, [str(recording), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert res.stdout == render_json(_timeline(recording))
    res = CliRunner().invoke(replay_cmd, [str(recording), "--format", "json", "--flow", "1"])
    assert res.exit_code == 0, res.output
    assert res.stdout == render_json(_timeline(recording), 1)
