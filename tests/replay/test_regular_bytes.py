"""The byte placement of regular directions on columns
(tracer/timeline/columnar/regular_bytes.py) against place_direction, the
sequential rules it stands in for: the same --stats text with every
direction placed one by one, on the correlation unit tests' hand-built
traces (problems of every kind), the recordings and overlapping copies of
them; both kinds of direction occur among them."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.replay.recordings import RECORDINGS
from tests.replay.test_stats_columnar import _unit_traces, recording
from tests.synthetic import mixed_trace
from tracer.timeline.columnar import Irregular, PreparedStats, stats_input_of
from tracer.timeline.columnar import stats as columnar_stats
from tracer.timeline.columnar.regular_bytes import (
    ByteColumns,
    RegularPlacement,
    regular_placement,
)
from tracer.timeline.event_rules import probe_spec, recorded_probes
from tracer.tracefile import Trace, probe_specs
from viz.stats_columnar import render_trace_stats


def _texts(trace: Trace, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, int, int]:
    """(text with regular placement, text with none, regular and other
    directions)."""
    seen: list[np.ndarray] = []

    def counted(bc: ByteColumns) -> RegularPlacement:
        rp = regular_placement(bc)
        seen.append(rp.regular)
        return rp

    def none_regular(bc: ByteColumns) -> RegularPlacement:
        rp = regular_placement(bc)
        return RegularPlacement(np.zeros_like(rp.regular), rp.anchor, rp.send_lo, rp.send_hi)

    texts = []
    with recorded_probes(probe_specs(trace.header.probes)):
        for placement in (counted, none_regular):
            monkeypatch.setattr(columnar_stats, "regular_placement", placement)
            prepared = PreparedStats(stats_input_of(trace), probe_spec)
            texts.append(render_trace_stats(prepared.stats()))
    regular = int(sum(r.sum() for r in seen))
    return texts[0], texts[1], regular, int(sum(len(r) for r in seen)) - regular


def _traces() -> Iterator[tuple[str, Trace]]:
    yield from _unit_traces()
    for path in RECORDINGS:
        yield path.name, recording(path)
    yield "mixed", mixed_trace([recording(p) for p in RECORDINGS], 4, 8)


def test_regular_placement_is_place_direction(monkeypatch: pytest.MonkeyPatch) -> None:
    regular = other = 0
    for name, trace in _traces():
        try:
            fast, slow, r, o = _texts(trace, monkeypatch)
        except Irregular:
            continue
        assert fast == slow, name
        regular += r
        other += o
    assert regular > 0 and other > 0, (regular, other)
