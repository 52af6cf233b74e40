"""The per-flow tables of the columnar `replay --stats` text made for runs
of flows at once (viz/stats_tables.py: per_packet_texts,
distribution_texts, tenths_of_us) against the same tables made a flow and
a row at a time (the object path's table_lines, fmt_us), on synthetic
flows: none, one packet, two, hops missing, a flow with no hop, gap marks,
a latency row of gaps only (dashes), negative and half-way values (their
'%.1f' rounding), values too wide for integer tenths, long labels."""

from __future__ import annotations

import numpy as np
import pytest

from tracer.timeline.columnar.latency_table import HOPS
from tracer.timeline.columnar.stats import CLASSES, HOP_FIELDS, ROLES, FlowPackets, HopTable
from viz.stats_tables import (
    distribution_rows,
    distribution_texts,
    packet_lines,
    per_packet_rows,
    per_packet_texts,
    tenths_of_us,
)
from viz.stats_text import fmt_us

LABELS = ["SYN", "ACK", "PSH|ACK 28 B", "FIN|ACK", "PSH|ACK 1448000 B"]


def _values(rng: np.random.Generator, shape: tuple[int, ...], spread: int) -> np.ndarray:
    v = rng.integers(-spread // 8, spread, shape)
    halves = rng.random(shape) < 0.2  # x.x50 us: '%.1f' rounds the double
    return np.where(halves, v // 100 * 100 + 50, v)


def _packets(rng: np.random.Generator, n: int, spread: int, p_hop: float,
             p_gap: float) -> FlowPackets:
    has = rng.random((n, len(HOPS))) < p_hop
    return FlowPackets(step=rng.integers(0, 10 ** rng.integers(1, 7), n),
                       label=[LABELS[i] for i in rng.integers(0, len(LABELS), n)],
                       sender=rng.integers(0, len(ROLES), n),
                       klass=rng.integers(0, len(CLASSES), n),
                       hops=np.where(has, _values(rng, (n, len(HOPS)), spread), 0),
                       has_hop=has, gap=rng.random(n) < p_gap)


@pytest.mark.parametrize("n,spread,p_hop,p_gap", [
    (0, 10, 0.5, 0.0), (1, 10, 0.5, 0.0), (2, 1000, 0.5, 0.5), (1, 10, 0.0, 0.0),
    (5, 10, 0.0, 1.0),  # no hop at all: the class column ends the lines
    (12, 10 ** 8, 0.6, 0.1), (300, 10 ** 12, 0.3, 0.3), (40, 10 ** 18, 1.0, 0.0),
], ids=["none", "one", "two", "one-no-hop", "no-hop-gaps", "small-flow", "large", "wide"])
def test_per_packet_synthetic_is_row_by_row(n: int, spread: int, p_hop: float,
                                           p_gap: float) -> None:
    rng = np.random.default_rng(n + spread)
    flows = [_packets(rng, n, spread, p_hop, p_gap) for _ in range(20)]
    assert [packet_lines(t) for t in per_packet_texts(flows)] == [
        "\n".join(per_packet_rows(p)) for p in flows]
    # in a run with flows of other kinds (their rows before and after)
    mixed = [_packets(rng, 12, 10 ** 6, 0.6, 0.1), *flows[:3], _packets(rng, 0, 10, 0.5, 0.0)]
    assert [packet_lines(t) for t in per_packet_texts(mixed)] == [
        "\n".join(per_packet_rows(p)) for p in mixed]


def _hop_table(rng: np.random.Generator, rows: int, spread: int, p_unmeasured: float
               ) -> HopTable:
    v = np.zeros((rows, HOP_FIELDS), dtype=np.int64)
    v[:, 0] = rng.integers(0, len(ROLES), rows)
    v[:, 1] = rng.integers(0, len(CLASSES), rows)
    v[:, 2] = rng.integers(0, len(HOPS), rows)
    v[:, 3] = np.where(rng.random(rows) < p_unmeasured, 0, rng.integers(1, 10 ** 5, rows))
    v[:, 4:8] = np.sort(_values(rng, (rows, 4), spread), axis=1)
    v[v[:, 3] == 0, 4:8] = 0
    v[:, 8] = rng.integers(0, 10 ** rng.integers(1, 6), rows)
    return HopTable(v)


@pytest.mark.parametrize("rows,spread,p_unmeasured", [
    (0, 10, 0.0), (1, 10, 0.0), (2, 10 ** 6, 0.0), (1, 10, 1.0), (30, 10 ** 7, 0.0),
    (30, 10 ** 7, 0.2), (200, 10 ** 17, 0.0),
], ids=["none", "one", "two", "gaps-only", "small-flow", "some-gaps-only", "wide"])
def test_distributions_synthetic_are_row_by_row(rows: int, spread: int,
                                                p_unmeasured: float) -> None:
    rng = np.random.default_rng(rows + spread)
    tables = [_hop_table(rng, rows, spread, p_unmeasured) for _ in range(20)]
    tables.insert(3, _hop_table(rng, 30, 10 ** 7, 0.0))
    assert ["\n".join(t) for t in distribution_texts(tables)] == [
        "\n".join(distribution_rows(t)) for t in tables]


@pytest.mark.parametrize("values", [
    np.arange(0, 100000),
    np.array([0, 1, 49, 50, 51, 150, 250, 750, 1250, 9950, 99950, (1 << 50) - 1]),
    np.random.default_rng(1).integers(0, 10 ** 12, 20000) * 100 + 50,  # half-way
    np.random.default_rng(2).integers(0, 1 << 50, 20000),
], ids=["small", "edges", "half-way", "wide"])
def test_tenths_of_us_synthetic_are_fmt_us(values: np.ndarray) -> None:
    got = tenths_of_us(values.reshape(-1, 2) if len(values) % 2 == 0 else values)
    assert [f"{t // 10}.{t % 10}" for t in got.ravel().tolist()] == [
        fmt_us(int(v)) for v in values]
    # a non-contiguous view (a table's columns)
    grid = np.asfortranarray(values[: len(values) // 4 * 4].reshape(-1, 4))
    assert tenths_of_us(grid).tolist() == [[int(fmt_us(int(v)).replace(".", "")) for v in row]
                                            for row in grid.tolist()]
