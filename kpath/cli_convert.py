"""CLI: `convert`, a trace of any version to the current format (version 2,
an Arrow stream) or back to version 1 JSON Lines for jq. Wiring only: the
conversion is tracer/tracefile/convert.py."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import NoReturn

import click

from kpath.cli_types import replaceable
from tracer.tracefile import TraceFormatError
from tracer.tracefile.convert import TARGETS, convert


def _fail(msg: str, code: int = 1) -> NoReturn:
    click.echo(f"kpath: error: {msg}", err=True)
    sys.exit(code)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


@click.command("convert")
@click.argument("src", metavar="IN")
@click.option("-o", "--output", "dst", required=True, metavar="OUT", help="File to write.")
@click.option("--to", "to", type=click.Choice(list(TARGETS)), default="arrow", show_default=True,
              help="arrow: the current format (version 2, an Arrow IPC stream; "
                   "docs/trace-format.md); jsonl: version 1, one JSON object per line.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
def convert_cmd(src: str, dst: str, to: str, quiet: bool) -> None:
    """Rewrite trace IN as OUT: any version kpath reads to the current
    format, or to version 1 JSON Lines (--to jsonl) for jq and other
    line-oriented tools. Every event, lost-event record and the trailer
    carry over; a trace cut short stays marked as cut short. OUT appears
    only when complete.

    \b
    Examples:
      kpath convert old.kpath -o new.kpath
      kpath convert chat.kpath --to jsonl -o chat.jsonl
      jq -c 'select(.event.probe == "tcp_v4_rcv")' chat.jsonl
      kpath convert big.kpath -o big.jsonl --to jsonl 2> progress.log
    """
    src_path, dst_path = Path(src), Path(dst)
    if not src_path.exists():
        _fail(f"{src}: no such file", 2)
    if src_path.is_dir():
        _fail(f"{src}: is a directory, not a trace file", 2)
    if _same_file(src_path, dst_path):
        _fail(f"{dst} is the input file: write the conversion to another file", 2)
    if dst_path.is_dir():
        _fail(f"{dst} is a directory: give the file to write", 2)
    if not replaceable(dst_path):
        _fail(f"{dst} is not a regular file (a device or a pipe): the conversion is written "
              "beside it and renamed into place; give a file", 2)
    if not dst_path.parent.is_dir():
        _fail(f"cannot write {dst}: no directory {dst_path.parent}", 2)
    progress = _Progress(quiet)
    try:
        done = convert(src_path, dst_path, to, progress)
    except TraceFormatError as exc:
        progress.end()
        _fail(str(exc))
    except OSError as exc:
        progress.end()
        _fail(f"cannot write {dst}: {exc.strerror or exc}")
    progress.end()
    if done.cut_short:
        click.echo(f"kpath: warning: {src} was cut short ({done.cut_short}); so is {dst}",
                   err=True)
    if not quiet:
        size = dst_path.stat().st_size
        click.echo(f"kpath: wrote {dst} (version {done.version}, {done.events} events, "
                   f"{done.lost} lost-event records, {size / 1e6:.1f} MB, "
                   f"{progress.elapsed():.1f} s)", err=True)


class _Progress:
    """Events read and written so far, on stderr, once the work has taken a
    second: redrawn in place on a terminal, a line every few seconds in a log."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty() and os.environ.get("TERM", "") != "dumb"
        self.start = time.monotonic()
        self.last = self.start
        self.shown = False

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def __call__(self, phase: str, events: int) -> None:
        now = time.monotonic()
        if self.quiet or now - self.start < 1.0 or now - self.last < (0.5 if self.tty else 5.0):
            return
        self.last = now
        text = f"kpath: {phase} ... {events} events, {now - self.start:.0f} s"
        click.echo(f"\r\033[K{text}" if self.tty else text, err=True, nl=not self.tty)
        self.shown = True

    def end(self) -> None:
        if self.shown and self.tty:
            click.echo("\r\033[K", err=True, nl=False)
        self.shown = False
