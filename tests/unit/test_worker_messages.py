"""tracer/workers.py: a message (a pickle and its buffers out of band)
written in one writev reads back whole through a pipe: buffers bigger than
the pipe, empty ones, and more than one writev takes."""

from __future__ import annotations

import os
import pickle
import threading

import numpy as np

from tracer.workers import _dumps, _read, _write


def _through_pipe(obj: object) -> object:
    r, w = os.pipe()
    got: list[object] = []
    with os.fdopen(r, "rb") as inp, os.fdopen(w, "wb") as out:
        reader = threading.Thread(target=lambda: got.append(_read(inp)))
        reader.start()
        _write(out, _dumps(obj))
        reader.join(timeout=60)
    (head, buffers), = got
    return pickle.loads(head, buffers=buffers)


def test_big_and_empty_buffers_read_back() -> None:
    cols = {"big": np.arange(1 << 20, dtype=np.int64),  # 8 MiB: many pipes' worth
            "empty": np.zeros(0, dtype=np.int32), "small": np.array([1, 2, 3], np.uint8)}
    back = _through_pipe(cols)
    assert isinstance(back, dict) and back.keys() == cols.keys()
    for name, col in cols.items():
        assert back[name].dtype == col.dtype and np.array_equal(back[name], col)


def test_more_buffers_than_one_writev_takes() -> None:
    cols = [np.full(i % 7 + 1, i, dtype=np.int64) for i in range(3000)]
    assert len(_dumps(cols)[1]) > 2 * 1024  # buffers: more than two writevs' worth
    back = _through_pipe(cols)
    assert isinstance(back, list) and len(back) == len(cols)
    assert all(np.array_equal(a, b) for a, b in zip(back, cols, strict=True))
