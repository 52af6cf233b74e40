"""Trace file benchmark: reading version 1 (JSON Lines) into columns, and
writing and reading version 2 (Arrow stream) with each buffer compression.

Input: a big version 1 trace, e.g. a SYNTHETIC one made by bench/synth.py
(`python -m bench.synth tests/data/bulk_1mib.kpath -o big.kpath --events
2000000`). Each step runs in-process, timed with time.perf_counter; the
baseline is a bare json.loads over every line. Prints a table;
docs/trace-format.md records measured results.

Usage: .venv/bin/python bench/bench_format.py BIG_V1.kpath [--strict-lines N] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402

from tracer.events import EVENT_SCHEMA, Event, events_to_batch  # noqa: E402
from tracer.tracefile import TraceWriter, read_trace, scan_trace  # noqa: E402
from tracer.tracefile.convert import _batches, self_described  # noqa: E402


def timed(label: str, rows: list[tuple[str, str]], fn, per: int | None = None,  # type: ignore[no-untyped-def]
          repeat: int = 1):
    """The best of `repeat` runs: on a shared machine the others' load only
    ever adds time."""
    dt = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        dt = min(dt, time.perf_counter() - t0)
    note = f"{dt:.2f} s"
    if per:
        note += f" ({dt / per * 1e6:.2f} s per million events)"
    rows.append((label, note))
    print(f"{label:60s} {note}", flush=True)
    return out, dt


def bare_json(path: Path) -> int:
    n = 0
    with path.open("rb") as fh:
        for line in fh:
            json.loads(line)
            n += 1
    return n


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
    args = ap.parse_args()
    rows: list[tuple[str, str]] = []
    size = args.v1.stat().st_size
    print(f"{args.v1}: {size / 1e6:.1f} MB")
    lines, base = timed("bare json.loads over every line (baseline)", rows,
                        lambda: bare_json(args.v1), repeat=args.repeat)
    trace, _ = timed("v1 -> columns: read_trace (pyarrow.json fast path)", rows,
                     lambda: read_trace(args.v1), repeat=args.repeat)
    n = trace.table.num_rows
    print(f"  {n} events, {lines} lines")

    def scan_count() -> int:
        with scan_trace(args.v1) as scan:
            return sum(b.num_rows for b in scan)

    timed("v1 -> columns: scan_trace (bounded memory)", rows, scan_count, n,
          repeat=args.repeat)
    k = min(args.strict_lines, n)
    _, dt = timed(f"v1 -> columns: json.loads + Event + events_to_batch ({k} events)", rows,
                  lambda: strict_lines(args.v1, k), k)
    rows.append(("  extrapolated to all events", f"{dt * n / k:.2f} s"))
    print(f"  extrapolated to all events: {dt * n / k:.2f} s")

    header = self_described(trace.header, trace.table)
    with tempfile.TemporaryDirectory() as tmp:
        for comp in (None, "lz4", "zstd"):
            out = Path(tmp) / f"big.{comp or 'none'}.kpath"

            def write(out: Path = out, comp: str | None = comp) -> None:
                w = TraceWriter(out, header, compression=comp)
                for batch in _batches(trace.table, header.probe_names):
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
            assert t2.table.slice(0, 1000).to_pylist() == pa.Table.from_batches(
                list(_batches(trace.table, header.probe_names))).slice(0, 1000).to_pylist()
    assert EVENT_SCHEMA.names == trace.table.schema.names
    print("\n| step | time |\n| --- | --- |")
    for label, note in rows:
        print(f"| {label} | {note} |")
    print(f"\nbaseline: {base:.2f} s for {lines} lines")


if __name__ == "__main__":
    main()
