"""Differential test: `kpath export -f pcapng` of a trace rebuilt in parts
of independent groups of events (viz/pcapnggroups.py) writes the bytes the
whole timeline gives (viz/pcapng.py), on every recording (v1 and converted
to v2) and on overlapping copies carrying their frames, cut into small
parts, for every flow and for each flow alone (--flow N); a trace without
frames, and a --flow the trace lacks, fail alike."""

from __future__ import annotations

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
)
from tracer.timeline import groups
from tracer.tracefile import read_trace
from tracer.tracefile.convert import convert
from viz import pcapnggroups

pytestmark = needs_recordings


def _export(path: Path, out: Path, monkeypatch: pytest.MonkeyPatch, target: int | None,
            calls: list[int], flow: str | None = None) -> tuple[int, bytes, str]:
    """(exit code, file, stderr): whole when target is None."""
    real = pcapnggroups.write_pcapng_groups

    def spy(*args: object, **kwargs: object) -> pcapnggroups.Written:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    out.unlink(missing_ok=True)
    with monkeypatch.context() as m:
        if target is None:
            m.setattr(cli_view, "PARTS_FROM", 10**9)
        else:
            m.setattr(cli_view, "PARTS_FROM", 0)
            m.setattr(groups, "PART_EVENTS", target)
        m.setattr(pcapnggroups, "write_pcapng_groups", spy)
        res = CliRunner().invoke(export_cmd, [str(path), "-f", "pcapng", "-o", str(out),
                                              *(["--flow", flow] if flow else [])])
    data = out.read_bytes() if out.exists() else b""
    return res.exit_code, data, res.stderr.replace(str(out), "OUT")


def _check(path: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch, target: int,
           flow: str | None = None, want_packets: bool = False) -> int:
    """Whole and in parts alike; how many exports went in parts."""
    calls: list[int] = []
    out = tmp / "out.pcapng"
    whole = _export(path, out, monkeypatch, None, calls, flow)
    assert not calls
    parted = _export(path, out, monkeypatch, target, calls, flow)
    assert parted == whole, (path.name, flow)
    assert not list(tmp.glob(".*.part"))
    if want_packets:
        assert whole[0] == 0 and whole[1], (whole[2], flow)
    return len(calls)


def _check_flows(path: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch, target: int,
                 every: bool = False) -> int:
    """Every flow, then flows alone (the first, a middle and the last one;
    `every`: each, and each must have packets); how many exports went in
    parts."""
    parted = _check(path, tmp, monkeypatch, target)
    n = _flows(path)
    for number in range(1, n + 1) if every else sorted({1, (n + 1) // 2, n} - {0}):
        parted += _check(path, tmp, monkeypatch, target, str(number), every)
    return parted


def _flows(path: Path) -> int:
    from tracer.timeline import build_timeline

    return len(build_timeline(read_trace(path)).flows)


@pytest.mark.parametrize("recording", RECORDINGS, ids=[p.name for p in RECORDINGS])
def test_pcapng_in_parts_equals_whole(recording: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    assert_parted_in_both_versions(
        recording, tmp_path,
        lambda path, target: _check_flows(path, tmp_path, monkeypatch, target))


@pytest.mark.parametrize("name", ["hello_hi", "bulk_1mib", "veth_netns", "two_hosts_a"])
def test_pcapng_in_parts_equals_whole_overlapping_copies(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copies = tmp_path / "copies.kpath"
    write_synthetic(DATA / f"{name}.kpath", copies, 6, overlap=4, frames=True)
    v2 = tmp_path / "copies_v2.kpath"
    convert(copies, v2)
    trace = read_trace(v2)
    assert trace.frames is not None and trace.frames.num_rows
    target = max(100, trace.num_events // 10)
    plan = groups.plan_groups(str(v2), target)
    assert plan is not None
    frames = plan.order_of(plan.frames().column("row").to_numpy().astype("int64"))
    with_frames = sum(bool(set(part.index.tolist()) & set(frames.tolist()))
                      for part in plan.parts())
    assert with_frames >= 3
    flows = _flows(v2)
    assert flows >= 6
    assert _check_flows(v2, tmp_path, monkeypatch, target, every=True) == 1 + flows
    # Parts of several flows each: --flow N leaves the others' frames out.
    big = trace.num_events // 3
    plan = groups.plan_groups(str(v2), big)
    assert plan is not None
    assert any(len(part.timeline.flows) > 1 for part in plan.parts())
    assert _check_flows(v2, tmp_path, monkeypatch, big, every=True) == 1 + flows


def test_pcapng_in_parts_without_frames_fails_alike(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    copies = tmp_path / "copies.kpath"
    write_synthetic(DATA / "hello_hi.kpath", copies, 6, overlap=4)
    v2 = tmp_path / "copies_v2.kpath"
    convert(copies, v2)
    calls: list[int] = []
    out = tmp_path / "out.pcapng"
    whole = _export(v2, out, monkeypatch, None, calls)
    parted = _export(v2, out, monkeypatch, 200, calls)
    assert calls and parted == whole
    assert whole[0] == 1 and "no captured frames" in whole[2] and not whole[1]


def test_pcapng_flow_missing_in_parts_fails_alike(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    copies = tmp_path / "copies.kpath"
    write_synthetic(DATA / "hello_hi.kpath", copies, 6, overlap=4, frames=True)
    v2 = tmp_path / "copies_v2.kpath"
    convert(copies, v2)
    out = tmp_path / "out.pcapng"
    for flow in ("99", "0", "x"):
        calls: list[int] = []
        whole = _export(v2, out, monkeypatch, None, calls, flow)
        parted = _export(v2, out, monkeypatch, 200, calls, flow)
        assert parted == whole and whole[0] == 2 and not whole[1], flow
        assert "--flow" in whole[2] or "no flow" in whole[2]
