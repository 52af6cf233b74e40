"""CLI: `merge`, traces of different hosts joined into one. Wiring only:
the merge is tracer/merge."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from kpath.cli_types import replaceable
from tracer.merge import MergeError, MergeResult
from tracer.tracefile import TraceFormatError


def _fail(msg: str, code: int = 1) -> NoReturn:
    click.echo(f"kpath: error: {msg}", err=True)
    sys.exit(code)


def describe(result: MergeResult) -> list[str]:
    """One line per joined input: its host, its clock offset and what matched."""
    srcs = result.header.sources
    lines = []
    for j in result.inputs:
        host = srcs[j.first_source].hostname or "?"
        if j.pairing is None or j.paired_with is None:
            lines.append(f"{j.path}: host {host}, the reference clock")
            continue
        est, p = j.pairing.estimate, j.pairing
        ref = srcs[result.inputs[j.paired_with].first_source].hostname or "?"
        lines.append(
            f"{j.path}: host {host}, clock {est.offset_ns / 1e3:+.1f} us from {ref}'s "
            f"(+- {est.uncertainty_ns / 1e3:.1f} us, shortest trips {est.d_ab_min_ns / 1e3:.1f} "
            f"/ {est.d_ba_min_ns / 1e3:.1f} us over {est.segments_ab} + {est.segments_ba} "
            f"segments); {p.connections} connection(s), {p.matched} segments matched, "
            f"{len(p.unmatched_sent)} sent unseen, {len(p.unmatched_received)} received "
            "without a send")
    return lines


@click.command("merge")
@click.argument("inputs", nargs=-1, required=True, metavar="TRACE...")
@click.option("-o", "--output", required=True, metavar="OUT", help="Merged trace to write.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
def merge_cmd(inputs: tuple[str, ...], output: str, quiet: bool) -> None:
    """Join traces recorded on different hosts (each its own clock and
    boot) into OUT: both ends of a connection in one timeline. Segments are
    matched by 4-tuple and sequence range; the clock offset of each later
    host against the first is estimated from the shortest one-way trips in
    both directions, and reported with its uncertainty (also in OUT's
    header, and by `kpath replay --stats`). The wire becomes a hop of its
    own. Traces of the same boot, or with no connection in common, are
    refused.

    \b
    Examples:
      kpath merge a.kpath b.kpath -o ab.kpath
      kpath replay ab.kpath --stats
      kpath export ab.kpath -f svg -o ab.svg
    """
    from tracer.merge import merge_traces

    out = Path(output)
    if any(Path(p).resolve() == out.resolve() for p in inputs):
        _fail(f"{output} is an input: write the merge to another file", 2)
    if out.is_dir() or not replaceable(out):
        _fail(f"{output} is not a regular file: give the file to write", 2)
    if not out.parent.is_dir():
        _fail(f"cannot write {output}: no directory {out.parent}", 2)
    try:
        result = merge_traces(list(inputs), out)
    except (TraceFormatError, MergeError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror or exc}")
    if not quiet:
        for line in describe(result):
            click.echo(f"kpath: {line}", err=True)
        click.echo(f"kpath: wrote {output} ({len(result.header.sources)} hosts, {result.events} "
                   f"events)", err=True)
