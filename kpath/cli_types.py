"""Option types and checks the CLI shares: values range-checked when parsed,
so that a command never starts with one it cannot use."""

from __future__ import annotations

import functools
import gc
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

# A year: the longest a trace or a VM run may be asked to last (longer
# waits overflow the timers they reach: subprocess timeouts, poll).
MAX_SECONDS = 365 * 86400.0


# click 8.1 (Debian 12's, in the VM guest) has no generic ParamType to
# subscript at run time; newer click's stubs want its type arguments.
if TYPE_CHECKING:
    _FloatParam = click.ParamType[float, object]
    _JobsParam = click.ParamType[int | None, object]
else:
    _FloatParam = click.ParamType
    _JobsParam = click.ParamType

MAX_JOBS = 64


class Jobs(_JobsParam):
    """A number of processes, 1 to MAX_JOBS, or "auto" (None: the command
    picks)."""

    name = "jobs"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> int | None:
        if value is None or isinstance(value, int):
            jobs = value
        elif str(value).strip().lower() == "auto":
            return None
        else:
            try:
                jobs = int(str(value))
            except ValueError:
                self.fail(f"{value!r} is neither a number of processes nor 'auto'", param, ctx)
        if jobs is not None and not 1 <= jobs <= MAX_JOBS:
            self.fail(f"{value!r} is out of range: 1 to {MAX_JOBS} processes, or 'auto'",
                      param, ctx)
        return jobs


class Seconds(_FloatParam):
    """A finite number of seconds, more than `above` (at least `at_least`,
    when given) and at most MAX_SECONDS; click's FloatRange lets nan and inf
    through."""

    name = "seconds"

    def __init__(self, above: float = 0.0, at_least: float | None = None) -> None:
        self.above = above
        self.at_least = at_least

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            seconds = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        low_ok = seconds >= self.at_least if self.at_least is not None else seconds > self.above
        if not low_ok or seconds > MAX_SECONDS:
            low = (f"at least {self.at_least:g}" if self.at_least is not None
                   else f"more than {self.above:g}")
            self.fail(f"{value!r} is out of range: {low} s and at most {MAX_SECONDS:g} s "
                      "(a year)", param, ctx)
        return seconds


def replaceable(path: Path) -> bool:
    """Whether an output may be written beside `path` and renamed onto it
    (so that it appears only when complete): a regular file or nothing.
    Renamed onto /dev/full, a FIFO or /dev/stdout, it would replace the
    device node itself (as root)."""
    try:
        return not path.exists() or path.is_file()
    except OSError:
        return False


def no_cycle_collection(command: Callable[..., None]) -> Callable[..., None]:
    """`command` with the cyclic garbage collector paused: while a timeline
    is built it walks the millions of live objects of a big trace again and
    again (a third of an export's time) and frees almost nothing."""
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        enabled = gc.isenabled()
        gc.disable()
        try:
            command(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()
    return run
