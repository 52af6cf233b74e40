"""Differential test: `kpath export -f perfetto` of a trace rebuilt in parts
of independent groups of events (viz/perfettogroups.py) writes the bytes the
whole timeline gives (viz/perfetto.py), to a file and to stdout, on every
recording (v1 and converted to v2) and on synthetic traces of overlapping
copies cut into small parts, and on copies sharing their softirq, ksoftirqd
and hardirq contexts, whose tracks span parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.synth import write_synthetic
from kpath import cli_view
from kpath.cli_view import export_cmd
from tests.replay.recordings import (
    DATA,
    RECORDINGS,
    assert_parted_in_both_versions,
    needs_recordings,
    overlapping_v2,
)
from tracer.timeline import context_key, groups
from tracer.timeline.columnar.links import ProbeFlags
from tracer.tracefile import probe_specs, read_trace
from tracer.tracefile.convert import convert
from viz import perfettogroups

pytestmark = needs_recordings


def _export(path: Path, out: str, monkeypatch: pytest.MonkeyPatch, target: int | None,
            calls: list[int], args: tuple[str, ...] = ()) -> tuple[int, str, str]:
    """(exit code, document, stderr): whole when target is None."""
    real = perfettogroups.write_perfetto_groups

    def spy(*args: object, **kwargs: object) -> int:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    with monkeypatch.context() as m:
        if target is None:
            m.setattr(cli_view, "PARTS_FROM", 10**9)
        else:
            m.setattr(cli_view, "PARTS_FROM", 0)
            m.setattr(groups, "PART_EVENTS", target)
        m.setattr(perfettogroups, "write_perfetto_groups", spy)
        res = CliRunner().invoke(export_cmd, [str(path), "-f", "perfetto", "-o", out, *args])
    if out == "-":
        return res.exit_code, res.stdout, res.stderr
    text = Path(out).read_text() if res.exit_code == 0 else ""
    return res.exit_code, text, res.stderr.replace(out, "OUT")


def _windows(path: Path) -> list[tuple[str, ...]]:
    """--from/--to: event indices, times, and two selecting nothing (refused
    before anything is rebuilt)."""
    trace = read_trace(path)
    n = trace.num_events
    span = max(ev.ts_ns for ev in trace.events) - min(ev.ts_ns for ev in trace.events)
    return [("--from", str(n // 3), "--to", str(2 * n // 3)), ("--from", str(n - 1)),
            ("--to", f"{span // 2000}us"), ("--from", f"{span // 3000}us", "--to", "5"),
            ("--from", str(n))]


def _check(path: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch, target: int,
           stdout: bool = False, windows: bool = False) -> int:
    """Whole and in parts: the same bytes and messages; how many exports
    went in parts."""
    calls: list[int] = []
    for out in (str(tmp / "out.perfetto.json"), "-") if stdout else (str(tmp / "out.json"),):
        before = len(calls)
        whole = _export(path, out, monkeypatch, None, calls)
        assert len(calls) == before
        assert whole[0] == 0, whole[2]
        parted = _export(path, out, monkeypatch, target, calls)
        assert parted == whole, (path.name, out)
    for args in _windows(path) if windows else []:
        out = str(tmp / "window.json")
        Path(out).unlink(missing_ok=True)
        whole = _export(path, out, monkeypatch, None, [], args)
        Path(out).unlink(missing_ok=True)
        parted = _export(path, out, monkeypatch, target, calls, args)
        assert parted == whole, (path.name, args)
    assert not list(tmp.glob(".*.part"))
    return len(calls)


@pytest.mark.parametrize("recording", RECORDINGS, ids=[p.name for p in RECORDINGS])
def test_perfetto_in_parts_equals_whole(recording: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert_parted_in_both_versions(
        recording, tmp_path, lambda path, target: _check(path, tmp_path, monkeypatch, target))


@pytest.mark.parametrize("name", ["hello_hi", "bulk_1mib", "host_chat_tracepoints", "mixed"])
def test_perfetto_in_parts_equals_whole_overlapping_copies(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v2 = overlapping_v2(DATA / f"{name}.kpath", tmp_path, 8, 8_000)
    target = max(100, read_trace(v2).num_events // 12)
    plan = groups.plan_groups(str(v2), target)
    assert plan is not None
    assert sum(1 for _ in plan.parts()) >= 4
    assert _check(v2, tmp_path, monkeypatch, target, stdout=True, windows=True) == 5


def _shared_contexts(recording: Path, tmp: Path, copies: int) -> Path:
    """Overlapping copies (bench.synth) whose softirq, ksoftirqd and hardirq
    events run in the original threads, as on a real busy host (a CPU's
    ksoftirqd and the idle task serve every connection), but for those of
    lead-in and trailer probes (they would join every copy's events in the
    context into one group): those contexts span groups, and so parts. A
    version 2 file."""
    from bench.synth import load

    trace = read_trace(recording)
    names = tuple(sorted({te.probe for te in trace.events}))
    flags = ProbeFlags(probe_specs(trace.header.probes).get)
    flags.update(names)
    chained = {n for n, c in zip(names, flags.chained.tolist(), strict=True) if c}
    stride = load(recording).pid_stride
    synth = tmp / "copies.kpath"
    write_synthetic(recording, synth, copies, overlap=8)
    shared = tmp / "shared.kpath"
    with synth.open() as src, shared.open("w") as dst:
        for line in src:
            rec = json.loads(line)
            ev = rec.get("event")
            if ev is not None and ev.get("ctx") != "task" and ev["probe"] not in chained:
                ev["tid"] %= stride
                ev["tgid"] %= stride
                line = json.dumps(rec, separators=(",", ":")) + "\n"
            dst.write(line)
    v2 = tmp / "shared_v2.kpath"
    convert(shared, v2)
    return v2


@pytest.mark.parametrize("name", ["hello_hi", "hello_hi_full", "bulk_1mib", "closed_port_rst",
                                  "host_chat_tracepoints", "veth_netns"])
def test_perfetto_in_parts_equals_whole_shared_contexts(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v2 = _shared_contexts(DATA / f"{name}.kpath", tmp_path, 8)
    target = max(100, read_trace(v2).num_events // 12)
    plan = groups.plan_groups(str(v2), target)
    assert plan is not None
    parts_of: dict[object, set[int]] = {}
    for part in plan.parts():
        for te in part.timeline.events:
            parts_of.setdefault(context_key(te.ev), set()).add(part.number)
    assert plan.parts_made >= 2
    assert any(len(p) > 1 for p in parts_of.values())
    assert _check(v2, tmp_path, monkeypatch, target, windows=True) == 4
