"""Every export format from every real recording in tests/data, checked the
way its consumer reads it (skipped only when no recording exists yet)."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from kpath.cli_replay import replay_cmd
from kpath.cli_view import export_cmd
from tests import tools
from tests.replay.recordings import RECORDINGS, needs_recordings
from tests.trace_event_check import check_trace_events
from tests.unit.test_export_synthetic import assert_offline_html
from tracer.timeline import Packet, build_timeline
from tracer.tracefile import read_trace
from viz.select import select
from viz.sequence import build_sequence

pytestmark = needs_recordings


@pytest.fixture(params=RECORDINGS, ids=[p.name for p in RECORDINGS])
def recording(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


def export(rec: Path, fmt: str, out: Path, *args: str) -> Path:
    res = CliRunner().invoke(export_cmd, [str(rec), "-f", fmt, "-o", str(out), *args])
    assert res.exit_code == 0, res.output
    assert f"kpath: wrote {out} ({fmt}," in res.stderr
    return out


def needs_neato() -> None:
    if shutil.which("neato") is None:
        pytest.skip("graphviz neato not installed")


def test_graphviz_formats(recording: Path, tmp_path: Path) -> None:
    needs_neato()
    svg = export(recording, "svg", tmp_path / "d.svg").read_text()
    root = ET.fromstring(svg)
    texts = "".join(root.itertext())
    assert "client app" in texts and "server app" in texts
    assert "execution context" in texts  # the legend
    tl = build_timeline(read_trace(recording))
    drawn = build_sequence(tl, view=select(tl)).arrows  # what the CLI draws by default
    assert len(re.findall(r'<g id="ev\d+" class="node', svg)) == len(drawn)
    png = export(recording, "png", tmp_path / "d.png")
    w, h, px = tools.png_pixels(png)
    assert w > 500 and h > 500 and tools.pixel_variance(px) > 5
    assert export(recording, "pdf", tmp_path / "d.pdf").read_bytes().startswith(b"%PDF")
    assert "digraph kpath" in export(recording, "dot", tmp_path / "d.dot").read_text()


def test_mermaid_parses(recording: Path, tmp_path: Path) -> None:
    out = export(recording, "mermaid", tmp_path / "d.mmd")
    (res,) = tools.mermaid_parse(out)
    assert res["ok"] is True and res["type"] == "sequence", res


def test_plantuml_renders(recording: Path, tmp_path: Path) -> None:
    out = export(recording, "plantuml", tmp_path / "d.puml")
    svg = tools.plantuml_svg(out)
    assert "Syntax Error" not in svg
    attached = {p.name for p in read_trace(recording).header.attached}
    rx_probe = "tcp_v4_rcv" if "tcp_v4_rcv" in attached else "tcp_rcv_established"
    assert ">client app<" in svg and rx_probe in svg


def test_perfetto(recording: Path, tmp_path: Path) -> None:
    text = export(recording, "perfetto", tmp_path / "d.json").read_text()
    assert check_trace_events(text) == []
    doc = json.loads(text)
    tl = build_timeline(read_trace(recording))
    multi = [st for st in tl.steps if isinstance(st, Packet) and len(st.events) >= 2]
    assert sum(e["ph"] == "s" and e["cat"] == "packet" for e in doc["traceEvents"]) == len(multi)


def test_html(recording: Path, tmp_path: Path) -> None:
    needs_neato()
    out = export(recording, "html", tmp_path / "d.html")
    data = assert_offline_html(out.read_text())
    tl = build_timeline(read_trace(recording))
    events = data["events"]
    assert isinstance(events, dict)
    assert len(events) == len(build_sequence(tl, view=select(tl)).arrows)
    pkt = next(st for st in tl.steps if isinstance(st, Packet))
    shot = tmp_path / "shot.png"
    tools.chromium(out.as_uri(), f"--screenshot={shot}", "--window-size=1400,1000")
    _, _, px = tools.png_pixels(shot)
    assert tools.pixel_variance(px) > 100
    dom = tools.chromium(f"{out.as_uri()}#step={pkt.id}&selftest=1", "--dump-dom")
    m = re.search(r'<pre id="kpath-selftest"[^>]*>([^<]*)</pre>', dom)
    assert m is not None and m.group(1)
    report = json.loads(m.group(1))
    assert pkt.id in report["lit_steps"] and report["rows_visible"] == 1
    assert 0 < report["arrows_lit"] < report["arrows_total"]


def test_selection_and_json(recording: Path, tmp_path: Path) -> None:
    tl = build_timeline(read_trace(recording))
    pkt = next(st for st in tl.steps if isinstance(st, Packet))
    out = export(recording, "mermaid", tmp_path / "p.mmd", "--packet", str(pkt.id))
    text = out.read_text()
    assert pkt.events[0].probe in text and "    loop x" not in text
    res = CliRunner().invoke(replay_cmd, [str(recording), "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert len(doc["events"]) == len(tl.events)
    assert [s["id"] for s in doc["steps"]] == list(range(len(tl.steps)))
