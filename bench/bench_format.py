"""Trace file benchmark: reading version 1 (JSON Lines) into columns, the
JSON decoders it could use, `kpath convert` v1 -> v2 as a process (time and
peak RSS beside a bare json.loads process), and writing and reading version
2 (Arrow stream) with each buffer compression.

Input: a big version 1 trace, e.g. a SYNTHETIC one made by bench/synth.py
(`python -m bench.synth tests/data/hello_hi.kpath -o big.kpath --events
2000000`, then `python -m kpath convert big.kpath --to jsonl -o big.jsonl`).
In-process steps are timed with time.perf_counter and process_time; the
baseline is a bare json.loads over every line. Prints a table;
docs/trace-format.md and bench/README.md record measured results.

Usage: .venv/bin/python bench/bench_format.py BIG_V1.kpath [--strict-lines N] [--repeat N]
           [--only decoders|convert|compression]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.json as pj  # noqa: E402

from tracer.events import EVENT_SCHEMA, Event, events_to_batch  # noqa: E402
from tracer.tracefile import TraceWriter, read_trace, scan_trace  # noqa: E402
from tracer.tracefile.convert import self_described  # noqa: E402
from tracer.tracefile.jsonl import CHUNK_BYTES, read_chunks  # noqa: E402

PY = sys.executable
BARE_JSON = "import json, sys\nfor line in open(sys.argv[1], 'rb'): json.loads(line)\n"


def timed(label: str, rows: list[tuple[str, str]], fn, per: int | None = None,  # type: ignore[no-untyped-def]
          repeat: int = 1):
    """The best of `repeat` runs, wall and CPU (this process's, all its
    threads): on a shared machine the others' load only ever adds time,
    and inflates wall time most."""
    dt = cpu = float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        dt = min(dt, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    note = f"{dt:.2f} s wall, {cpu:.2f} s CPU"
    if per:
        note += f" ({cpu / per * 1e6:.2f} s CPU per million events)"
    rows.append((label, note))
    print(f"{label:60s} {note}", flush=True)
    return out, cpu


def bare_json(path: Path) -> int:
    n = 0
    with path.open("rb") as fh:
        for line in fh:
            json.loads(line)
            n += 1
    return n


def runs(path: Path):  # type: ignore[no-untyped-def]
    """The version 1 reader's runs of lines (after the header)."""
    with path.open("rb") as fh:
        fh.readline()
        yield from read_chunks(fh, str(path), 2, CHUNK_BYTES)


def chunks(path: Path):  # type: ignore[no-untyped-def]
    """The same runs, as text (no trailing newline) and their line count."""
    for run in runs(path):
        yield run.text().rstrip(b"\n"), max(len(run.newlines), 1)


def decode_schema(path: Path) -> int:
    """msgspec against the schema (Run.decode, as the reader), no columns."""
    return sum(len(run.decode() or ()) for run in runs(path))


def decode_msgspec_untyped(path: Path) -> int:
    return sum(len(msgspec.json.decode(b"[" + body.replace(b"\n", b",") + b"]"))
               for body, _ in chunks(path))


def decode_orjson(path: Path) -> int:
    import orjson  # optional: only for this comparison
    return sum(len([orjson.loads(line) for line in body.split(b"\n")])
               for body, _ in chunks(path))


def decode_pyarrow_json(path: Path) -> int:
    """pyarrow's JSON reader straight into columns (the version 1 reader
    before the schema: event and lost objects, explicit types)."""
    ev = pa.struct([(f.name, pa.string() if pa.types.is_dictionary(f.type)
                     or f.name in ("saddr", "daddr") else f.type) for f in EVENT_SCHEMA])
    schema = pa.schema([("event", ev), ("lost", pa.struct([("ts_ns", pa.int64()),
                                                            ("count", pa.int64())]))])
    opts = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    return sum(pj.read_json(pa.BufferReader(body), parse_options=opts).num_rows
               for body, _ in chunks(path))


def run_measured(argv: list[str]) -> tuple[float, float, int]:
    """A process under /usr/bin/time -v: (wall s, user+sys CPU s, peak RSS KiB)."""
    out = subprocess.run(["/usr/bin/time", "-v", *argv], capture_output=True, text=True,
                         check=True, cwd=ROOT).stderr
    field = dict(re.findall(r"^\s*(.+?): (.+)$", out, re.M))
    h, m, sec = (["0", *field["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":")])[-3:]
    wall = int(h) * 3600 + int(m) * 60 + float(sec)
    cpu = float(field["User time (seconds)"]) + float(field["System time (seconds)"])
    return wall, cpu, int(field["Maximum resident set size (kbytes)"])


def convert_side_by_side(v1: Path, runs: int) -> None:
    """`kpath convert` v1 -> v2 and a bare json.loads pass, each a process,
    alternating, `runs` times each."""
    print("\n| run | process | wall | CPU (user+sys) | peak RSS |\n| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.kpath"
        for run in range(1, runs + 1):
            res = {}
            for label, argv in (
                    ("json.loads", [PY, "-c", BARE_JSON, str(v1)]),
                    ("kpath convert", [PY, "-m", "kpath", "convert", str(v1), "-o", str(out),
                                       "-q"])):
                res[label] = run_measured(argv)
                wall, cpu, rss = res[label]
                print(f"| {run} | {label} | {wall:.2f} s | {cpu:.2f} s | {rss / 1024:.0f} MiB |",
                      flush=True)
            (jw, jc, _), (cw, cc, _) = res["json.loads"], res["kpath convert"]
            print(f"| {run} | convert / json.loads | {cw / jw:.2f}x | {cc / jc:.2f}x | |")


def strict_lines(path: Path, limit: int) -> int:
    """The object path a json.loads loop takes: Event per line, then columns."""
    events = []
    with path.open("rb") as fh:
        names = [p["name"] for p in json.loads(fh.readline())["header"]["probes"]]
        for line in fh:
            rec = json.loads(line)
            if "event" in rec:
                events.append(Event.from_record(rec["event"]))
                if len(events) >= limit:
                    break
    events_to_batch(events, names)
    return len(events)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("v1", type=Path)
    ap.add_argument("--strict-lines", type=int, default=200_000,
                    help="events for the json.loads + events_to_batch comparison")
    ap.add_argument("--repeat", type=int, default=3, help="runs per step; the best is kept")
    ap.add_argument("--only", choices=("decoders", "convert", "compression"),
                    help="one section (default: all)")
    args = ap.parse_args()
    rows: list[tuple[str, str]] = []
    size = args.v1.stat().st_size
    print(f"{args.v1}: {size / 1e6:.1f} MB")
    if args.only in (None, "convert"):
        convert_side_by_side(args.v1, args.repeat)
    if args.only in (None, "decoders"):
        decoders(args, rows)
    if args.only in (None, "compression"):
        compression(args, rows)
    print("\n| step | time |\n| --- | --- |")
    for label, note in rows:
        print(f"| {label} | {note} |")


def decoders(args: argparse.Namespace, rows: list[tuple[str, str]]) -> None:
    lines, base = timed("bare json.loads over every line (baseline)", rows,
                        lambda: bare_json(args.v1), repeat=args.repeat)

    def scan_count() -> int:
        with scan_trace(args.v1) as scan:
            return sum(b.num_rows for b in scan)

    n, _ = timed("v1 -> columns: scan_trace (schema, msgspec; bounded memory)", rows,
                 scan_count, repeat=args.repeat)
    print(f"  {n} events, {lines} lines")
    timed("  decode only: msgspec against the schema", rows,
          lambda: decode_schema(args.v1), n, repeat=args.repeat)
    timed("  decode only: msgspec, untyped", rows,
          lambda: decode_msgspec_untyped(args.v1), n, repeat=args.repeat)
    timed("  decode to columns: pyarrow.json, explicit schema", rows,
          lambda: decode_pyarrow_json(args.v1), n, repeat=args.repeat)
    if os.environ.get("BENCH_ORJSON", "1") != "0":
        try:
            timed("  decode only: orjson per line", rows, lambda: decode_orjson(args.v1), n,
                  repeat=args.repeat)
        except ImportError:
            print("  (orjson not installed: skipped)")
    k = min(args.strict_lines, n)
    _, dt = timed(f"v1 -> columns: json.loads + Event + events_to_batch ({k} events)", rows,
                  lambda: strict_lines(args.v1, k), k)
    rows.append(("  extrapolated to all events", f"{dt * n / k:.2f} s"))
    print(f"  extrapolated to all events: {dt * n / k:.2f} s; baseline {base:.2f} s")


def compression(args: argparse.Namespace, rows: list[tuple[str, str]]) -> None:
    trace = read_trace(args.v1)
    n = trace.table.num_rows
    names: list[str] = []
    for chunk in trace.table.column("probe").chunks:
        names.extend(v for v in chunk.dictionary.to_pylist() if v not in names)
    header = self_described(trace.header, names)
    # The probe column against the header's whole dictionary, as convert writes it.
    table = pa.Table.from_batches(
        [events_to_batch(trace.events[:0], list(header.probe_names))]).cast(EVENT_SCHEMA)
    table = pa.concat_tables([table, trace.table.cast(EVENT_SCHEMA)]).unify_dictionaries()
    batches = table.combine_chunks().to_batches(max_chunksize=65536)
    with tempfile.TemporaryDirectory() as tmp:
        for comp in (None, "lz4", "zstd"):
            out = Path(tmp) / f"big.{comp or 'none'}.kpath"

            def write(out: Path = out, comp: str | None = comp) -> None:
                w = TraceWriter(out, header, compression=comp)
                for batch in batches:
                    w.write_batch(batch)
                w.close("bench")

            timed(f"v2 write, compression {comp}", rows, write, n, repeat=args.repeat)
            mb = out.stat().st_size / 1e6
            rows.append((f"  v2 size, compression {comp}",
                         f"{mb:.1f} MB ({mb * 1e6 / n:.1f} B/event)"))
            print(f"  size {mb:.1f} MB ({mb * 1e6 / n:.1f} B/event)")
            t2, _ = timed(f"v2 read_trace -> table, compression {comp}", rows,
                          lambda out=out: read_trace(out), n, repeat=args.repeat)
            assert t2.table.num_rows == n
            assert t2.table.slice(0, 1000).to_pylist() == table.slice(0, 1000).to_pylist()


if __name__ == "__main__":
    main()
