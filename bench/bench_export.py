"""Export benchmark on a SYNTHETIC 10,000-packet trace.

The trace is made, not recorded: the real hello/hi exchange of
tests/data/hello_hi.kpath (its events from the first data send up to the
first FIN) is replayed over and over after the real handshake, each copy
shifted in time and in sequence numbers (each side's stream by the bytes
that side sent in one copy), until it holds --packets packets. Then each
export format is timed as a user runs it (`kpath export` in a subprocess:
read, rebuild, select, render, write), with the default summarisation and
with `--flow 1 --max-packets 200`. Prints a table; bench/README.md records
measured results.

Usage: .venv/bin/python bench/bench_export.py [--packets N] [--formats svg,html,...]
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from probes.catalog import Capture  # noqa: E402
from tracer.events import Event  # noqa: E402
from tracer.timeline import Message, Packet, Timeline, build_timeline, capture_of  # noqa: E402
from tracer.tracefile import TraceWriter, read_trace  # noqa: E402

FORMATS = ("svg", "png", "pdf", "dot", "mermaid", "plantuml", "perfetto", "html")
SEQ_MOD = 1 << 32


def synthetic_trace(source: Path, packets: int, out: Path) -> tuple[int, int]:
    """Write the synthetic trace; returns (events, packets) written."""
    trace = read_trace(source)
    tl = build_timeline(trace)
    fl = tl.flows[0]
    first_msg = next(st for st in fl.steps if isinstance(st, Message))
    fin = next((st for st in fl.steps if isinstance(st, Packet) and st.segment.flags & 0x01),
               None)
    lo = first_msg.events[0].index
    hi = fin.events[0].index if fin is not None else len(tl.events)
    # End the block where every byte sent in it has been read: before the
    # last send whose bytes are read only after the FIN (the chat's "quit").
    # A block that sends more than it reads shifts every later copy's reads
    # off the stream order (replay --stats would report MISMATCH).
    unread = [st for st in fl.steps if isinstance(st, Message) and st.op == "send"
              and lo <= st.events[0].index < hi and not _read_within(tl, st, hi)]
    if unread:
        hi = min(st.events[0].index for st in unread)
    block = [te.ev for te in tl.events[lo:hi]]
    head = [te.ev for te in tl.events[:lo]]
    per_block = sum(1 for st in fl.steps if isinstance(st, Packet)
                    and lo <= st.events[0].index < hi)
    sent = {str(ep): 0 for ep in (fl.client, fl.server)}
    for st in fl.steps:
        if isinstance(st, Packet) and lo <= st.events[0].index < hi:
            sent[str(st.segment.src)] += st.segment.payload
    span = block[-1].ts_ns - block[0].ts_ns + 50_000  # 50 us between copies
    copies = max(1, -(-(packets - 3) // per_block))
    w = TraceWriter(out, dataclasses.replace(trace.header, command=["synthetic", "bench"]))
    for ev in head:
        w.event(ev)
    for k in range(copies):
        for ev in block:
            w.event(_shift(ev, k * span, k, sent))
    w.close("synthetic", duration_ns=copies * span + block[0].ts_ns - tl.start_ns)
    return len(head) + copies * len(block), 3 + copies * per_block


def _read_within(tl: Timeline, send: Message, hi: int) -> bool:
    """Whether every packet of `send` is read by a recv that ends before hi."""
    packets = [st for st in tl.steps if isinstance(st, Packet) and st.message == send.id
               and st.segment.payload]
    return all(p.read_by and all(tl.steps[r].events[-1].index < hi for r in p.read_by)
               for p in packets)


def _shift(ev: Event, dt: int, k: int, sent: dict[str, int]) -> Event:
    """The event k copies later: time + dt; seq of the stream it belongs to
    (the sender's for packet events, the peer's for the copy to user) and
    ack (the other stream) moved by k times that stream's bytes per copy."""
    src = f"{ev.saddr}:{ev.sport}"
    dst = f"{ev.daddr}:{ev.dport}"
    own, other = (dst, src) if capture_of(ev) is Capture.DATAGRAM_ITER else (src, dst)
    d_own, d_other = k * sent.get(own, 0), k * sent.get(other, 0)
    return dataclasses.replace(
        ev, ts_ns=ev.ts_ns + dt,
        seq=(ev.seq + d_own) % SEQ_MOD if ev.seq is not None else None,
        end_seq=(ev.end_seq + d_own) % SEQ_MOD if ev.end_seq is not None else None,
        ack=(ev.ack + d_other) % SEQ_MOD if ev.ack is not None else None)


def time_export(trace: Path, fmt: str, extra: list[str], outdir: Path) -> tuple[float, str]:
    out = outdir / f"bench.{fmt}"
    cmd = [sys.executable, "-m", "kpath", "export", str(trace), "-f", fmt, "-o", str(out), *extra]
    t0 = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.monotonic() - t0
    if res.returncode != 0:
        return elapsed, "FAILED: " + res.stderr.strip().splitlines()[-1]
    size = out.stat().st_size
    return elapsed, f"{size / 1024:,.0f} KiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=10_000)
    ap.add_argument("--source", type=Path, default=ROOT / "tests" / "data" / "hello_hi.kpath")
    ap.add_argument("--formats", default=",".join(FORMATS))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kpath-bench-") as tmp:
        trace = Path(tmp) / f"synthetic_{args.packets}_packets.kpath"
        t0 = time.monotonic()
        n_events, n_packets = synthetic_trace(args.source, args.packets, trace)
        print(f"synthetic trace: {n_packets} packets, {n_events} events, "
              f"{trace.stat().st_size / 1e6:.1f} MB, made in {time.monotonic() - t0:.1f} s "
              f"from {args.source.name}")
        # A benchmark on an inconsistent trace measures the wrong code paths.
        stats = subprocess.run([sys.executable, "-m", "kpath", "replay", "--stats", str(trace)],
                               capture_output=True, text=True, cwd=ROOT, check=True).stdout
        if "MISMATCH" in stats or "!!" in stats:
            sys.exit("synthetic trace is inconsistent (replay --stats):\n" + stats[:2000])
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "kpath", "replay", str(trace), "--format", "json"],
                       capture_output=True, cwd=ROOT, check=True)
        print(f"baseline (read + rebuild + replay --format json): {time.monotonic() - t0:.1f} s")
        print()
        cols = ("format", "default (summarised)", "--flow 1 --max-packets 200")
        print(f"| {cols[0]:<9} | {cols[1]:>22} | {cols[2]:>28} |")
        print(f"|{'-' * 11}|{'-' * 24}|{'-' * 30}|")
        for fmt in args.formats.split(","):
            a, a_out = time_export(trace, fmt, [], Path(tmp))
            b, b_out = time_export(trace, fmt, ["--flow", "1", "--max-packets", "200"], Path(tmp))
            print(f"| {fmt:<9} | {a:6.1f} s {a_out:>13} | {b:6.1f} s {b_out:>19} |", flush=True)


if __name__ == "__main__":
    main()
