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
connection), on the trace in format v2 (what `kpath trace` writes; the v1
output converted by `kpath convert`) and, with --trace-formats v2,v1, as
written (v1, JSON Lines). --baseline DIR times another checkout of kpath
(e.g. main) on the same files in the same run, command by command, and checks
that both write the same bytes. Prints a table; bench/README.md records
measured results.

Usage: .venv/bin/python bench/bench_export.py [--packets N] [--formats svg,html,...]
       [--trace-formats v2,v1] [--baseline ../main]
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
from bench.synth import convert_argv, convert_help, inconsistency, write_synthetic  # noqa: E402
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


def kpath_argv(checkout: Path | None) -> list[str]:
    """`python -m kpath` of this checkout, or of `checkout`."""
    if checkout is None:
        return [sys.executable, "-m", "kpath"]
    run = (f"import sys; sys.path.insert(0, {str(checkout.resolve())!r}); "
           "from kpath.cli import main; main()")
    return [sys.executable, "-c", run]


def time_export(trace: Path, fmt: str, extra: list[str], out: Path,
                checkout: Path | None = None) -> str:
    """'wall (CPU) size' of one export, run as a user runs it."""
    cmd = [*kpath_argv(checkout), "export", str(trace), "-f", fmt, "-o", str(out), *extra]
    res = measure(fmt, cmd, 0, timeout=600, rss_cap=8 << 30)
    if not res.ok:
        return res.status[:40]
    cpu = f"({res.cpu:.1f})" if res.cpu is not None else "(?)"
    return f"{res.wall:5.1f} s {cpu:>6} {out.stat().st_size / 1024:>9,.0f} KiB"


def as_v2(v1: Path) -> Path:
    """The trace converted to format v2 by this kpath's `kpath convert`."""
    help_text = convert_help()
    argv = convert_argv(help_text, v1, v1.with_suffix(".v2.kpath")) if help_text else None
    if argv is None:
        sys.exit("trace format v2: this kpath has no usable `kpath convert`")
    subprocess.run([*argv, "-q"], check=True, cwd=ROOT, capture_output=True)
    return v1.with_suffix(".v2.kpath")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=10_000)
    ap.add_argument("--source", type=Path, default=ROOT / "tests" / "data" / "hello_hi.kpath")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--trace-formats", default="v2",
                    help="v2 (converted), v1 (as written), or both: v2,v1")
    ap.add_argument("--baseline", type=Path,
                    help="another kpath checkout timed beside this one (same files)")
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
        traces = {"v1": trace}
        if "v2" in args.trace_formats.split(","):
            traces["v2"] = as_v2(trace)
            print(f"converted to v2: {traces['v2'].stat().st_size / 1e6:.1f} MB")
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "kpath", "replay", str(trace), "--format", "json"],
                       capture_output=True, cwd=ROOT, check=True)
        print(f"baseline (read + rebuild + replay --format json): {time.monotonic() - t0:.1f} s")
        print()
        print(f"wall (CPU) time and output size; load average {os.getloadavg()[0]:.2f}")
        runs = [("this", None)] + ([("baseline", args.baseline)] if args.baseline else [])
        cols = ["trace", "format", "kpath"]
        print(f"| {cols[0]} | {cols[1]:<9} | {cols[2]:<8} | {'default (summarised)':>28} "
              f"| {' '.join(NARROW):>28} |")
        print(f"|-------|{'-' * 11}|{'-' * 10}|{'-' * 30}|{'-' * 30}|")
        for version in args.trace_formats.split(","):
            for fmt in args.formats.split(","):
                outs: dict[str, list[Path]] = {}
                for who, checkout in runs:  # side by side, command by command
                    outs[who] = [Path(tmp) / f"{who}.{i}.{fmt}" for i in range(2)]
                    a = time_export(traces[version], fmt, [], outs[who][0], checkout)
                    b = time_export(traces[version], fmt, NARROW, outs[who][1], checkout)
                    print(f"| {version:<5} | {fmt:<9} | {who:<8} | {a:>28} | {b:>28} |",
                          flush=True)
                if args.baseline and not all(
                        p.exists() and q.exists() and p.read_bytes() == q.read_bytes()
                        for p, q in zip(outs["this"], outs["baseline"], strict=True)):
                    print(f"  !! {version} {fmt}: not the same bytes as the baseline")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
