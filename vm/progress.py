"""Stage lines on stderr with the elapsed time, so a 2-minute build or a
30-second TCG boot never looks hung."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    def __init__(
        self,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._clock = clock
        self._start = clock()

    def elapsed(self) -> float:
        return self._clock() - self._start

    def say(self, message: str) -> None:
        # Resolve sys.stderr late: pytest and click swap it after construction.
        stream = self._stream if self._stream is not None else sys.stderr
        print(f"[{self.elapsed():6.1f}s] {message}", file=stream, flush=True)
