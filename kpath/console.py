"""Status output on stderr: messages, progress tickers, the live event counter.

On a terminal the counter redraws one line; elsewhere (CI logs, the VM's
serial console) it prints a line every few seconds.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import NoReturn, TextIO


class ConsoleStatus:
    TICK_S = 5.0

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        # TERM=dumb: a serial console (the VM's) is a tty that cannot redraw.
        self.tty = self.stream.isatty() and os.environ.get("TERM", "") != "dumb"
        self._last_counter = 0.0
        self._counter_shown = False

    def _line(self, text: str) -> None:
        if self._counter_shown and self.tty:
            self.stream.write("\r\033[K")
            self._counter_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def info(self, msg: str) -> None:
        if not self.quiet:
            self._line(f"kpath: {msg}")

    def warn(self, msg: str) -> None:
        self._line(f"kpath: warning: {msg}")

    @contextlib.contextmanager
    def ticker(self, label: str) -> Iterator[None]:
        """Shows elapsed seconds while a long step runs."""
        start = time.monotonic()
        done = threading.Event()

        def tick() -> None:
            while not done.wait(1.0 if self.tty else self.TICK_S):
                elapsed = time.monotonic() - start
                if self.tty:
                    self.stream.write(f"\rkpath: {label} ... {elapsed:.0f} s")
                else:
                    self.stream.write(f"kpath: {label} ... {elapsed:.0f} s\n")
                self.stream.flush()

        if not self.quiet:
            self.stream.write(f"kpath: {label} ...{'' if self.tty else chr(10)}")
            self.stream.flush()
        thread = threading.Thread(target=tick, daemon=True)
        if not self.quiet:
            thread.start()
        outcome = "failed"
        try:
            yield
            outcome = "done"
        finally:
            done.set()
            if thread.is_alive():
                thread.join()
            if not self.quiet:
                elapsed = time.monotonic() - start
                end = "\r\033[K" if self.tty else ""
                self.stream.write(f"{end}kpath: {label}: {outcome} after {elapsed:.1f} s\n")
                self.stream.flush()

    def counter(self, events: int, lost: int, elapsed_s: float) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        interval = 0.25 if self.tty else self.TICK_S
        if now - self._last_counter < interval:
            return
        self._last_counter = now
        text = f"kpath: {events} events, {lost} lost, {elapsed_s:.1f} s"
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self._counter_shown = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def counter_done(self) -> None:
        if self._counter_shown and self.tty:
            self.stream.write("\n")
            self._counter_shown = False


class KeptStatus:
    """A Status that prints nothing and keeps its messages ("info ..." and
    "warn ..." lines): for callers that report on their own (doctor, tests)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str) -> None:
        self.lines.append("info " + msg)

    def warn(self, msg: str) -> None:
        self.lines.append("warn " + msg)

    @contextlib.contextmanager
    def ticker(self, label: str) -> Iterator[None]:
        yield

    def counter(self, events: int, lost: int, elapsed_s: float) -> None:
        pass

    def counter_done(self) -> None:
        pass


def stdout_failed(exc: OSError) -> NoReturn:
    """Standard output cannot take more (a reader that went away, `| head`;
    a full disk; /dev/full): stop with one line, never a traceback. A closed
    pipe is the reader's choice and ends quietly with status 0; any other
    failure says what the system said, with status 1."""
    # Nothing more reaches stdout: point it at /dev/null, so that the flush
    # at interpreter exit does not fail again (and print a traceback).
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if exc.errno == errno.EPIPE:
        sys.exit(0)
    with contextlib.suppress(OSError):
        sys.stderr.write(f"kpath: error: cannot write to standard output: "
                         f"{exc.strerror or type(exc).__name__}\n")
        sys.stderr.flush()
    sys.exit(1)


# A command done with everything it writes may end the process without the
# interpreter's teardown (every module freed: ~25 ms, numpy's alone ~18 ms).
# Only commands that leave nothing to clean up at exit (no temporary
# directory, thread or child process left) ask for it: end_quickly().
_end_quickly = False


def end_quickly() -> None:
    """Once the command returns successfully, the command line (kpath/cli.py
    main) ends the process at once, stdout and stderr flushed, as the
    workers of --stats end."""
    global _end_quickly
    _end_quickly = True


def ends_quickly() -> bool:
    return _end_quickly
