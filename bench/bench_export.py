"""Export benchmark on a SYNTHETIC 10,000-packet trace.

The trace is made, not recorded (bench/synth.py): whole copies of the real
recording tests/data/hello_hi.kpath (handshake, hello/hi exchange, close),
each a connection of its own (ports, addresses, threads, sockets, sequence
numbers moved consistently), overlapping in time like a busy host, until it
holds --packets packets. The bench refuses a trace whose `replay --stats`
shows a MISMATCH or a warning the recording does not have. Then each export
format is timed as a user runs it (`kpath export` in a subprocess: read,
rebuild, select, render, write; wall and CPU time, as bench_replay.py
measures), with the default summarisation and with `--flow 1` (one
connection). Prints a table; bench/README.md records measured results.

Usage: .venv/bin/python bench/bench_export.py [--packets N] [--formats svg,html,...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_replay import measure  # noqa: E402
from bench.synth import inconsistency, write_synthetic  # noqa: E402
from tracer.timeline import Packet, build_timeline  # noqa: E402
from tracer.tracefile import read_trace  # noqa: E402

FORMATS = ("svg", "png", "pdf", "dot", "mermaid", "plantuml", "perfetto", "html")
NARROW = ["--flow", "1"]  # one connection of the busy host


def synthetic_trace(source: Path, packets: int, out: Path) -> tuple[int, int, int]:
    """Write the synthetic trace (bench/synth.py: whole consistent copies of
    the recording, overlapping in time); returns (events, packets, copies)."""
    tl = build_timeline(read_trace(source))
    per_copy = sum(1 for st in tl.steps if isinstance(st, Packet))
    copies = max(1, -(-packets // per_copy))
    res = write_synthetic(source, out, copies)
    return res.events, copies * per_copy, copies


def time_export(trace: Path, fmt: str, extra: list[str], outdir: Path) -> str:
    """'wall (CPU) size' of one export, run as a user runs it."""
    out = outdir / f"bench.{fmt}"
    cmd = [sys.executable, "-m", "kpath", "export", str(trace), "-f", fmt, "-o", str(out), *extra]
    res = measure(fmt, cmd, 0, timeout=600, rss_cap=8 << 30)
    if not res.ok:
        return res.status[:40]
    cpu = f"({res.cpu:.1f})" if res.cpu is not None else "(?)"
    return f"{res.wall:5.1f} s {cpu:>6} {out.stat().st_size / 1024:>9,.0f} KiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=10_000)
    ap.add_argument("--source", type=Path, default=ROOT / "tests" / "data" / "hello_hi.kpath")
    ap.add_argument("--formats", default=",".join(FORMATS))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kpath-bench-") as tmp:
        trace = Path(tmp) / f"synthetic_{args.packets}_packets.kpath"
        t0 = time.monotonic()
        n_events, n_packets, copies = synthetic_trace(args.source, args.packets, trace)
        print(f"synthetic trace: {n_packets} packets, {n_events} events, {copies} flows, "
              f"{trace.stat().st_size / 1e6:.1f} MB, made in {time.monotonic() - t0:.1f} s "
              f"from {args.source.name}")
        # A benchmark on an inconsistent trace measures the wrong code paths.
        problem = inconsistency(args.source, trace, copies)
        if problem:
            sys.exit(f"synthetic trace is inconsistent: {problem}")
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "kpath", "replay", str(trace), "--format", "json"],
                       capture_output=True, cwd=ROOT, check=True)
        print(f"baseline (read + rebuild + replay --format json): {time.monotonic() - t0:.1f} s")
        print()
        print(f"wall (CPU) time and output size; load average {os.getloadavg()[0]:.2f}")
        cols = ("format", "default (summarised)", " ".join(NARROW))
        print(f"| {cols[0]:<9} | {cols[1]:>28} | {cols[2]:>28} |")
        print(f"|{'-' * 11}|{'-' * 30}|{'-' * 30}|")
        for fmt in args.formats.split(","):
            a = time_export(trace, fmt, [], Path(tmp))
            b = time_export(trace, fmt, NARROW, Path(tmp))
            print(f"| {fmt:<9} | {a:>28} | {b:>28} |", flush=True)
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
