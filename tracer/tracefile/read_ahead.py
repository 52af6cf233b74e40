"""Batches read ahead by a thread: the Arrow reader decompresses and checks
the next batch (without the GIL) while the caller works on this one."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


def read_ahead(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """`items`, produced by a thread up to `depth` ahead of the caller. An
    exception of the producer is raised here, in its turn; a caller that
    stops early stops the thread before this generator closes (so the
    source may be closed after it)."""
    ready: queue.Queue[tuple[object, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put((item, None), timeout=0.05)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put((_END, None))
        except BaseException as exc:  # noqa: BLE001 - raised in the caller
            ready.put((_END, exc))

    thread = threading.Thread(target=produce, name="kpath-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = ready.get()
            if item is _END:
                if exc is not None:
                    raise exc
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()  # a producer waiting for room sees it within 50 ms
        thread.join()
