"""A trace's losses as every window's timeline gets them (synthetic
records): TraceLosses.during picks, by two searches, the gaps a scan of
every record picks for a flow (noticed from its start up to `until`)."""

from __future__ import annotations

import numpy as np

from tracer.timeline import TraceLosses, lost_gaps
from tracer.tracefile import Lost


def test_during_equals_a_scan_of_every_record() -> None:
    rng = np.random.default_rng(3)
    for _ in range(300):
        lost = [Lost(ts_ns=int(t), count=i + 1) if i % 4 else
                Lost(ts_ns=int(t), count=0, since_ns=int(t) - 2, blind="softirq NET_RX")
                for i, t in enumerate(rng.integers(10, 60, size=rng.integers(0, 12)))]
        losses = TraceLosses.of(lost, 5)
        assert losses.gaps == lost_gaps(lost, 5)
        assert [g.offset_ns for g in losses.gaps] == sorted(rec.ts_ns - 5 for rec in lost)
        for start, until in rng.integers(0, 70, size=(20, 2)).tolist():
            for end in (until, None):
                scan = [g for g in losses.gaps
                        if start <= g.ts_ns and (end is None or g.ts_ns <= end)]
                assert losses.during(start, end) == scan
