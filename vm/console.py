"""Split the guest's serial console into what the user should see.

Before the START marker the console carries boot noise: hidden, except the
init script's own "kpath-vm:" lines. Between START and END it carries the
command's output: passed through live. The END marker carries the exit code.
Markers must contain this run's id, so output of the command itself (say, a
nested `kpath vm` log) cannot end the run early.
"""

from __future__ import annotations

import re
from collections.abc import Callable

START = "KPATH-VM-START"
END = "KPATH-VM-END"
NOTICE_PREFIX = "kpath-vm:"
# The guest kernel's watchdog repeats this every ~28 s while a CPU is stuck.
SOFT_LOCKUP = re.compile(r"soft lockup - CPU#\d+ stuck for (\d+)s!")


class ConsoleFilter:
    def __init__(
        self,
        run_id: str,
        out: Callable[[str], None],
        notice: Callable[[str], None],
    ) -> None:
        self._out = out
        self._notice = notice
        self._start = re.compile(rf"{START} {re.escape(run_id)}\s*$")
        self._end = re.compile(rf"{END} {re.escape(run_id)} rc=(\d+)\s*$")
        self._pending = b""
        self._shown_partial = ""  # part of the current line already written
        self.started = False
        self.ended = False
        self.exit_code: int | None = None
        self.lockup_s = 0  # the longest soft lockup the guest kernel reported

    def feed(self, data: bytes) -> None:
        self._pending += data
        while b"\n" in self._pending:
            raw, self._pending = self._pending.split(b"\n", 1)
            self._line(raw.rstrip(b"\r").decode("utf-8", errors="replace"))

    def idle(self) -> None:
        """Show a partial line (a prompt, a progress dot) when output pauses."""
        if not self.started or self.ended or not self._pending:
            return
        text = self._pending.decode("utf-8", errors="replace").rstrip("\r")
        # Hold back anything that could be the start of the END marker line.
        if END.startswith(text) or text.startswith(END):
            return
        if text.startswith(self._shown_partial):
            self._out(text[len(self._shown_partial):])
            self._shown_partial = text

    def _line(self, line: str) -> None:
        lockup = SOFT_LOCKUP.search(line)
        if lockup is not None:
            self.lockup_s = max(self.lockup_s, int(lockup.group(1)))
        if not self.started:
            if self._start.search(line):
                self.started = True
            elif line.startswith(NOTICE_PREFIX):
                self._notice(line)
            self._maybe_end(line)
            return
        if self.ended:
            return
        match = self._maybe_end(line)
        if match is not None:
            # Output without a final newline shares its line with the marker.
            line = line[: match.start()]
            if not line:
                return
        shown, self._shown_partial = self._shown_partial, ""
        self._out((line[len(shown):] if line.startswith(shown) else "\n" + line) + "\n")

    def _maybe_end(self, line: str) -> re.Match[str] | None:
        match = self._end.search(line)
        if match is not None:
            self.ended = True
            self.exit_code = int(match.group(1))
        return match
