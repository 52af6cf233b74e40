"""tracer/tracefile/read_ahead.py: items produced by a thread ahead of the
caller, in order, errors in their turn, the thread stopped with the caller."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tracer.tracefile.read_ahead import read_ahead


def test_items_in_order() -> None:
    assert list(read_ahead(iter(range(1000)), depth=3)) == list(range(1000))
    assert list(read_ahead(iter([]))) == []


def test_an_error_of_the_source_is_raised_after_the_items_before_it() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("batch 3 unreadable")

    got = []
    with pytest.raises(ValueError, match="batch 3"):
        for item in read_ahead(source()):
            got.append(item)
    assert got == [1, 2]


def test_a_caller_that_stops_stops_the_thread() -> None:
    made = []

    def source() -> Iterator[int]:
        for i in range(10_000):
            made.append(i)
            yield i

    for item in read_ahead(source(), depth=2):
        if item == 5:
            break
    # the thread is gone once the loop is left: it made a few items more at most
    assert not any(t.name == "kpath-read-ahead" for t in threading.enumerate())
    assert len(made) <= 5 + 1 + 2 + 1
