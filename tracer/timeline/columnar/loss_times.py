"""The trace's losses as a part of it needs them: which fell during a
flow needs the time of the trace's last event before each loss, known
only once every event has been read (a part is rebuilt before that)."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from tracer.timeline.latency import counted_stamps
from tracer.tracefile import Lost

_NONE = np.iinfo(np.int64).min  # no event before the loss


@dataclass(frozen=True, slots=True)
class LossTimes:
    """The loss records in time order, and the time of the trace's last
    event before each (_NONE: none); the times of those that mark packets
    (latency.counted_stamps), for every part to make its loss windows of."""

    gaps: tuple[Lost, ...]
    before: np.ndarray
    counted: np.ndarray

    @classmethod
    def of(cls, lost: Sequence[Lost], times: Iterable[np.ndarray]) -> LossTimes:
        """From the records and every event's time (`times`, in batches of
        any order; not read when there is no loss)."""
        gaps = tuple(sorted(lost, key=_stamp))
        stamps = np.array([g.ts_ns for g in gaps], dtype=np.int64)
        before = np.full(len(stamps), _NONE)
        if len(stamps):
            for ts in times:
                if not len(ts):
                    continue
                ordered = np.sort(ts)
                at = np.searchsorted(ordered, stamps, side="left") - 1
                np.maximum(before, np.where(at >= 0, ordered[np.maximum(at, 0)], _NONE),
                           out=before)
        counted = np.array(counted_stamps(gaps), dtype=np.int64)
        return cls(gaps, before, counted)

    def during(self, start: int, end: int) -> list[Lost]:
        """The losses from a flow's start up to the trace's first event
        after its end (no event between the flow's end and the loss), as
        the object timeline counts them. Both bounds are searched: the
        records are in time order and `before` rises with them (a flow
        each, over a million loss records, a scan was quadratic)."""
        if not self.gaps:
            return []
        first = bisect.bisect_left(self.gaps, start, key=_stamp)
        end_at = int(np.searchsorted(self.before, end, side="right"))
        return list(self.gaps[first:end_at])


def _stamp(rec: Lost) -> int:
    return rec.ts_ns
