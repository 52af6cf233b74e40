"""CLI: `replay` (text timeline) and `export` (sequence diagrams). Wiring
only: read trace -> timeline -> renderer. Errors are one line on stderr:
exit 2 for a bad invocation, 1 when the work itself fails."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import click

from tracer.timeline import Timeline, build_timeline
from tracer.tracefile import TraceFormatError, read_trace
from viz import graphviz_render
from viz.mermaid import render_mermaid
from viz.sequence import build_sequence
from viz.text import cut_short_message, render_text

EXPORT_FORMATS = ("svg", "png", "pdf", "dot", "mermaid")
TEXT_FORMATS = ("svg", "dot", "mermaid")
EXTENSIONS = {"svg": ".svg", "png": ".png", "pdf": ".pdf", "dot": ".dot", "mermaid": ".mmd"}
FORMAT_OF_SUFFIX = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot",
                    ".mmd": "mermaid", ".mermaid": "mermaid"}


def _fail(msg: str, code: int = 1) -> NoReturn:
    click.echo(f"kpath: error: {msg}", err=True)
    sys.exit(code)


def _load(path: str) -> Timeline:
    try:
        trace = read_trace(path)
    except TraceFormatError as exc:
        _fail(str(exc))
    return build_timeline(trace)


def _flow_number(tl: Timeline, flow: str | None) -> int | None:
    """--flow N as a valid 1-based flow number (one-line error otherwise)."""
    if flow is None:
        return None
    count = len(tl.flows)
    have = f"it has {count} flow{'s' if count != 1 else ''}" + (f": 1..{count}" if count else "")
    try:
        number = int(flow)
    except ValueError:
        _fail(f"--flow wants a flow number, got {flow!r} ({have})", 2)
    if not 1 <= number <= count:
        _fail(f"no flow {number} in {tl.trace.path} ({have})", 2)
    return number


def _echo(text: str, color: bool | None = None) -> None:
    try:
        click.echo(text, nl=False, color=color)
        sys.stdout.flush()
    except BrokenPipeError:
        # Reader went away (`| head`): stop quietly, without a traceback at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


@click.command("replay")
@click.argument("file", metavar="FILE")
@click.option("--flow", metavar="N", help="Only flow N (numbers as listed by replay).")
@click.option("--no-color", is_flag=True, help="No colour even on a terminal.")
def replay_cmd(file: str, flow: str | None, no_color: bool) -> None:
    """Print a trace as per-flow timelines: each message (send/recv syscall)
    and packet (SYN, SYN-ACK, data, ACK...) with its events, their time,
    side, layer, execution context, bytes and sequence numbers.

    \b
    Examples:
      kpath replay chat.kpath
      kpath replay chat.kpath --flow 1 | less -R
    """
    tl = _load(file)
    number = _flow_number(tl, flow)
    cut = cut_short_message(tl.trace)
    if cut:
        click.echo(f"kpath: warning: {cut}", err=True)
    color = not no_color and "NO_COLOR" not in os.environ and sys.stdout.isatty()
    _echo(render_text(tl, number, color=color), color=color)


@click.command("export")
@click.argument("file", metavar="FILE")
@click.option("-f", "--format", "fmt", metavar="FORMAT",
              help=f"{'|'.join(EXPORT_FORMATS)} (default: from -o's suffix, else svg).")
@click.option("-o", "--output", metavar="OUT",
              help="File to write, '-' for stdout (text formats). Default: FILE with "
                   "the format's suffix.")
@click.option("--flow", metavar="N", help="Only flow N (default: all flows, one after another).")
def export_cmd(file: str, fmt: str | None, output: str | None, flow: str | None) -> None:
    """Draw a trace as a sequence diagram: lifelines for each side's app,
    syscall, socket, TCP, IP and device layers; one arrow per event.

    \b
    Examples:
      kpath export chat.kpath -f svg -o chat.svg
      kpath export chat.kpath -o chat.pdf --flow 1
      kpath export chat.kpath -f mermaid -o - >> README.md
      kpath export chat.kpath -f dot -o chat.dot   # then: neato -n2 -Tpng chat.dot
    """
    if fmt is None:
        suffix = Path(output).suffix.lower() if output and output != "-" else ""
        fmt = FORMAT_OF_SUFFIX.get(suffix, "svg")
    fmt = fmt.lower()
    if fmt not in EXPORT_FORMATS:
        _fail(f"unknown format {fmt!r} (choose from: {', '.join(EXPORT_FORMATS)})", 2)
    if output == "-" and fmt not in TEXT_FORMATS:
        _fail(f"{fmt} is binary: write it to a file with -o FILE", 2)
    if output is None:
        output = str(Path(file).with_suffix(EXTENSIONS[fmt]))
    if output != "-" and Path(output).resolve() == Path(file).resolve():
        _fail(f"refusing to overwrite the trace {file} with the diagram", 2)
    tl = _load(file)
    number = _flow_number(tl, flow)
    cut = cut_short_message(tl.trace)
    if cut:
        click.echo(f"kpath: warning: {cut}", err=True)
    diagram = build_sequence(tl, number)
    try:
        if fmt == "mermaid":
            data = render_mermaid(diagram).encode()
        else:
            data = graphviz_render.render(diagram, fmt)
    except graphviz_render.GraphvizUnavailable as exc:
        _fail(str(exc))
    except graphviz_render.RenderError as exc:
        _fail(str(exc))
    if output == "-":
        _echo(data.decode())
        return
    try:
        Path(output).write_bytes(data)
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror or exc}")
    click.echo(f"kpath: wrote {output} ({fmt}, {len(diagram.arrows)} arrows)", err=True)
