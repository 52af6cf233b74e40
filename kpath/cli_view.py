"""CLI: `replay` (text or JSON timeline) and `export` (diagrams, Perfetto
JSON, HTML). Wiring only: read trace -> timeline -> selection -> renderer.
Errors are one line on stderr: exit 2 for a bad invocation, 1 when the work itself fails."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, cast

import click

from kpath.cli_types import no_cycle_collection, replaceable
from kpath.console import end_quickly, stdout_failed
from tracer.timeline import Timeline, build_timeline, use_recorded_probes
from tracer.timeline.columnar import (
    Irregular,
    PartedStats,
    PreparedStats,
    stats_of_scan,
    use_system_allocator,
)
from tracer.timeline.event_rules import probe_spec
from tracer.tracefile import Trace, TraceFormatError, probe_specs, read_trace, scan_trace
from tracer.workers import PartPool, WorkerFailed, auto_jobs
from viz.cut_short import cut_short_message, cut_short_note
from viz.stats_columnar import pieces_of, prepared_stats_text

# The renderers are imported by the commands that draw (below): `replay
# --stats` of a large trace should not pay for loading them.
if TYPE_CHECKING:
    from tracer.timeline.groups import GroupPlan
    from viz.exportgroups import Drawn
    from viz.select import Selection, View

EXPORT_FORMATS = ("svg", "png", "pdf", "dot", "mermaid", "plantuml", "perfetto", "html",
                  "parquet", "pcapng")
TEXT_FORMATS = ("svg", "dot", "mermaid", "plantuml", "perfetto", "html")
EXTENSIONS = {"svg": ".svg", "png": ".png", "pdf": ".pdf", "dot": ".dot", "mermaid": ".mmd",
              "plantuml": ".puml", "perfetto": ".perfetto.json", "html": ".html",
              "parquet": ".parquet", "pcapng": ".pcapng"}
FORMAT_OF_SUFFIX = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot",
                    ".mmd": "mermaid", ".mermaid": "mermaid", ".puml": "plantuml",
                    ".plantuml": "plantuml", ".pu": "plantuml", ".json": "perfetto",
                    ".html": "html", ".htm": "html", ".parquet": "parquet",
                    ".pcapng": "pcapng"}
# export rebuilds a trace of more than this many parts of groups
# (tracer/timeline/groups.py PART_EVENTS) in parts (viz/exportgroups.py):
# below, drawing it whole is quicker and small.
PARTS_FROM = 4
# --stats text is written in pieces of about this many characters.
_ECHO_BYTES = 1 << 20


def _fail(msg: str, code: int = 1) -> NoReturn:
    click.echo(f"kpath: error: {msg}", err=True)
    sys.exit(code)


def _read(path: str) -> Trace:
    try:
        trace = read_trace(path)
    except TraceFormatError as exc:
        _fail(str(exc))
    # Renderers describe probes too: by the trace's dictionary, as replay does.
    use_recorded_probes(probe_specs(trace.header.probes))
    return trace


def _load(path: str) -> Timeline:
    return build_timeline(_read(path))


def _flow_number(count: int, path: str, flow: str | None) -> int | None:
    """--flow N as a valid 1-based flow number (one-line error otherwise)."""
    if flow is None:
        return None
    have = f"it has {count} flow{'s' if count != 1 else ''}" + (f": 1..{count}" if count else "")
    try:
        number = int(flow)
    except ValueError:
        _fail(f"--flow wants a flow number, got {flow!r} ({have})", 2)
    if not 1 <= number <= count:
        _fail(f"no flow {number} in {path} ({have})", 2)
    return number


def _echo(text: str, color: bool | None = None) -> None:
    try:
        if "\x1b" in text:  # ANSI codes, which click strips where stdout is no terminal
            click.echo(text, nl=False, color=color)
        else:  # nothing to strip: click's search for codes took 3-4x the write
            sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as exc:
        stdout_failed(exc)


def _out(text: str) -> None:
    """Write to stdout; a closed pipe or a full disk ends kpath with one
    line (kpath/console.py stdout_failed), an error elsewhere is not taken
    for one of stdout's."""
    try:
        sys.stdout.write(text)
    except OSError as exc:
        stdout_failed(exc)


def _flush() -> None:
    try:
        sys.stdout.flush()
    except OSError as exc:
        stdout_failed(exc)


def _stream_json(tl: Timeline, number: int | None) -> None:
    """Written as it is made: the whole document of a big trace would not fit."""
    from viz.jsonout import write_json

    write_json(tl, _out, number)
    _flush()


def _replay_json_windows(file: str) -> None:
    """The whole trace's document, rebuilt in parts of independent groups of
    events (tracer/timeline/groups.py); a trace the groups cannot split is
    rebuilt whole."""
    from tracer.timeline.groups import PART_EVENTS, plan_groups
    from viz.jsongroups import write_json_groups

    use_system_allocator()  # as --stats: mimalloc kept freed pages mapped
    try:
        plan = plan_groups(file)
    except TraceFormatError as exc:
        _fail(str(exc))
    if plan is None:
        trace = _read(file)
        _warn_cut_short(trace)
        if trace.num_events > 4 * PART_EVENTS:
            click.echo(f"kpath: note: {trace.num_events} events rebuilt together (a return of "
                       "a probe not known to return, or a context out of time order)", err=True)
        _stream_json(build_timeline(trace), None)
        return
    use_recorded_probes(probe_specs(plan.trace.header.probes))
    _warn_cut_short(plan.trace)
    if plan.largest > 4 * PART_EVENTS:
        click.echo(f"kpath: note: {plan.largest} of {plan.num_events} events are linked "
                   "together (a connection, socket or thread throughout): rebuilt together",
                   err=True)
    write_json_groups(plan, _out)
    _flush()


def _warn_cut_short(trace: Trace) -> None:
    cut = cut_short_message(trace)
    if cut:
        click.echo(f"kpath: warning: {cut}", err=True)


def replay(file: str, flow: str | None, no_color: bool, out_format: str, stats: bool,
           jobs: int | None, pool: PartPool | None) -> None:
    """`kpath replay` (kpath/cli_replay.py); `pool`: --stats' workers, taken over."""
    if stats:
        _replay_stats(file, flow, out_format, jobs, pool)
        return
    if out_format == "json" and flow is None:
        _replay_json_windows(file)
        return
    tl = _load(file)
    number = _flow_number(len(tl.flows), tl.trace.path, flow)
    cut = cut_short_message(tl.trace)
    if cut:
        click.echo(f"kpath: warning: {cut}", err=True)
    if out_format == "json":
        _stream_json(tl, number)
        return
    from viz.text import render_text

    color = not no_color and "NO_COLOR" not in os.environ and sys.stdout.isatty()
    _echo(render_text(tl, number, color=color), color=color)


def _export_perfetto(tl: Timeline, view: View, output: str) -> None:
    from viz.perfetto import write_perfetto

    def document(write: Callable[[str], object]) -> int:
        write_perfetto(tl, write, view)
        return len(view.drawn_steps)
    _write_perfetto(document, output)



def _big_plan(file: str, warn: bool) -> GroupPlan | None:
    """The groups plan of a trace big enough to be rebuilt in parts (with
    its recorded probes in use), or None: rebuild it whole. With `warn`, a
    cut-short trace is said so now."""
    from tracer.timeline import groups

    try:
        plan = groups.plan_groups(file, groups.PART_EVENTS)
    except TraceFormatError as exc:
        _fail(str(exc))
    if plan is None or plan.num_events <= PARTS_FROM * groups.PART_EVENTS:
        return None
    use_system_allocator()  # as --stats: mimalloc kept freed pages mapped
    use_recorded_probes(probe_specs(plan.trace.header.probes))
    if warn:
        _warn_cut_short(plan.trace)
    return plan

def _export_perfetto_groups(file: str, output: str, sel: Selection) -> bool:
    """The whole trace's timeline (or --from/--to's part of it), rebuilt in
    parts of independent groups of events (viz/perfettogroups.py); False: a
    trace small enough, or one the groups cannot split, is written whole."""
    from viz.perfettogroups import write_perfetto_groups
    from viz.select import SelectionError, window_of

    plan = _big_plan(file, warn=True)
    if plan is None:
        return False
    try:
        # numpy's array bisected as a list: no list of a million ints made
        window = window_of(cast("Sequence[int]", plan.stamps - plan.start_ns), sel)
    except SelectionError as exc:
        _fail(f"{file}: {exc}", 2)
    _write_perfetto(lambda write: write_perfetto_groups(plan, write, window), output)
    return True


def _write_perfetto(document: Callable[[Callable[[str], object]], int], output: str) -> None:
    """Written record by record (the text of a big trace is as big again as
    its records); a file appears only once complete. `document` writes the
    text and says how many steps it drew."""
    if output == "-":
        document(_out)
        _flush()
        return
    out = Path(output)
    # A device or a pipe is written straight: renamed onto, it would be replaced.
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part") if replaceable(out) else out
    try:
        with open(tmp, "w", encoding="ascii") as fh:
            steps = document(fh.write)
        if tmp != out:
            os.replace(tmp, out)
    except OSError as exc:
        if tmp != out:
            tmp.unlink(missing_ok=True)
        _fail(f"cannot write {output}: {exc.strerror or exc}")
    click.echo(f"kpath: wrote {output} (perfetto, {steps} steps)", err=True)


def _export_parquet(file: str, output: str) -> None:
    """The five tables, rebuilt in parts of independent groups of events (as
    replay --format json); a trace the groups cannot split, in windows."""
    from tracer.timeline.groups import plan_groups
    from tracer.timeline.windows import Plan
    from viz.parquet import write_parquet

    if Path(output).exists() and not Path(output).is_dir():
        _fail(f"parquet writes a directory of tables: {output} is a file", 2)
    use_system_allocator()  # as --stats: mimalloc kept freed pages mapped
    try:
        groups = plan_groups(file)
    except TraceFormatError as exc:
        _fail(str(exc))
    plan: Plan | GroupPlan
    if groups is None:
        trace = _read(file)
        plan = Plan(trace)
    else:
        use_recorded_probes(probe_specs(groups.trace.header.probes))
        trace, plan = groups.trace, groups
    _warn_cut_short(trace)
    try:
        written = write_parquet(plan, output, file)
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror or exc}")
    rows = ", ".join(f"{name} {n}" for name, n in written.rows.items())
    click.echo(f"kpath: wrote {output} (parquet: {rows} rows)", err=True)


def _in_parts(fmt: str, flow: str | None, ranges: list[tuple[int, int]],
              sel: Selection) -> bool:
    """What viz/exportgroups.py draws: every selection of the diagrams, and
    Perfetto's narrowed ones (its every-event timeline, with or without
    --from/--to, is viz/perfettogroups.py's)."""
    if fmt == "pcapng":
        return False
    return fmt != "perfetto" or flow is not None or bool(ranges) or sel.max_steps is not None


def _export_groups(file: str, flow: str | None, ranges: list[tuple[int, int]],
                   sel: Selection) -> Drawn | None:
    """The view of a big trace rebuilt in parts of independent groups of
    events, only the parts drawn kept (viz/exportgroups.py); None: a trace
    small enough, or one the groups cannot split, is drawn whole."""
    from dataclasses import replace

    from viz.exportgroups import drawn, survey
    from viz.select import SelectionError, expand_steps, window_of

    plan = _big_plan(file, warn=False)
    if plan is None:
        return None
    # A bad --from/--to is told after a bad --flow, as of the whole timeline.
    bad_window: SelectionError | None = None
    try:
        window = window_of(cast("Sequence[int]", plan.stamps - plan.start_ns), sel)
    except SelectionError as exc:
        window, bad_window = None, exc
    every_flow = flow is None and not ranges
    sv = survey(plan, sel.fold and every_flow, window,
                step_ids=every_flow and sel.max_steps is not None)
    number = _flow_number(len(sv.flows), plan.trace.path, flow)
    _warn_cut_short(plan.trace)
    try:
        steps = tuple(expand_steps(ranges, sv.steps))
        if bad_window is not None:
            raise bad_window
        return drawn(plan, sv, replace(sel, flow=number, steps=steps), window)
    except SelectionError as exc:
        _fail(f"{file}: {exc}", 2)


def _export_pcapng(tl: Timeline, flow: int | None, output: str) -> None:
    from kpath import __version__
    from viz.pcapng import render_pcapng

    done = render_pcapng(tl, f"kpath {__version__}", flow)
    if not done.packets:
        _no_frames(tl.trace.path)
    try:
        Path(output).write_bytes(done.data)
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror or exc}")
    _wrote_pcapng(output, done.packets, len(done.interfaces), done.same_frame)


def _export_pcapng_groups(file: str, output: str, flow: str | None) -> bool:
    """Every captured frame of a big trace (or of --flow N), rebuilt in
    parts of independent groups of events (viz/pcapnggroups.py); False: a
    trace small enough, or one the groups cannot split, is written whole."""
    from kpath import __version__
    from viz.exportgroups import survey
    from viz.pcapnggroups import OneFlow, write_pcapng_groups

    plan = _big_plan(file, warn=flow is None)
    if plan is None:
        return False
    one = None
    if flow is not None:
        # Pass 1 numbers the flows (and steps) as the whole timeline does.
        sv = survey(plan, fold=False)
        number = _flow_number(len(sv.flows), plan.trace.path, flow)
        _warn_cut_short(plan.trace)
        fs = sv.flows[cast(int, number) - 1]
        one = OneFlow(fs.part, fs.local, sv.step_id[fs.part])
    out = Path(output)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part") if replaceable(out) else out
    try:
        with open(tmp, "wb") as fh:
            done = write_pcapng_groups(plan, f"kpath {__version__}", fh.write, one)
        if done.packets and tmp != out:
            os.replace(tmp, out)
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror or exc}")
    finally:
        if tmp != out:
            tmp.unlink(missing_ok=True)
    if not done.packets:
        _no_frames(plan.trace.path)
    _wrote_pcapng(output, done.packets, len(done.interfaces), done.same_frame)
    return True


def _no_frames(path: str) -> NoReturn:
    _fail(f"{path}: no captured frames to export (recorded before kpath captured "
          "frames, or without a device-layer probe: __dev_queue_xmit, "
          "__netif_receive_skb_core)")


def _wrote_pcapng(output: str, packets: int, n: int, same_frame: int) -> None:
    folded = (f"; {same_frame} loopback receive captures in their transmit's comment"
              if same_frame else "")
    click.echo(f"kpath: wrote {output} (pcapng, {packets} packets on {n} "
               f"interface{'s' if n != 1 else ''}{folded})", err=True)


def _replay_stats(file: str, flow: str | None, out_format: str, jobs: int | None,
                  pool: PartPool | None) -> None:
    """--stats on columns (tracer/timeline/columnar), read batch by batch
    from the file (a version 2 file twice: rebuilt in parts); a trace
    needing a rule only the object timeline has goes through build_timeline,
    as before."""
    prepared: PreparedStats | PartedStats | None = None
    tl: Timeline | None = None
    use_system_allocator()
    try:
        try:
            scan = scan_trace(file)
        except BaseException:
            if pool is not None:
                pool.close()
            raise
        use_recorded_probes(probe_specs(scan.header.probes))
        path = scan.path
        with scan:
            try:
                prepared = stats_of_scan(
                    scan, lambda: scan_trace(file), probe_spec,
                    auto_jobs() if jobs is None else jobs,
                    lambda text: click.echo(f"kpath: note: {text}", err=True), pieces_of, pool)
                count = prepared.flow_count
                cut = cut_short_note(prepared.inp.cut_short)
            except Irregular as exc:
                click.echo(f"kpath: note: --stats through the object timeline: {exc}",
                           err=True)
    except (TraceFormatError, WorkerFailed) as exc:
        _fail(str(exc))
    if prepared is None:
        trace = _read(file)
        cut = cut_short_message(trace)
        tl = build_timeline(trace)
        count = len(tl.flows)
    number = _flow_number(count, path, flow)
    if cut:
        click.echo(f"kpath: warning: {cut}", err=True)
    if out_format != "text":
        _fail("--stats prints text tables: drop --format json", 2)
    if prepared is not None:
        # Written a piece at a time: the whole text of a large trace is
        # bigger than the tables it is printed from.
        pieces: list[str] = []
        size = 0
        for piece in prepared_stats_text(prepared, number):
            pieces.append(piece)
            size += len(piece)
            if size >= _ECHO_BYTES:
                _echo("".join(pieces))
                pieces, size = [], 0
        _echo("".join(pieces))
        end_quickly()  # its workers are gone, its scratch files nameless
    else:
        from viz.stats_text import render_stats

        assert tl is not None
        _echo(render_stats(tl, number))


@click.command("export")
@click.argument("file", metavar="FILE")
@click.option("-f", "--format", "fmt", metavar="FORMAT",
              help=f"{'|'.join(EXPORT_FORMATS)} (default: from -o's suffix, else svg).")
@click.option("-o", "--output", metavar="OUT",
              help="File to write, '-' for stdout (text formats). Default: FILE with "
                   "the format's suffix.")
@click.option("--flow", metavar="N", help="Only flow N (default: all flows, one after another).")
@click.option("--packet", "packets", metavar="N[,M|-M]",
              help="Only these steps (numbers as `kpath replay` shows them: #N).")
@click.option("--from", "start", metavar="T|I",
              help="From this time offset (1.5ms, 200us, 2s) or event index (120).")
@click.option("--to", "end", metavar="T|I", help="Up to this time offset or event index.")
@click.option("--max-packets", type=click.IntRange(min=1), metavar="N",
              help="Draw at most the first N steps.")
@click.option("--no-fold", is_flag=True,
              help="Never fold repeated steps (big traces are folded by default).")
@no_cycle_collection
def export_cmd(file: str, fmt: str | None, output: str | None, flow: str | None,
               packets: str | None, start: str | None, end: str | None,
               max_packets: int | None, no_fold: bool) -> None:
    """Draw a trace: a sequence diagram with lifelines for each side's app,
    syscall, socket, TCP, IP, qdisc/device and driver layers, one arrow per
    event, coloured by execution context (svg, png, pdf, dot, mermaid,
    plantuml); a Perfetto / chrome://tracing timeline (perfetto); or one
    offline HTML page with the diagram, a latency table and filters (html);
    the packets as the devices had them, for Wireshark (pcapng: one block
    per captured frame, each with comments giving its kernel path, per-hop
    latency and the send/recv it belongs to; --flow only).

    A trace of more than 200 steps or 600 events is summarised unless
    narrowed (and any picture is capped at 400 steps / 600 arrows): repeated
    steps of the same shape are drawn once with a count (x37); stderr says
    what was folded.

    \b
    Examples:
      kpath export chat.kpath -f svg -o chat.svg
      kpath export chat.kpath -o chat.pdf --flow 1
      kpath export chat.kpath -f mermaid -o - >> README.md
      kpath export bulk.kpath -f html --flow 1 --from 2ms --to 3.5ms
      kpath export bulk.kpath -f perfetto -o bulk.perfetto.json   # open in ui.perfetto.dev
      kpath export chat.kpath -f dot -o chat.dot   # then: neato -n2 -Tpng chat.dot
      kpath export chat.kpath -f parquet -o chat/   # tables for DuckDB, Spark (docs/parquet.md)
      kpath export chat.kpath -f pcapng -o chat.pcapng   # then: wireshark chat.pcapng
    """
    from viz import graphviz_render
    from viz.html import render_html
    from viz.mermaid import render_mermaid_checked
    from viz.plantuml import render_plantuml
    from viz.select import (
        Selection,
        SelectionError,
        expand_steps,
        parse_bound,
        parse_step_ranges,
        select,
    )
    from viz.sequence import build_sequence

    if fmt is None:
        suffix = Path(output).suffix.lower() if output and output != "-" else ""
        fmt = FORMAT_OF_SUFFIX.get(suffix, "svg")
    fmt = fmt.lower()
    if fmt not in EXPORT_FORMATS:
        _fail(f"unknown format {fmt!r} (choose from: {', '.join(EXPORT_FORMATS)})", 2)
    if output == "-" and fmt not in TEXT_FORMATS:
        where = "a directory with -o DIR" if fmt == "parquet" else "a file with -o FILE"
        _fail(f"{fmt} is binary: write it to {where}", 2)
    if fmt == "pcapng" and (packets or start or end or max_packets):
        _fail("pcapng takes no step or time selection (only --flow)", 2)
    if output is None:
        base = Path(file)
        output = str(base.with_name(base.stem + EXTENSIONS[fmt]))
    if output != "-" and Path(output).resolve() == Path(file).resolve():
        _fail(f"refusing to overwrite the trace {file} with the diagram", 2)
    if fmt == "parquet":
        narrowed = [opt for opt, v in (("--flow", flow), ("--packet", packets), ("--from", start),
                                       ("--to", end), ("--max-packets", max_packets)) if v]
        if narrowed:
            _fail(f"parquet holds the whole trace: drop {', '.join(narrowed)} and select "
                  "with SQL (kpath query)", 2)
        _export_parquet(file, output)
        return
    try:
        ranges = parse_step_ranges(packets) if packets else []
        sel = Selection(
            start=parse_bound(start) if start is not None else None,
            end=parse_bound(end) if end is not None else None,
            max_steps=max_packets, fold=not no_fold and fmt != "perfetto",
            cap=fmt != "perfetto")
    except SelectionError as exc:
        _fail(str(exc), 2)
    if (fmt == "perfetto" and flow is None and not ranges and sel.max_steps is None
            and _export_perfetto_groups(file, output, sel)):
        return
    if fmt == "pcapng" and _export_pcapng_groups(file, output, flow):
        return
    unattributed: int | None = None
    parted = None
    if _in_parts(fmt, flow, ranges, sel):
        parted = _export_groups(file, flow, ranges, sel)
    if parted is not None:
        tl, view, unattributed = parted.timeline, parted.view, parted.unattributed
    else:
        tl = _load(file)
        number = _flow_number(len(tl.flows), tl.trace.path, flow)
        cut = cut_short_message(tl.trace)
        if cut:
            click.echo(f"kpath: warning: {cut}", err=True)
        if fmt == "pcapng":  # every captured frame: no step selection, nothing folded
            _export_pcapng(tl, number, output)
            return
        try:
            steps = tuple(expand_steps(ranges, len(tl.steps)))
            view = select(tl, Selection(flow=number, steps=steps, start=sel.start, end=sel.end,
                                        max_steps=sel.max_steps, fold=sel.fold, cap=sel.cap))
        except SelectionError as exc:
            _fail(f"{file}: {exc}", 2)
    for notice in view.notices:
        click.echo(f"kpath: {notice}", err=True)
    if fmt == "perfetto":
        _export_perfetto(tl, view, output)
        return
    what = ""
    try:
        diagram = build_sequence(tl, view=view, unattributed=unattributed)
        what = f"{len(diagram.arrows)} arrows"
        if fmt == "mermaid":
            text, cut_note = render_mermaid_checked(diagram)
            if cut_note:
                click.echo(f"kpath: {cut_note}", err=True)
            data = text.encode()
        elif fmt == "plantuml":
            data = render_plantuml(diagram).encode()
        elif fmt == "html":
            svg = graphviz_render.render(diagram, "svg")
            data = render_html(tl, view, diagram, svg).encode()
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
    click.echo(f"kpath: wrote {output} ({fmt}, {what})", err=True)
