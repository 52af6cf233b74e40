"""Differential test: `kpath export -f perfetto` writes its JSON record by
record (viz.perfetto.write_perfetto); the bytes must be those of the whole
text made in memory (render_perfetto), for every recording and a synthetic
many-connection trace, all flows and one flow, to a file and to stdout."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.synth import write_synthetic
from kpath.cli_view import export_cmd
from tests.replay.recordings import DATA, RECORDINGS, needs_recordings
from tracer.timeline import Timeline, build_timeline, use_recorded_probes
from tracer.tracefile import probe_specs, read_trace
from viz.perfetto import render_perfetto, write_perfetto
from viz.select import Selection, select

pytestmark = needs_recordings


def _timeline(path: Path) -> Timeline:
    trace = read_trace(path)
    use_recorded_probes(probe_specs(trace.header.probes))
    return build_timeline(trace)


def _check(path: Path, tmp_path: Path) -> None:
    tl = _timeline(path)
    for flow in (None, 1):
        view = select(tl, Selection(flow=flow, fold=False, cap=False))
        out = io.StringIO()
        write_perfetto(tl, out.write, view)
        assert out.getvalue() == render_perfetto(tl, view), (path.name, flow)
    whole = render_perfetto(tl, select(tl, Selection(fold=False, cap=False)))
    dst = tmp_path / "out.perfetto.json"
    res = CliRunner().invoke(export_cmd, [str(path), "-f", "perfetto", "-o", str(dst)])
    assert res.exit_code == 0, res.output
    assert dst.read_text() == whole
    assert not list(tmp_path.glob(".*.part"))
    res = CliRunner().invoke(export_cmd, [str(path), "-f", "perfetto", "-o", "-"])
    assert res.exit_code == 0, res.output
    assert res.stdout == whole


@pytest.mark.parametrize("recording", RECORDINGS, ids=[p.name for p in RECORDINGS])
def test_streamed_perfetto_equals_whole_text(recording: Path, tmp_path: Path) -> None:
    _check(recording, tmp_path)


def test_streamed_perfetto_many_connections(tmp_path: Path) -> None:
    out = tmp_path / "synthetic.kpath"
    write_synthetic(DATA / "hello_hi.kpath", out, 12, overlap=4)
    _check(out, tmp_path)
