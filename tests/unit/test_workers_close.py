"""tracer/workers.py: closing a pool whose worker is still busy (a call
whose result is no longer wanted, Ctrl-C) kills it instead of waiting."""

from __future__ import annotations

import time

from tracer.workers import PartPool


def test_close_kills_a_busy_worker() -> None:
    pool = PartPool(1)
    assert pool.ready() is None
    call = pool.call(time.sleep, 60)
    start = time.monotonic()
    pool.close()
    assert time.monotonic() - start < 10
    assert call.done() and call.exception() is not None


def test_close_of_an_idle_pool_answers_what_was_asked() -> None:
    pool = PartPool(1)
    call = pool.call(sum, [1, 2, 3])
    assert call.result(timeout=60) == 6
    pool.close()
