"""SYNTHETIC big traces: N consistent copies of a real recording.

Each copy is the whole recording (every connection in it, from its first
event to its last) moved so that it is a connection of its own on a busy
host, consistent with itself and distinct from every other copy:

- time: copy k starts k * span / overlap after the recording (span: its first
  to its last record), so about `overlap` copies are in flight at once and
  their events interleave; the output is in global time order;
- ports: every non-zero port + j, and every non-zero IPv4 address + b, where
  j = k mod P, b = k div P and P = 65536 - the highest port of the
  recording (ports never wrap, so each copy keeps the order of its ports,
  which decides roles when no handshake is traced); the 4-tuples of all
  copies are checked distinct;
- tgid/tid: + k * (highest pid + 1), so the threads and execution contexts
  of two copies never mix (tid 0, the idle task's softirqs, included);
- sk/skb pointers: - k * S, S the span of the recording's pointers rounded up
  to 4 KiB: each copy's pointers are its own;
- sequence space: each endpoint's stream moves by k * D (mod 2^32), D an odd
  constant per endpoint (the copies' ISNs spread over the sequence space,
  values modulo 2^32 as on the wire): seq and end_seq of the sender's stream on
  packet events, of the peer's stream on the copy to user
  (__skb_datagram_iter, and tcp_recvmsg and tcp_splice_read: the reader's
  copied_seq), and ack of the other
  stream. Lengths, return values, netns, CPU, comm are unchanged;
- lost records move with their copy (in time only).

The header is the recording's, with command ["synthetic", ...] naming the
source and the copies. Format: v1 (JSON Lines) written here; v2 through
`kpath convert` of the v1 output, when this kpath has that command.

Usage:
  python -m bench.synth tests/data/hello_hi.kpath -o big.kpath --events 1000000
  python -m bench.synth tests/data/bulk_1mib.kpath -o big.kpath --copies 20 --overlap 4
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from probes.catalog import STREAM_POS_CAPTURES, WRITE_SEQ_CAPTURES, Capture  # noqa: E402
from tracer.timeline.event_rules import capture_of  # noqa: E402
from tracer.tracefile import JSONL_VERSION, Header, read_trace  # noqa: E402

SEQ_MOD = 1 << 32
PAGE = 4096
# Odd multipliers (golden-ratio based) per endpoint: copy k's stream of
# endpoint e starts k * D_e further in sequence space.
_SEQ_STRIDES = (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F, 0x165667B1)
# Slots of a record template, in the order values are given to str.format.
_SLOTS = ("ts_ns", "tgid", "tid", "sk", "skb", "saddr", "sport", "daddr", "dport",
          "seq", "end_seq", "ack")
_CHUNK = 1 << 16
# Events whose seq is a position in the peer's stream: the reader's copy to
# user, and its tp->copied_seq (tcp_recvmsg, tcp_splice_read).
_READ_CAPTURES = frozenset({Capture.DATAGRAM_ITER}) | (STREAM_POS_CAPTURES - WRITE_SEQ_CAPTURES)


@dataclasses.dataclass(frozen=True)
class SynthResult:
    copies: int
    events: int
    lost_records: int
    span_ns: int  # one copy, first to last record
    step_ns: int  # start of copy k+1 minus start of copy k
    bytes: int
    seconds: float


@dataclasses.dataclass
class _Recording:
    header: Header
    templates: list[str]  # one str.format template per record (events, then lost)
    n_events: int
    ts: np.ndarray  # int64 per record
    cols: dict[str, np.ndarray]  # per shifted field (0 where absent)
    seq_owner: np.ndarray  # endpoint index of the seq/end_seq stream, -1: none
    ack_owner: np.ndarray
    n_endpoints: int
    max_port: int
    pid_stride: int
    ptr_stride: int
    tuples: set[frozenset[tuple[int, int]]]  # 4-tuples (addr int, port) of the recording
    span_ns: int
    lost: list[tuple[str | None, int]]  # (probe, count) per lost record


def _template(rec: dict[str, object], kind: str) -> str:
    """The record's JSON line with each shifted field as a str.format slot."""
    marked = {k: (f"@@{_SLOTS.index(k)}@@" if k in _SLOTS else v) for k, v in rec.items()}
    text = json.dumps({kind: marked}, separators=(",", ":")).replace("{", "{{").replace("}", "}}")
    for i, name in enumerate(_SLOTS):
        quoted = name in ("saddr", "daddr")  # addresses stay strings
        text = text.replace(f'"@@{i}@@"', f'"{{{i}}}"' if quoted else f"{{{i}}}")
    return text + "\n"


def _addr_int(addr: str | None) -> int:
    return int(ipaddress.IPv4Address(addr)) if addr else 0


def load(source: Path, frames: bool = False) -> _Recording:
    """The recording as templates; `frames`: its events' captured frames
    kept (the same bytes in every copy: addresses and ports unshifted)."""
    trace = read_trace(source)
    frame_of: dict[int, dict[str, object]] = {}
    if frames and trace.frames is not None:
        for rec in trace.frames.to_pylist():
            row = int(rec.pop("row"))
            rec["data"] = rec["data"].hex()
            frame_of[row] = {k: v for k, v in rec.items() if v is not None}
    if trace.cut_short:
        raise ValueError(f"{source}: cut short ({trace.cut_short}): copies would not close")
    order = sorted(range(len(trace.events)), key=lambda i: (trace.events[i].ts_ns, i))
    events = [trace.events[i] for i in order]
    lost = sorted(trace.lost, key=lambda r: r.ts_ns)
    n = len(events) + len(lost)
    if not events:
        raise ValueError(f"{source}: no event to copy")
    endpoints: dict[tuple[int, int], int] = {}
    cols = {name: np.zeros(n, dtype=np.uint64) for name in _SLOTS if name != "ts_ns"}
    seq_owner = np.full(n, -1, dtype=np.int64)
    ack_owner = np.full(n, -1, dtype=np.int64)
    templates = []
    tuples: set[frozenset[tuple[int, int]]] = set()
    for i, ev in enumerate(events):
        record = ev.to_record()
        if order[i] in frame_of:
            record["frame"] = frame_of[order[i]]
        templates.append(_template(record, "event"))
        src = (_addr_int(ev.saddr), ev.sport or 0)
        dst = (_addr_int(ev.daddr), ev.dport or 0)
        for name in ("tgid", "tid", "sk", "skb", "sport", "dport", "seq", "end_seq", "ack"):
            cols[name][i] = getattr(ev, name) or 0
        cols["saddr"][i], cols["daddr"][i] = src[0], dst[0]
        if src[1] and dst[1]:
            tuples.add(frozenset((src, dst)))
        if ev.seq is not None or ev.ack is not None:
            if not (src[1] and dst[1]):
                raise ValueError(f"{source}: event {ev.probe} at {ev.ts_ns} carries sequence "
                                 "numbers but no 4-tuple: cannot tell whose stream")
            reads = capture_of(ev) in _READ_CAPTURES
            own, other = (dst, src) if reads else (src, dst)
            seq_owner[i] = endpoints.setdefault(own, len(endpoints))
            ack_owner[i] = endpoints.setdefault(other, len(endpoints))
    for rec in lost:
        templates.append(_template(rec.to_record(), "lost"))
    ts = np.array([ev.ts_ns for ev in events] + [rec.ts_ns for rec in lost], dtype=np.int64)
    pointers = [v for ev in events for v in (ev.sk, ev.skb) if v]
    ptr_span = (max(pointers) - min(pointers) + 1) if pointers else 1
    ports = [p for ev in events for p in (ev.sport, ev.dport) if p]
    return _Recording(
        header=trace.header, templates=templates, n_events=len(events), ts=ts, cols=cols,
        seq_owner=seq_owner, ack_owner=ack_owner, n_endpoints=len(endpoints),
        max_port=max(ports, default=0),
        pid_stride=max(max(ev.tgid, ev.tid) for ev in events) + 1,
        ptr_stride=-(-ptr_span // PAGE) * PAGE,
        tuples=tuples, span_ns=int(ts.max() - ts.min()),
        lost=[(r.probe, r.count) for r in lost])


def copies_for(source: Path, events: int) -> int:
    """Copies of `source` needed for at least `events` events."""
    n = len(read_trace(source).events)
    return max(1, -(-events // n))


def _check(rec: _Recording, copies: int, per_block: int | None) -> int:
    """Ports per address block; raises when the copies cannot stay distinct."""
    most = 65536 - rec.max_port
    per_block = most if per_block is None else min(per_block, most)
    blocks = -(-copies // per_block)
    if rec.pid_stride * copies >= 1 << 32:
        raise ValueError(f"{copies} copies: thread ids would pass 2^32")
    lowest = min((int(v) for name in ("sk", "skb") for v in rec.cols[name] if v), default=0)
    if lowest and lowest - rec.ptr_stride * (copies - 1) <= 0:
        raise ValueError(f"{copies} copies: pointers would pass 0")
    highest_addr = int(max(rec.cols["saddr"].max(), rec.cols["daddr"].max()))
    if highest_addr + blocks >= 1 << 32:
        raise ValueError(f"{copies} copies: addresses would pass 255.255.255.255")
    seen: set[frozenset[tuple[int, int]]] = set()
    for k in range(copies):
        j, b = k % per_block, k // per_block
        for tup in rec.tuples:
            moved = frozenset((a + b if a else 0, p + j) for a, p in tup)
            if moved in seen:
                raise ValueError(f"copy {k} would reuse a 4-tuple of an earlier copy "
                                 "(the recording's connections have neighbouring ports)")
            seen.add(moved)
    return per_block


def _lines(rec: _Recording, copies: int, step: int, per_block: int) -> Iterator[str]:
    n = len(rec.templates)
    offsets = np.arange(copies, dtype=np.int64) * step
    order = np.argsort((rec.ts[None, :] + offsets[:, None]).ravel(), kind="stable")
    strides = np.array([_SEQ_STRIDES[e % len(_SEQ_STRIDES)] + 2 * (e // len(_SEQ_STRIDES))
                        for e in range(max(rec.n_endpoints, 1))], dtype=np.uint64)
    addr_text: dict[int, str] = {0: "0.0.0.0"}

    def text(a: int) -> str:
        s = addr_text.get(a)
        if s is None:
            s = addr_text[a] = str(ipaddress.IPv4Address(a))
        return s

    c = rec.cols
    mod = np.uint64(SEQ_MOD - 1)
    for lo in range(0, len(order), _CHUNK):
        idx = order[lo:lo + _CHUNK]
        k, i = idx // n, idx % n
        ku = k.astype(np.uint64)
        j = (k % per_block).astype(np.uint64)
        b = (k // per_block).astype(np.uint64)
        ts = rec.ts[i] + offsets[k]
        pid = ku * np.uint64(rec.pid_stride)
        ptr = ku * np.uint64(rec.ptr_stride)
        sk, skb = c["sk"][i], c["skb"][i]
        sk = np.where(sk != 0, sk - ptr, 0)
        skb = np.where(skb != 0, skb - ptr, 0)
        saddr, daddr = c["saddr"][i], c["daddr"][i]
        saddr = np.where(saddr != 0, saddr + b, 0)
        daddr = np.where(daddr != 0, daddr + b, 0)
        sport, dport = c["sport"][i], c["dport"][i]
        sport = np.where(sport != 0, sport + j, 0)
        dport = np.where(dport != 0, dport + j, 0)
        so, ao = rec.seq_owner[i], rec.ack_owner[i]
        d_seq = (ku * strides[np.maximum(so, 0)]) & mod
        d_ack = (ku * strides[np.maximum(ao, 0)]) & mod
        seq = (c["seq"][i] + d_seq) & mod
        end_seq = (c["end_seq"][i] + d_seq) & mod
        ack = (c["ack"][i] + d_ack) & mod
        rows = zip(i.tolist(), ts.tolist(), (c["tgid"][i] + pid).tolist(),
                   (c["tid"][i] + pid).tolist(), sk.tolist(), skb.tolist(),
                   saddr.tolist(), sport.tolist(), daddr.tolist(), dport.tolist(),
                   seq.tolist(), end_seq.tolist(), ack.tolist(), strict=True)
        tmpl = rec.templates
        yield "".join(tmpl[r[0]].format(r[1], r[2], r[3], r[4], r[5], text(r[6]), r[7],
                                        text(r[8]), r[9], r[10], r[11], r[12])
                      for r in rows)


def write_synthetic(source: Path, out: Path, copies: int, overlap: float = 8.0,
                    ports_per_block: int | None = None, frames: bool = False) -> SynthResult:
    """Write `copies` consistent copies of `source` to `out` (trace format v1).
    ports_per_block: fewer copies per address than the ports allow (tests);
    frames: with the recording's captured frames (pcapng export)."""
    t0 = time.monotonic()
    rec = load(source, frames)
    per_block = _check(rec, copies, ports_per_block)
    step = max(1, math.ceil((rec.span_ns + 50_000) / max(overlap, 1e-9)))
    header = dataclasses.replace(
        rec.header, command=["synthetic", f"{copies} copies of {source.name}",
                             f"overlap {overlap:g}", "bench/synth.py"])
    lost_per_copy = len(rec.templates) - rec.n_events
    lost_by_probe: dict[str, int] = {}
    lost_total = 0
    for probe, count in rec.lost:
        key = probe or "(unknown)"
        lost_by_probe[key] = lost_by_probe.get(key, 0) + count * copies
        lost_total += count * copies
    duration = int(rec.span_ns + step * (copies - 1))
    trailer = {"reason": "synthetic", "events": rec.n_events * copies, "lost": lost_total,
               "lost_by_probe": lost_by_probe, "duration_ns": duration}
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"header": header.to_record(version=JSONL_VERSION)},
                            separators=(",", ":")) + "\n")
        for chunk in _lines(rec, copies, step, per_block):
            fh.write(chunk)
        fh.write(json.dumps({"trailer": trailer}, separators=(",", ":")) + "\n")
    return SynthResult(copies=copies, events=rec.n_events * copies,
                       lost_records=lost_per_copy * copies, span_ns=rec.span_ns, step_ns=step,
                       bytes=out.stat().st_size, seconds=time.monotonic() - t0)


def inconsistency(source: Path, out: Path, copies: int) -> str | None:
    """What `kpath replay --stats` shows wrong in the synthetic trace `out`
    (MISMATCH checks or flow warnings beyond `copies` times the source's), else
    None. Runs the replay twice: for small and medium traces."""
    counts = []
    for path in (source, out):
        res = subprocess.run([sys.executable, "-m", "kpath", "replay", "--stats", str(path)],
                             capture_output=True, text=True, cwd=ROOT)
        if res.returncode != 0:
            return f"replay --stats {path.name} failed: {res.stderr.strip()[-300:]}"
        flow_warnings = sum(ln.startswith("    !!") for ln in res.stdout.splitlines())
        counts.append((res.stdout.count("MISMATCH"), flow_warnings))
    (m0, w0), (m1, w1) = counts
    if (m1, w1) != (m0 * copies, w0 * copies):
        return (f"replay --stats: {m1} MISMATCH and {w1} warning(s) in {copies} copies, "
                f"the recording has {m0} and {w0}")
    return None


def convert_help(python: str = sys.executable) -> str | None:
    """The --help text of `kpath convert` (trace format v2), or None when this
    kpath has no such command."""
    res = subprocess.run([python, "-m", "kpath", "convert", "--help"], capture_output=True,
                         text=True, cwd=ROOT)
    return res.stdout if res.returncode == 0 else None


def convert_argv(help_text: str, src: Path, dst: Path,
                 python: str = sys.executable) -> list[str] | None:
    """`kpath convert` as its usage line asks: SRC DST, or SRC -o DST; None
    when the usage line says neither."""
    usage = next((ln for ln in help_text.splitlines() if ln.startswith("Usage:")), "")
    positionals = [w for w in usage.split()[3:] if not w.startswith("[")]
    base = [python, "-m", "kpath", "convert", str(src)]
    if len(positionals) == 2:
        return [*base, str(dst)]
    if len(positionals) == 1 and re.search(r"(^|\s)(-o|--output)\b", help_text):
        return [*base, "-o", str(dst)]
    return None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="a real recording (.kpath)")
    ap.add_argument("-o", "--output", type=Path, required=True)
    size = ap.add_mutually_exclusive_group(required=True)
    size.add_argument("--events", type=int, help="at least this many events (whole copies)")
    size.add_argument("--copies", type=int)
    ap.add_argument("--overlap", type=float, default=8.0,
                    help="copies in flight at once (1: one after another); default 8")
    ap.add_argument("--frames", action="store_true",
                    help="keep the recording's captured frames (unshifted bytes: pcapng)")
    ap.add_argument("--format", choices=("v1", "v2"), default="v1",
                    help="v2: the v1 output converted by `kpath convert` (if this kpath has it)")
    args = ap.parse_args(argv)
    copies = args.copies if args.copies is not None else copies_for(args.source, args.events)
    help_text = convert_help() if args.format == "v2" else None
    if args.format == "v2" and help_text is None:
        sys.exit("trace format v2: not available in this kpath (no `kpath convert`)")
    v1 = args.output if args.format == "v1" else args.output.with_suffix(".v1.kpath")
    res = write_synthetic(args.source, v1, copies, args.overlap, frames=args.frames)
    print(f"synthetic: {res.copies} copies of {args.source.name}, {res.events} events, "
          f"{res.bytes / 1e6:.1f} MB, copy every {res.step_ns / 1e6:.3f} ms "
          f"(one copy spans {res.span_ns / 1e6:.3f} ms), {res.seconds:.1f} s -> {v1}")
    if help_text is not None:
        argv = convert_argv(help_text, v1, args.output)
        if argv is None:
            sys.exit("kpath convert: its usage line names neither SRC DST nor SRC -o DST")
        subprocess.run(argv, check=True, cwd=ROOT)
        v1.unlink()
        print(f"converted to v2: {args.output} ({args.output.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
