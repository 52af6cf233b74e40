"""What a part of --stats gets from the whole trace (synthetic inputs):
the losses during a flow (loss_times.LossTimes, from the records as
columns: tracefile/loss_columns.py), as the whole trace's rebuild counts
them, and pass 1's per-event nodes read back from their
file (links.BatchNodes)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tracer.timeline.columnar.links import BatchNodes
from tracer.timeline.columnar.loss_times import LossTimes
from tracer.timeline.latency import LOSS_WINDOW_NS
from tracer.timeline.model import LossSummary
from tracer.tracefile import Lost
from tracer.tracefile.loss_columns import EMPTY, LossColumns


def _losses(lost: list[Lost], times: Iterable[np.ndarray], first_ts: int | None = None
            ) -> LossTimes:
    return LossTimes.of(LossColumns.of_rows(lost), times, first_ts)


def test_losses_during_a_flow_up_to_the_next_event_after_it() -> None:
    # events at 10, 20, 30, 50 (batches out of time order); losses at 25, 40, 60, 5
    losses = _losses([Lost(ts_ns=40, count=1), Lost(ts_ns=25, count=2),
                      Lost(ts_ns=60, count=3), Lost(ts_ns=5, count=4)],
                     [np.array([30, 10], np.int64), np.array([], np.int64),
                      np.array([50, 20], np.int64)])
    assert losses.stamps.tolist() == [5, 25, 40, 60]
    assert losses.before.tolist()[1:] == [20, 30, 50]
    assert losses.summary == LossSummary(records=4, lost=10)
    # a flow from 10 to 30: the loss at 25 falls in it, the one at 40 comes
    # before the trace's next event (50); the one at 60 after it
    assert losses.during(10, 30) == LossSummary(records=2, lost=3)
    # a flow from 10 to 20: the next event (30) is before 40
    assert losses.during(10, 20) == LossSummary(records=1, lost=2)
    # a flow ending at the trace's last event: the losses after it count
    assert losses.during(30, 50) == LossSummary(records=2, lost=4)
    # a flow starting after a loss does not get it
    assert losses.during(41, 70) == LossSummary(records=1, lost=3)
    assert losses.during(61, 70) == LossSummary()


def test_losses_during_equal_a_scan_of_every_record() -> None:
    """Random synthetic events, loss records and blind windows (ties
    included): during() searches its bounds and sums on arrays; it must
    count what testing every record counts, and the trace's summary and
    loss windows must be the object timeline's."""
    rng = np.random.default_rng(8)
    for _ in range(200):
        ts = rng.integers(0, 60, size=rng.integers(0, 12)).astype(np.int64)
        lost = [Lost(ts_ns=int(t), count=0, since_ns=max(int(t) - 3, 0), blind="softirq NET_RX")
                if i % 3 == 2 else Lost(ts_ns=int(t), count=i + 1, probe=f"p{i % 2}")
                for i, t in enumerate(rng.integers(0, 60, size=rng.integers(0, 10)))]
        first = int(ts.min()) if len(ts) else None
        losses = _losses(lost, [ts[: len(ts) // 2], ts[len(ts) // 2:]], first)
        gaps = sorted(lost, key=lambda g: g.ts_ns)
        assert losses.summary == LossSummary.of(gaps)
        # each record's last event before it (none: -1)
        before = [max((t for t in ts.tolist() if t < g.ts_ns), default=-1) for g in gaps]
        for start, end in rng.integers(0, 60, size=(20, 2)).tolist():
            start, end = min(start, end), max(start, end)
            scan = [g for g, b in zip(gaps, before, strict=True)
                    if start <= g.ts_ns and b <= end]
            assert losses.during(start, end) == dataclasses.replace(
                LossSummary.of(scan), blind_ns=0)
        # latency.loss_windows of a timeline holding these records
        ends = sorted({g.ts_ns for g in gaps if g.since_ns is None})
        prev = min([t for t in (first, gaps[0].ts_ns if gaps else None) if t is not None],
                   default=0) - 1
        starts = []
        for t in ends:
            starts.append(max(prev, t - LOSS_WINDOW_NS))
            prev = t
        assert (losses.window_ends.tolist(), losses.window_starts.tolist()) == (ends, starts)


def test_no_losses_read_no_times() -> None:
    def times() -> Iterator[np.ndarray]:
        raise AssertionError("read")
        yield  # pragma: no cover

    losses = _losses([], times())
    assert len(losses.stamps) == 0 and losses.during(0, 10) == LossSummary()
    assert losses.summary == LossSummary()


def test_loss_columns_keep_every_field_through_concat() -> None:
    """Synthetic records in two batches with different probe and blind
    names: joined, they read back as the same Lost records."""
    a = [Lost(ts_ns=9, count=2, probe="tcp_v4_rcv", cpu=1),
         Lost(ts_ns=3, count=0, cpu=0, since_ns=1, blind="softirq NET_RX")]
    b = [Lost(ts_ns=4, count=5), Lost(ts_ns=8, count=1, probe="ip_rcv", cpu=0),
         Lost(ts_ns=7, count=1, probe="tcp_v4_rcv")]
    joined = LossColumns.concat([LossColumns.of_rows(a), EMPTY, LossColumns.of_rows(b)])
    assert joined.records() == a + b
    assert joined.total == 9 and len(joined) == 5
    assert LossColumns.concat([]).records() == []


def test_batch_nodes_read_back_in_order_and_again() -> None:
    nodes = BatchNodes()
    batches = [np.array([3, 1, 2], np.int64), np.zeros(0, np.int64),
               np.arange(100_000, dtype=np.int64)]
    for b in batches:
        nodes.append(b)
    assert [a.tolist() for a in nodes] == [b.tolist() for b in batches]
    assert nodes.popleft().tolist() == [3, 1, 2]
    # iteration reads what is left, as often as asked
    assert [len(a) for a in nodes] == [0, 100_000]
    assert nodes.popleft().dtype == np.int32
    assert nodes.popleft().tolist() == batches[2].tolist()
    assert list(nodes) == []


def test_batch_nodes_adopt_a_tail_written_elsewhere(tmp_path: Path) -> None:
    # the tail's nodes as a worker writes them: a named file
    tail = BatchNodes(str(tmp_path / "tail-nodes"))
    for b in ([0, 2, 1], [1, 3]):
        tail.append(np.array(b, np.int64))
    head = BatchNodes()
    head.append(np.array([5, 4], np.int64))
    head.adopt(str(tail.path), list(tail.sizes()), 10)
    (tmp_path / "tail-nodes").unlink()  # read from the handle opened by adopt
    assert list(head.sizes()) == [2, 3, 2]
    assert [a.tolist() for a in head] == [[5, 4], [10, 12, 11], [11, 13]]
    assert head.popleft().tolist() == [5, 4]
    assert head.popleft().tolist() == [10, 12, 11]
    assert [a.tolist() for a in head] == [[11, 13]]
    with pytest.raises(RuntimeError):
        head.append(np.array([1], np.int64))
    assert head.popleft().tolist() == [11, 13]
    with pytest.raises(IndexError):
        head.popleft()


def test_batch_nodes_adopt_of_an_empty_tail_opens_nothing(tmp_path: Path) -> None:
    head = BatchNodes()
    head.append(np.array([1], np.int64))
    head.adopt(str(tmp_path / "never-written"), [], 1)
    assert [a.tolist() for a in head] == [[1]]
