"""Differential test: `kpath export` of a trace rebuilt in parts of
independent groups of events, only the parts drawn kept
(viz/exportgroups.py), writes the bytes the whole timeline gives, in every
format, on every recording (v1 and converted to v2) and on synthetic
traces of overlapping copies, with the default picture (folded, capped),
--no-fold, per flow (with --max-packets), --from/--to and --max-packets
across flows."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.synth import write_synthetic
from kpath import cli_view
from kpath.cli_view import export_cmd
from tests.replay.recordings import DATA, RECORDINGS, needs_recordings, overlapping_v2
from tracer.timeline import groups
from tracer.tracefile import read_trace
from tracer.tracefile.convert import convert
from viz import exportgroups

pytestmark = needs_recordings

TEXT = ("svg", "dot", "mermaid", "plantuml", "html")
# The diagram (dot: every row), the page (the timeline's lookups) and, per
# flow, Perfetto (call ends): what the parts could change; the other
# renderers draw the same diagram.
CORE = ("dot", "html")


def _export(path: Path, fmt: str, out: Path, args: tuple[str, ...]) -> tuple[int, bytes, str]:
    res = CliRunner().invoke(export_cmd, [str(path), "-f", fmt, "-o", str(out), *args])
    data = out.read_bytes() if res.exit_code == 0 else b""
    notices = res.stderr.replace(str(out), "OUT")
    return res.exit_code, data, notices


def _selections(path: Path, short: bool = False) -> list[tuple[str, ...]]:
    trace = read_trace(path)
    events = trace.num_events
    flows = events and _flow_count(path)
    picks = sorted({flows} if short else {1, flows, (flows + 1) // 2} - {0})
    out: list[tuple[str, ...]] = [()] if short else [(), ("--no-fold",)]
    out += [("--flow", str(n)) for n in picks if n]
    if picks:
        out.append(("--flow", str(picks[-1]), "--max-packets", "3"))
        out += [("--packet", "0-3,7"), ("--packet", "5", "--flow", "1")]  # errors too
        out.append(("--flow", str(picks[-1]), "--from", str(events // 4)))
    # --from/--to and --max-packets across flows (and a window of no event,
    # told after a flow the trace lacks)
    out += [("--max-packets", "5"), ("--from", str(events // 3), "--to", str(2 * events // 3)),
            ("--from", str(events // 2), "--max-packets", "7"), ("--from", str(events)),
            ("--flow", str(flows + 1), "--from", str(events))]
    if not short:
        span_us = (trace.events[-1].ts_ns - trace.events[0].ts_ns) // 1000 if events else 0
        out += [("--max-packets", "450"), ("--to", f"{span_us // 2}us"),
                ("--from", f"{span_us // 4}us", "--no-fold")]
    return out


def _flow_count(path: Path) -> int:
    from tracer.timeline import build_timeline, use_recorded_probes
    from tracer.tracefile import probe_specs

    trace = read_trace(path)
    use_recorded_probes(probe_specs(trace.header.probes))
    return len(build_timeline(trace).flows)


def _check(path: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch, target: int,
           formats: tuple[str, ...] = TEXT, default_only: bool = False,
           short: bool = False) -> int:
    """Every selection in every format, whole and in parts of groups; the
    number of exports drawn in parts."""
    calls = []
    real = exportgroups.drawn

    def spy(*args: object, **kwargs: object) -> exportgroups.Drawn:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    for args in [()] if default_only else _selections(path, short):
        narrowed = {"--flow", "--packet", "--max-packets"} & set(args)
        fmts = formats + (("perfetto",) if narrowed else ())
        for fmt in fmts:
            with monkeypatch.context() as m:
                m.setattr(cli_view, "PARTS_FROM", 10**9)  # whole
                whole = _export(path, fmt, tmp / f"whole.{fmt}", args)
            with monkeypatch.context() as m:
                m.setattr(cli_view, "PARTS_FROM", 0)
                m.setattr(groups, "PART_EVENTS", target)
                m.setattr(exportgroups, "drawn", spy)
                parted = _export(path, fmt, tmp / f"parts.{fmt}", args)
            assert parted == whole, (path.name, fmt, args)
    return len(calls)


@pytest.mark.parametrize("recording", RECORDINGS, ids=[p.name for p in RECORDINGS])
def test_export_in_parts_equals_whole(recording: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # As version 2 (a version 1 file's plan reads the same table whole), in
    # about 6 parts: each part is a timeline built (big recordings: slow).
    v2 = tmp_path / "v2.kpath"
    convert(recording, v2)
    target = max(50, read_trace(recording).num_events // 6)
    drawn = _check(v2, tmp_path, monkeypatch, target, CORE, short=True)
    # Only a trace the groups refuse is drawn whole.
    assert drawn or groups.plan_groups(str(v2)) is None, recording.name


@pytest.mark.parametrize("name", ["hello_hi", "bulk_1mib", "host_chat_tracepoints"])
def test_export_in_parts_equals_whole_overlapping_copies(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A busy host (bench.synth --overlap 8) as a version 2 file: the picture
    # is folded and capped, and draws only some of the parts.
    v2 = overlapping_v2(DATA / f"{name}.kpath", tmp_path, 8, 8_000)
    target = max(200, read_trace(v2).num_events // 8)
    plan = groups.plan_groups(str(v2), target)
    assert plan is not None
    assert sum(1 for _ in plan.parts()) >= 2
    assert _check(v2, tmp_path, monkeypatch, target) > 0


def test_binary_formats_in_parts_equal_whole(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "overlap.kpath"
    write_synthetic(DATA / "hello_hi.kpath", out, 40, overlap=8)
    v2 = tmp_path / "overlap_v2.kpath"
    convert(out, v2)
    assert _check(v2, tmp_path, monkeypatch, 100, ("png", "pdf"), default_only=True) > 0


def test_only_the_parts_drawn_are_rebuilt(tmp_path: Path) -> None:
    # Copies one after another: the capped picture draws the first flows,
    # from the first parts.
    out = tmp_path / "copies.kpath"
    write_synthetic(DATA / "hello_hi.kpath", out, 60, overlap=0.5)
    v2 = tmp_path / "copies_v2.kpath"
    convert(out, v2)
    plan = groups.plan_groups(str(v2), 100)
    assert plan is not None
    from viz.select import Selection

    sv = exportgroups.survey(plan, True)
    made = plan.parts_made
    d = exportgroups.drawn(plan, sv, Selection())
    assert d.view.cut_note is not None
    rebuilt = {fs.part for fs in sv.flows if fs.number <= len(d.view.flows)}
    assert len(rebuilt) < made
    assert len({te.step for te in d.timeline.events}) < sv.steps
