"""What a part of --stats gets from the whole trace (synthetic inputs):
the losses during a flow (loss_times.LossTimes), as the whole trace's
rebuild counts them, and pass 1's per-event nodes read back from their
file (links.BatchNodes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tracer.timeline.columnar.links import BatchNodes
from tracer.timeline.columnar.loss_times import LossTimes
from tracer.tracefile import Lost


def test_losses_during_a_flow_up_to_the_next_event_after_it() -> None:
    # events at 10, 20, 30, 50 (batches out of time order); losses at 25, 40, 60, 5
    losses = LossTimes.of([Lost(ts_ns=40, count=1), Lost(ts_ns=25, count=2),
                           Lost(ts_ns=60, count=3), Lost(ts_ns=5, count=4)],
                          [np.array([30, 10], np.int64), np.array([], np.int64),
                           np.array([50, 20], np.int64)])
    assert [g.ts_ns for g in losses.gaps] == [5, 25, 40, 60]
    # a flow from 10 to 30: the loss at 25 falls in it, the one at 40 comes
    # before the trace's next event (50); the one at 60 after it
    assert [g.count for g in losses.during(10, 30)] == [2, 1]
    # a flow from 10 to 20: the next event (30) is before 40
    assert [g.count for g in losses.during(10, 20)] == [2]
    # a flow ending at the trace's last event: the losses after it count
    assert [g.count for g in losses.during(30, 50)] == [1, 3]
    # a flow starting after a loss does not get it
    assert [g.count for g in losses.during(41, 70)] == [3]
    assert losses.during(61, 70) == []


def test_losses_during_equal_a_scan_of_every_record() -> None:
    """Random synthetic events and loss records (ties included): during()
    searches its bounds; it must pick what testing every record picks."""
    rng = np.random.default_rng(8)
    for _ in range(200):
        ts = rng.integers(0, 60, size=rng.integers(0, 12)).astype(np.int64)
        lost = [Lost(ts_ns=int(t), count=i + 1)
                for i, t in enumerate(rng.integers(0, 60, size=rng.integers(0, 10)))]
        losses = LossTimes.of(lost, [ts[: len(ts) // 2], ts[len(ts) // 2:]])
        for start, end in rng.integers(0, 60, size=(20, 2)).tolist():
            start, end = min(start, end), max(start, end)
            scan = [g for g, before in zip(losses.gaps, losses.before.tolist(), strict=True)
                    if start <= g.ts_ns and before <= end]
            assert losses.during(start, end) == scan


def test_no_losses_read_no_times() -> None:
    def times() -> object:
        raise AssertionError("read")
        yield  # pragma: no cover

    losses = LossTimes.of([], times())  # type: ignore[arg-type]
    assert losses.gaps == () and losses.during(0, 10) == []


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
