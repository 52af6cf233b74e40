"""Capture benchmark: what tracing costs a workload, and what it loses.

For three workloads, run untraced and traced (`kpath trace`, default
profile, default settings) alternately in one boot, so that a slow phase of
the machine (TCG swings 2x) hits both alike:
- bulk: one client writes 32 MiB (64 KiB send() calls), the server reads it;
- rr: 2000 request/response round trips of 64 bytes (TCP_NODELAY);
- fileio: 20000 write() + read() pairs of 64 bytes on a pipe: no socket,
  what the fd-based syscall probes cost when BPF drops the event.
It prints per run the workload's own throughput, the events kept and lost,
then medians and the traced/untraced ratio. A sweep of parallel bulk
streams (1, 2, 4, ...) finds the highest event rate captured with zero
loss, and `--drain` times the capture path alone (ring scan, decode, trace
writer) on synthetic records.

Usage (root; the VM has kprobes, so the default profile's 50 probes):
  .venv/bin/python bench/bench_capture.py --vm 6.1 [--runs 5]   # boots the VM
  kpath vm run --kernel 6.1 -- python3 bench/bench_capture.py    # the same, by hand
  .venv/bin/python bench/bench_capture.py --runs 3               # this host
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WROTE = re.compile(r"wrote \S+: (\d+) events, (\d+) lost")
LOST_FROM = re.compile(r"lost (\d+) events from (.+)")
ATTACHED = re.compile(r"attached \d+ probes in ([\d.]+) s")
BULK_SIZE = 32 << 20
RR_COUNT, RR_SIZE = 2000, 64
FILEIO_COUNT = 20000
MiB = 1 << 20


# -- workloads (run as the traced command) ------------------------------------

def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise RuntimeError("peer closed mid-message")
        data += chunk
    return data


def rr(count: int, size: int, port: int) -> float:
    """count round trips of size bytes each way; returns the seconds taken."""
    listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
    pid = os.fork()
    if pid == 0:
        try:
            conn, _ = listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(count):
                conn.sendall(_recv_exact(conn, size))
            conn.close()
        finally:
            os._exit(0)
    listener.close()
    payload = b"x" * size
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        for _ in range(count):
            sock.sendall(payload)
            _recv_exact(sock, size)
        elapsed = time.perf_counter() - start
    os.waitpid(pid, 0)
    return elapsed


def bulk(size: int, streams: int, port: int) -> float:
    """streams parallel transfers of size bytes; seconds until all are read."""
    from vm.bulk import run_bulk

    start = time.perf_counter()
    pids = []
    for i in range(streams):
        pid = os.fork()
        if pid == 0:
            try:
                run_bulk(size, port + i)
            except Exception as exc:  # the child's error, reported by its exit code
                print(f"bulk stream {i}: {exc}", file=sys.stderr)
                os._exit(1)
            os._exit(0)
        pids.append(pid)
    failed = [pid for pid in pids if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])]
    if failed:
        raise RuntimeError(f"{len(failed)} bulk stream(s) failed")
    return time.perf_counter() - start


def fileio(count: int, size: int) -> float:
    """count write() and read() pairs of size bytes on a pipe: no socket, so
    what the fd-based syscall probes (write, read, ...) cost when BPF drops
    the event; returns the seconds taken."""
    r, w = os.pipe()
    payload = b"x" * size
    start = time.perf_counter()
    for _ in range(count):
        os.write(w, payload)
        os.read(r, size)
    elapsed = time.perf_counter() - start
    os.close(r)
    os.close(w)
    return elapsed


def workload_main(args: argparse.Namespace) -> None:
    if args.pin is not None:
        # Both ends on one CPU: under TCG a wakeup across vCPUs costs
        # milliseconds and swings from run to run, which would drown what
        # tracing costs. The tracer runs wherever the scheduler puts it.
        os.sched_setaffinity(0, {args.pin})
    if args.workload == "bulk":
        seconds = bulk(args.size, args.streams, args.port)
        out = {"s": seconds, "bytes": args.size * args.streams}
    elif args.workload == "fileio":
        out = {"s": fileio(args.count, args.size), "calls": 2 * args.count}
    else:
        seconds = rr(args.count, args.size, args.port)
        out = {"s": seconds, "round_trips": args.count}
    print(json.dumps(out), flush=True)


# -- one measured run ------------------------------------------------------

def _kpath() -> list[str]:
    # In the VM the installed launcher (compiled, on the image), not the
    # share's sources over 9p.
    return ["kpath"] if os.path.exists("/usr/local/bin/kpath") else [
        sys.executable, "-m", "kpath"]


def run_once(workload: list[str], traced: bool, workdir: Path,
             extra: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--workload", *workload]
    if traced:
        out = workdir / "bench.kpath"
        cmd = [*_kpath(), "trace", "-o", str(out), *extra, "--", *cmd]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False,
                         env={**os.environ, **(env or {})})
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"bench: {' '.join(cmd[:4])}... failed: {' | '.join(tail)}")
    got: dict[str, Any] = json.loads(lines[-1])
    if traced:
        m = WROTE.search(res.stderr)
        if m is None:
            raise SystemExit(f"bench: kpath trace printed no summary: {res.stderr[-300:]}")
        got["events"], got["lost"] = float(m.group(1)), float(m.group(2))
        # Which probe lost them, as kpath reports it (a ring buffer overrun,
        # or a program the kernel skipped).
        got["lost_from"] = "; ".join(f"{n} {who}" for n, who in LOST_FROM.findall(res.stderr))
        a = ATTACHED.search(res.stderr)
        got["attach_s"] = float(a.group(1)) if a else float("nan")
        (workdir / "bench.kpath").unlink(missing_ok=True)
    return got


def _lost(r: dict[str, Any]) -> str:
    return f"{int(r['lost']):7d}" + (f" ({r['lost_from']})" if r.get("lost_from") else "")


def _rate(kind: str, r: dict[str, Any]) -> float:
    if kind == "fileio":
        return r["calls"] / r["s"]
    return r["bytes"] / MiB / r["s"] if kind == "bulk" else r["round_trips"] / r["s"]


CLOCKSOURCE = Path("/sys/devices/system/clocksource/clocksource0/current_clocksource")


def set_clocksource(name: str) -> None:
    """Switch the running kernel's clocksource (root): an A/B of the clock
    in one boot (the VM boots with tsc usable: vm/qemu.py TCG_CLOCK)."""
    CLOCKSOURCE.write_text(name)
    if CLOCKSOURCE.read_text().strip() != name:
        raise SystemExit(f"bench: the kernel refused clocksource {name!r}")


class SwappedObject:
    """The installed CO-RE object replaced by another for one run (an A/B of
    BPF program bodies in one boot): kpath reads it once, at start."""

    def __init__(self, replacement: Path) -> None:
        self.replacement = replacement
        # The installed package's object, not the share's sources: run from /.
        out = subprocess.run(
            [sys.executable, "-c", "import tracer.capture.core as c; print(c.OBJECT)"],
            capture_output=True, text=True, check=True, cwd="/")
        self.installed = Path(out.stdout.strip())
        self.saved = self.installed.read_bytes()

    def __enter__(self) -> None:
        self.installed.write_bytes(self.replacement.read_bytes())

    def __exit__(self, *exc: object) -> None:
        self.installed.write_bytes(self.saved)


@dataclass
class Series:
    """One clocksource's runs of a workload (rates per run)."""
    plain: list[float] = field(default_factory=list)
    traced: list[float] = field(default_factory=list)
    other: list[float] = field(default_factory=list)  # the B of an A/B
    attach: list[float] = field(default_factory=list)  # "attached N probes in X s"
    attach_b: list[float] = field(default_factory=list)


def compare(kind: str, workload: list[str], runs: int, workdir: Path,
            extra: list[str], ab: dict[str, str] | None = None,
            ab_args: list[str] | None = None, ab_object: Path | None = None,
            clocksources: list[str] | None = None) -> None:
    """Untraced and traced runs alternately; with `ab` (environment
    variables), `ab_args` (more `kpath trace` options) or `ab_object` (another
    CO-RE object), a third traced run each time with them (an A/B of a
    setting). With `clocksources`, each round runs once per clocksource
    (interleaved), each with its own medians."""
    unit = {"bulk": "MiB/s", "rr": "round trips/s", "fileio": "calls/s"}[kind]
    has_b = bool(ab or ab_args or ab_object)
    b_name = _ab_name(ab, ab_args) + (f" object {ab_object.name}" if ab_object else "")
    sources = clocksources or [""]
    series = {cs: Series() for cs in sources}
    print(f"\n## {kind}: {' '.join(workload)} ({unit}; traced runs: events kept, lost)")
    for i in range(runs):
        for cs in sources:
            if cs:
                set_clocksource(cs)
            s = series[cs]
            u = run_once(workload, False, workdir, extra)
            t = run_once(workload, True, workdir, extra)
            s.plain.append(_rate(kind, u))
            s.traced.append(_rate(kind, t))
            s.attach.append(t["attach_s"])
            line = (f"run {i + 1}{' ' + cs if cs else ''}: untraced {s.plain[-1]:9.1f}   "
                    f"traced {s.traced[-1]:9.1f}   events {int(t['events']):7d}   lost {_lost(t)}")
            if has_b:
                if ab_object:
                    with SwappedObject(ab_object):
                        b = run_once(workload, True, workdir, [*extra, *(ab_args or [])], ab)
                else:
                    b = run_once(workload, True, workdir, [*extra, *(ab_args or [])], ab)
                s.other.append(_rate(kind, b))
                s.attach_b.append(b["attach_s"])
                line += (f"   | {b_name}: traced {s.other[-1]:9.1f}   "
                         f"events {int(b['events']):7d}   lost {_lost(b)}")
            print(line, flush=True)
    for cs, s in series.items():
        mu, mt = statistics.median(s.plain), statistics.median(s.traced)
        print(f"median{' ' + cs if cs else ''}: untraced {mu:.1f}, traced {mt:.1f} {unit}; "
              f"traced/untraced {mt / mu:.2f}; "
              f"probes attached in {statistics.median(s.attach):.2f} s")
        if has_b:
            mb = statistics.median(s.other)
            print(f"median{' ' + cs if cs else ''} with {b_name}: traced {mb:.1f} "
                  f"{unit}; traced/untraced {mb / mu:.2f}; B/A traced {mb / mt:.2f}; "
                  f"probes attached in {statistics.median(s.attach_b):.2f} s")


def _ab_name(ab: dict[str, str] | None, ab_args: list[str] | None) -> str:
    return " ".join([*(f"{k}={v}" for k, v in (ab or {}).items()), *(ab_args or [])])


def sweep(max_streams: int, size: int, workdir: Path, extra: list[str]) -> None:
    """Parallel bulk streams, more each step, until events are lost."""
    print(f"\n## zero-loss event rate: parallel bulk streams of {size // MiB} MiB")
    best = 0.0
    streams = 1
    while streams <= max_streams:
        t = run_once(["bulk", "--size", str(size), "--streams", str(streams)], True,
                     workdir, extra)
        rate = t["events"] / t["s"]
        print(f"{streams} stream(s): {int(t['events'])} events in {t['s']:.2f} s = "
              f"{rate:,.0f} events/s, lost {int(t['lost'])}", flush=True)
        if t["lost"]:
            break
        best = max(best, rate)
        streams *= 2
    print(f"highest event rate captured with zero loss: {best:,.0f} events/s")


def drain_bench(records: int) -> None:
    """The capture path without a kernel: scan a full synthetic ring, decode
    the span, write it with the trace writer."""
    import numpy as np

    if not os.path.exists("/usr/local/bin/kpath"):
        # On a host, this checkout's sources (in the VM: the installed copy,
        # not the share's over 9p).
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tracer.capture.record import RAW_DTYPE, RAW_EVENT_SIZE, ProbeTable, decode_records
    from tracer.capture.ringbuf import record_stride, scan

    rng = np.random.default_rng(1)
    raw = np.zeros(records, RAW_DTYPE)
    raw["ip"] = rng.integers(0, 38, records)
    raw["has"] = rng.integers(0, 128, records)
    raw["ctx"] = rng.integers(0, 3, records)
    raw["ts"] = np.arange(records)
    raw["comm"] = np.array([b"bulk-client", b"bulk-server", b"ksoftirqd/0"], "S16")[
        rng.integers(0, 3, records)]
    stride = record_stride(RAW_EVENT_SIZE)
    ring = np.zeros((records, stride), np.uint8)
    ring[:, :4] = np.frombuffer(np.uint32(RAW_EVENT_SIZE).tobytes(), np.uint8)
    ring[:, 8:8 + RAW_EVENT_SIZE] = raw.view(np.uint8).reshape(records, RAW_EVENT_SIZE)
    flat = ring.reshape(-1)
    size = 1 << (len(flat) - 1).bit_length()
    data = np.zeros(2 * size, np.uint8)
    data[:len(flat)] = flat
    names = [f"probe{i}" for i in range(38)]
    table = ProbeTable.build(names, [False] * 38, [(i, i) for i in range(38)])
    # Second pass timed: the first one faults the fresh pages in.
    for _ in range(2):
        t0 = time.perf_counter()
        span = scan(data, size - 1, 0, len(flat), RAW_EVENT_SIZE)
        t1 = time.perf_counter()
        batch = decode_records(span.records, table).batch
        t2 = time.perf_counter()
    line = (f"\n## drain of {records} synthetic records ({len(flat) / MiB:.1f} MiB ring): "
            f"scan+copy {records / (t1 - t0) / 1e6:.2f} M records/s, "
            f"decode {records / (t2 - t1) / 1e6:.2f} M records/s")
    from tracer.tracefile import TraceWriter

    if hasattr(TraceWriter, "write_batch"):
        from tracer.tracefile import Header

        with tempfile.TemporaryDirectory() as tmp:
            header = Header(kernel_release="", kernel_version="", hostname="", machine="",
                            backend="bench", buffer="ringbuf")
            from tracer.events import ProbeStatus

            header.probes = [ProbeStatus(n, "tcp", "tx", True) for n in names]
            writer = TraceWriter(Path(tmp) / "w.kpath", header)
            t3 = time.perf_counter()
            writer.write_batch(batch)
            writer.close("bench")
            t4 = time.perf_counter()
        line += f", trace writer {records / (t4 - t3) / 1e6:.2f} M records/s"
    print(line, flush=True)
    _drain_with_frames(records)


def _drain_with_frames(records: int, every: int = 9) -> None:
    """The scan alone on a SYNTHETIC ring with a frame record (kp_frame_event)
    after every `every - 1` events, as a request/response load has them (one
    per packet and direction): frames cut the uniform runs short."""
    import numpy as np

    from tracer.capture.record import RAW_EVENT_SIZE, RAW_FRAME_SIZE
    from tracer.capture.ringbuf import HEADER, record_stride, scan

    sizes = np.full(records, RAW_EVENT_SIZE, np.int64)
    sizes[every - 1::every] = RAW_FRAME_SIZE
    strides = (sizes + HEADER + 7) & ~7
    starts = np.concatenate([[0], np.cumsum(strides)[:-1]])
    length = int(strides.sum())
    ring = 1 << (length - 1).bit_length()
    data = np.zeros(2 * ring, np.uint8)
    heads = data[:length].view(np.uint8)
    for b in range(4):  # the u32 length of each header, little-endian
        heads[starts + b] = (sizes >> (8 * b)) & 0xFF
    assert record_stride(RAW_FRAME_SIZE) == int(strides[every - 1])
    for _ in range(2):  # second pass timed, as above
        t0 = time.perf_counter()
        span = scan(data, ring - 1, 0, length, RAW_EVENT_SIZE, RAW_FRAME_SIZE)
        t1 = time.perf_counter()
    assert len(span.records) == records and len(span.frame_rows) == records // every
    print(f"   with a frame record every {every} records: scan+copy "
          f"{records / (t1 - t0) / 1e6:.2f} M records/s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vm", metavar="KERNEL", help="run inside `kpath vm run --kernel KERNEL`")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sweep", type=int, default=8, metavar="N",
                    help="parallel bulk streams to try, up to N (0: no sweep)")
    ap.add_argument("--drain", type=int, default=262144, metavar="RECORDS",
                    help="synthetic records for the drain timing (0: skip)")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="let the throughput workloads run on any CPU (default: CPU 0)")
    ap.add_argument("--trace-arg", action="append", default=[],
                    help="extra `kpath trace` option (e.g. --trace-arg=--buffer-pages=2048)")
    ap.add_argument("--ab", action="append", default=[], metavar="VAR=VALUE",
                    help="also trace each run with this environment variable set (A/B)")
    ap.add_argument("--ab-arg", action="append", default=[], metavar="OPTION",
                    help="also trace each run with this extra `kpath trace` option (A/B; "
                    "e.g. --ab-arg=--attach-mode=kprobe)")
    ap.add_argument("--ab-object", type=Path, default=None, metavar="FILE",
                    help="also trace each run with this CO-RE object in place of the "
                    "installed one (A/B of BPF program bodies; root)")
    ap.add_argument("--clocksource", action="append", default=[], metavar="NAME",
                    help="run each round once per clocksource named (repeat; switched "
                    "through sysfs, root): e.g. --clocksource hpet --clocksource tsc")
    ap.add_argument("--only", default="bulk,rr,fileio",
                    help="workloads to run, comma-separated (default: bulk,rr,fileio)")
    ap.add_argument("--workload", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args, _ = ap.parse_known_args()
    if args.workload:
        wp = argparse.ArgumentParser()
        wp.add_argument("workload", choices=("bulk", "rr", "fileio"))
        wp.add_argument("--size", type=int, default=None)
        wp.add_argument("--streams", type=int, default=1)
        wp.add_argument("--count", type=int, default=RR_COUNT)
        wp.add_argument("--port", type=int, default=12000)
        wp.add_argument("--pin", type=int, default=None)
        w = wp.parse_args(args.workload)
        if w.size is None:
            w.size = BULK_SIZE if w.workload == "bulk" else RR_SIZE
        workload_main(w)
        return
    if args.vm:
        cmd = [sys.executable, "-m", "kpath", "vm", "run", "--kernel", args.vm, "--",
               "python3", "bench/bench_capture.py", "--runs", str(args.runs),
               "--sweep", str(args.sweep), "--drain", str(args.drain),
               *([] if args.pin else ["--no-pin"]),
               *(f"--trace-arg={a}" for a in args.trace_arg),
               *(f"--ab={a}" for a in args.ab), *(f"--ab-arg={a}" for a in args.ab_arg),
               *([f"--ab-object={args.ab_object}"] if args.ab_object else []),
               *(f"--clocksource={c}" for c in args.clocksource), f"--only={args.only}"]
        raise SystemExit(subprocess.run(cmd, check=False).returncode)
    print(f"# kpath capture bench on {os.uname().release}, {os.cpu_count()} CPUs; "
          f"trace options: {' '.join(args.trace_arg) or '(defaults)'}", flush=True)
    if args.drain:
        drain_bench(args.drain)
    with tempfile.TemporaryDirectory(prefix="kpath-bench-") as tmp:
        work = Path(tmp)
        pin = ["--pin", "0"] if args.pin else []
        ab = dict(a.split("=", 1) for a in args.ab)
        only = set(args.only.split(","))
        workloads = {
            "bulk": ["bulk", "--size", str(BULK_SIZE), *pin],
            "rr": ["rr", "--count", str(RR_COUNT), "--size", str(RR_SIZE), *pin],
            "fileio": ["fileio", "--count", str(FILEIO_COUNT), "--size", str(RR_SIZE), *pin],
        }
        for kind, workload in workloads.items():
            if kind in only:
                compare(kind, workload, args.runs, work, args.trace_arg, ab, args.ab_arg,
                        args.ab_object, args.clocksource)
        if args.sweep:
            sweep(args.sweep, BULK_SIZE, work, args.trace_arg)


if __name__ == "__main__":
    main()
