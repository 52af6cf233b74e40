"""The trace's losses as a part of it needs them: which fell during a
flow needs the time of the trace's last event before each loss, known
only once every event has been read (a part is rebuilt before that). All
in arrays: a long trace under TCG holds a million loss records, and every
part (maybe in a worker) gets these."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tracer.timeline.columnar.latency_table import loss_windows
from tracer.timeline.latency import LOSS_WINDOW_NS
from tracer.timeline.model import LossSummary
from tracer.tracefile.loss_columns import NONE, LossColumns

_NO_EVENT = np.iinfo(np.int64).min  # no event before the loss


@dataclass(frozen=True, slots=True)
class LossTimes:
    """The times at which loss records were noticed, each once, in order
    (`stamps`: a million records came at ~38 k times in a lossy trace),
    the time of the trace's last event before each (_NO_EVENT: none); the
    records, the events they lost and the blind windows among them before
    each time (one more entry: all of them); the whole trace's summary;
    the spans in which the counted losses fell (latency.loss_windows:
    ends, starts), which mark packets."""

    stamps: np.ndarray
    before: np.ndarray
    records_below: np.ndarray
    lost_below: np.ndarray
    blind_below: np.ndarray
    summary: LossSummary
    window_ends: np.ndarray
    window_starts: np.ndarray

    @classmethod
    def of(cls, lost: LossColumns, times: Iterable[np.ndarray], first_ts: int | None
           ) -> LossTimes:
        """From the records (let go here once counted: pass them over, not
        a reference kept), every event's time (`times`, in batches of any
        order; not read when there is no loss) and the trace's first event
        time (where the first loss window may start)."""
        order = np.argsort(lost.ts_ns, kind="stable")
        stamps = lost.ts_ns[order]
        n = len(stamps)
        since = lost.since_ns[order]
        count = lost.count[order]
        del lost, order
        blind = since != NONE
        summary = LossSummary(records=n, lost=int(count.sum()), blind=int(blind.sum()),
                              blind_ns=int((stamps[blind] - since[blind]).sum()))
        del since
        starts = [s for s in (first_ts, int(stamps[0]) if n else None) if s is not None]
        ends, window_starts = loss_windows(stamps[~blind], min(starts, default=0),
                                           LOSS_WINDOW_NS)
        # Records noticed at one time fall in the same flows (a flow's
        # bounds are searched among the times): counted per time.
        at = np.flatnonzero(np.r_[True, stamps[1:] != stamps[:-1]]) if n else np.zeros(0, int)
        bounds = np.append(at, n)
        lost_below = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(count, out=lost_below[1:])
        blind_below = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(blind, out=blind_below[1:])
        del count, blind
        stamps = stamps[at]
        before = np.full(len(stamps), _NO_EVENT)
        if n:
            for ts in times:
                if not len(ts):
                    continue
                ordered = np.sort(ts)
                i = np.searchsorted(ordered, stamps, side="left") - 1
                np.maximum(before, np.where(i >= 0, ordered[np.maximum(i, 0)], _NO_EVENT),
                           out=before)
        return cls(stamps, before, bounds, lost_below[bounds], blind_below[bounds], summary,
                   ends, window_starts)

    def during(self, start: int, end: int) -> LossSummary:
        """The losses from a flow's start up to the trace's first event
        after its end (no event between the flow's end and the loss), as
        the object timeline counts them: the times are in order and
        `before` rises with them, so both bounds are a binary search (a
        flow's blind_ns is not counted: not printed)."""
        if not len(self.stamps):  # a trace without loss records: most
            return NO_LOSS
        first = int(np.searchsorted(self.stamps, start, side="left"))
        end_at = int(np.searchsorted(self.before, end, side="right"))
        if end_at <= first:
            return NO_LOSS
        return LossSummary(records=int(self.records_below[end_at] - self.records_below[first]),
                           lost=int(self.lost_below[end_at] - self.lost_below[first]),
                           blind=int(self.blind_below[end_at] - self.blind_below[first]))


NO_LOSS = LossSummary()
