"""Differential test: the Perfetto slices of a trace written in parts are
clipped as they are merged (viz/perfettogroups.py _nested: one time at a
time, each track's open slices kept); the result must be the whole
document's (viz/perfetto.py: each track sorted and clipped at once, then
all slices sorted by time, pid and tid). Recorded traces never overlap a
slice's end, so random slices: equal starts, zero lengths, overlaps."""

from __future__ import annotations

import copy
import random
from typing import Any

from viz.perfetto import Track, _nest
from viz.perfettogroups import _nested


def _slices(rng: random.Random, n: int) -> list[tuple[float, int, Any, dict[str, Any]]]:
    out = []
    ts = 0
    for index in range(n):
        ts += rng.choice((0, 0, 1, 2, 5))
        dur = rng.choice((0, 0, 1, 3, 7, 20)) + rng.choice((0, 0.001, 0.5))
        key = (0, rng.randrange(3), rng.choice(("task", "softirq")), None)
        sl = {"ph": "X", "name": "p", "pid": 0, "tid": 0, "ts": float(ts),
              "dur": dur, "args": {"event": index}}
        out.append((sl["ts"], index, key, sl))
    return out


def test_nesting_as_merged_equals_whole() -> None:
    clipped = sum(_check(random.Random(seed)) for seed in range(60))
    assert clipped >= 30  # most draws overlap a slice's end


def _check(rng: random.Random) -> bool:
    """One draw, whole and merged alike; whether a slice was clipped."""
    recs = _slices(rng, rng.randrange(1, 120))
    keys = sorted({key for _, _, key, _ in recs})
    # pids and tids as _tracks gives them: tracks of one process, of several
    tracks = {key: Track(pid=rng.choice((5, 9)), tid=100 + i, name="", sort=0)
              for i, key in enumerate(keys)}

    whole = copy.deepcopy(recs)
    per_track: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for _, _, key, sl in whole:
        tr = tracks[key]
        sl["pid"], sl["tid"] = tr.pid, tr.tid
        per_track.setdefault((tr.pid, tr.tid), []).append(sl)
    for sls in per_track.values():
        _nest(sls)
    expected = sorted((sl for *_, sl in whole), key=lambda s: (s["ts"], s["pid"], s["tid"]))

    merged = list(_nested(iter(copy.deepcopy(recs)), tracks))
    assert merged == expected
    return any(sl["args"].get("clipped") for sl in expected)
