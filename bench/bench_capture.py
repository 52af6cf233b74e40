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
    # The BPF programs' run counters around the workload (--prog-stats: the
    # tracer, our parent, has attached them by now and detaches after).
    before = _prog_counters() if os.environ.get(PROG_STATS_ENV) else None
    # The parent's CPU: when traced, the tracer's (kpath trace runs us).
    tracer_cpu = _cpu_seconds(os.getppid())
    if args.workload == "bulk":
        seconds = bulk(args.size, args.streams, args.port)
        out: dict[str, Any] = {"s": seconds, "bytes": args.size * args.streams}
    elif args.workload == "fileio":
        out = {"s": fileio(args.count, args.size), "calls": 2 * args.count}
    else:
        seconds = rr(args.count, args.size, args.port)
        out = {"s": seconds, "round_trips": args.count}
    # The tracer (our parent: kpath trace) reads the ring on the other vCPU
    # meanwhile; under TCG its CPU time is host time the workload's vCPU may
    # not get (one TCG thread runs both vCPUs).
    out["tracer_cpu_s"] = _cpu_seconds(os.getppid()) - tracer_cpu
    if before is not None:
        after = _prog_counters()
        out["progs"] = {name: [cnt - before.get(name, (0, 0))[0], ns - before.get(name, (0, 0))[1]]
                        for name, (cnt, ns) in after.items()
                        if cnt != before.get(name, (0, 0))[0]}
    print(json.dumps(out), flush=True)


PROG_STATS_ENV = "KPATH_BENCH_PROG_STATS"
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _prog_counters() -> dict[str, tuple[int, int]]:
    """(runs, ns) per loaded BPF program name, summed over same-named ones."""
    _import_tracer()
    from tracer.capture.libbpf import prog_stats

    out: dict[str, tuple[int, int]] = {}
    for p in prog_stats():
        cnt, ns = out.get(p.name, (0, 0))
        out[p.name] = (cnt + p.run_cnt, ns + p.run_time_ns)
    return out


def _import_tracer() -> None:
    if not os.path.exists("/usr/local/bin/kpath"):
        # On a host, this checkout's sources (in the VM: the installed copy,
        # not the share's over 9p).
        root = str(Path(__file__).resolve().parent.parent)
        if root not in sys.path:
            sys.path.insert(0, root)


# -- one measured run ------------------------------------------------------

def _kpath() -> list[str]:
    # In the VM the installed launcher (compiled, on the image), not the
    # share's sources over 9p.
    return ["kpath"] if os.path.exists("/usr/local/bin/kpath") else [
        sys.executable, "-m", "kpath"]


def run_once(workload: list[str], traced: bool, workdir: Path,
             extra: list[str], env: dict[str, str] | None = None,
             keep: bool = False) -> dict[str, Any]:
    """One run of the workload, traced or not; with `keep`, the trace stays
    (workdir/bench.kpath) for the caller to read."""
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
        if not keep:
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
    in one boot, among the kernel's available_clocksource (under TCG: hpet
    and acpi_pm; tsc only in a guest booted with tsc=reliable, which hung
    under TCG: bench/README.md, "The guest hangs under TCG")."""
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
    attach: list[float] = field(default_factory=list)  # "attached N probes in X s"
    # The B runs of an A/B, per B (one per --ab-object, or the one setting).
    other: dict[str, list[float]] = field(default_factory=dict)
    attach_b: dict[str, list[float]] = field(default_factory=dict)
    lost_b: dict[str, list[float]] = field(default_factory=dict)


def compare(kind: str, workload: list[str], runs: int, workdir: Path,
            extra: list[str], ab: dict[str, str] | None = None,
            ab_args: list[str] | None = None, ab_objects: list[Path] | None = None,
            clocksources: list[str] | None = None) -> None:
    """Untraced and traced runs alternately; with `ab` (environment
    variables), `ab_args` (more `kpath trace` options) or `ab_objects` (other
    CO-RE objects, each in turn), more traced runs each time with them (an
    A/B of a setting). With `clocksources`, each round runs once per
    clocksource (interleaved), each with its own medians."""
    unit = {"bulk": "MiB/s", "rr": "round trips/s", "fileio": "calls/s"}[kind]
    setting = _ab_name(ab, ab_args)
    bs: list[tuple[str, Path | None]] = (
        [(f"{setting} object {o.name}".strip(), o) for o in ab_objects] if ab_objects
        else [(setting, None)] if (ab or ab_args) else [])
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
                    f"traced {s.traced[-1]:9.1f}   events {int(t['events']):7d}   lost {_lost(t)}"
                    f"   tracer CPU {t['tracer_cpu_s']:.2f} s")
            for b_name, obj in bs:
                if obj is not None:
                    with SwappedObject(obj):
                        b = run_once(workload, True, workdir, [*extra, *(ab_args or [])], ab)
                else:
                    b = run_once(workload, True, workdir, [*extra, *(ab_args or [])], ab)
                s.other.setdefault(b_name, []).append(_rate(kind, b))
                s.attach_b.setdefault(b_name, []).append(b["attach_s"])
                s.lost_b.setdefault(b_name, []).append(b["lost"])
                line += (f"   | {b_name}: traced {s.other[b_name][-1]:9.1f}   "
                         f"events {int(b['events']):7d}   lost {_lost(b)}   "
                         f"tracer CPU {b['tracer_cpu_s']:.2f} s")
            print(line, flush=True)
    for cs, s in series.items():
        mu, mt = statistics.median(s.plain), statistics.median(s.traced)
        print(f"median{' ' + cs if cs else ''}: untraced {mu:.1f}, traced {mt:.1f} {unit}; "
              f"traced/untraced {mt / mu:.2f}; "
              f"probes attached in {statistics.median(s.attach):.2f} s")
        for b_name, rates in s.other.items():
            mb = statistics.median(rates)
            print(f"median{' ' + cs if cs else ''} with {b_name}: traced {mb:.1f} "
                  f"{unit}; traced/untraced {mb / mu:.2f}; B/A traced {mb / mt:.2f}; "
                  f"probes attached in {statistics.median(s.attach_b[b_name]):.2f} s; "
                  f"lost {', '.join(str(int(n)) for n in s.lost_b[b_name])}")


def _probe_counts(path: Path) -> dict[tuple[str, str], int]:
    """Events per (probe, kind) in a trace."""
    _import_tracer()
    import pyarrow.compute as pc

    from tracer.tracefile.scan import scan_trace

    counts: dict[tuple[str, str], int] = {}
    with scan_trace(path) as scan:
        for batch in scan:
            if not batch.num_rows:
                continue
            pairs = pc.binary_join_element_wise(
                batch.column("probe").cast("string"), batch.column("kind").cast("string"), " ")
            for row in pc.value_counts(pairs).to_pylist():
                probe, kind = row["values"].split(" ")
                counts[probe, kind] = counts.get((probe, kind), 0) + row["counts"]
    return counts


def prog_cost(runs: int, workdir: Path, extra: list[str], workload: list[str]) -> None:
    """Where the traced run's time goes: with kernel.bpf_stats_enabled=1,
    each BPF program's runs and run time during the workload (the kernel's
    counters; they leave out the kprobe and kretprobe machinery around a
    program), next to an untraced run, and the events per probe per MiB."""
    print(f"\n## cost per BPF program: {' '.join(workload)}, {runs} traced run(s) with "
          "kernel.bpf_stats_enabled=1 (counters cost a little time themselves)")
    saved = BPF_STATS.read_text().strip()
    BPF_STATS.write_text("1")
    progs: dict[str, list[int]] = {}
    events: dict[tuple[str, str], int] = {}
    plain_s = traced_s = tracer_cpu = 0.0
    mib = 0.0
    try:
        for _ in range(runs):
            plain_s += run_once(workload, False, workdir, extra)["s"]
            t = run_once(workload, True, workdir, extra, {PROG_STATS_ENV: "1"}, keep=True)
            traced_s += t["s"]
            tracer_cpu += t["tracer_cpu_s"]
            mib += t["bytes"] / MiB
            for name, (cnt, ns) in t["progs"].items():
                acc = progs.setdefault(name, [0, 0])
                acc[0] += cnt
                acc[1] += ns
            for key, n in _probe_counts(workdir / "bench.kpath").items():
                events[key] = events.get(key, 0) + n
            (workdir / "bench.kpath").unlink(missing_ok=True)
    finally:
        BPF_STATS.write_text(saved)
    added = traced_s - plain_s
    total_ns = sum(ns for _, ns in progs.values())
    print(f"workload: untraced {plain_s / runs:.2f} s, traced {traced_s / runs:.2f} s per run "
          f"(tracing adds {added / runs:.2f} s); BPF programs ran {total_ns / 1e9 / runs:.2f} s "
          f"per run ({100 * total_ns / 1e9 / added if added > 0 else float('nan'):.0f} % of "
          "what tracing adds); the tracer process used "
          f"{tracer_cpu / runs:.2f} s of CPU meanwhile")
    print("| program | runs/MiB | ns/run | ms/MiB | share of BPF time |")
    print("|---|---|---|---|---|")
    for name, (cnt, ns) in sorted(progs.items(), key=lambda kv: -kv[1][1]):
        print(f"| {name} | {cnt / mib:,.1f} | {ns / max(cnt, 1):,.0f} | {ns / 1e6 / mib:.2f} | "
              f"{100 * ns / max(total_ns, 1):.1f} % |")
    print(f"| all | {sum(c for c, _ in progs.values()) / mib:,.1f} | "
          f"{total_ns / max(sum(c for c, _ in progs.values()), 1):,.0f} | "
          f"{total_ns / 1e6 / mib:.2f} | 100 % |")
    print("\n| probe | kind | events/MiB |")
    print("|---|---|---|")
    for (probe, kind), n in sorted(events.items(), key=lambda kv: -kv[1]):
        print(f"| {probe} | {kind} | {n / mib:,.1f} |")
    print(f"| all | | {sum(events.values()) / mib:,.1f} |", flush=True)


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

    _import_tracer()
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
    from tracer.capture.ringbuf import committed, scan

    sizes = np.full(records, RAW_EVENT_SIZE, np.int64)
    sizes[every - 1::every] = RAW_FRAME_SIZE
    records_data, _ = committed(sizes)
    length = len(records_data)
    ring = 1 << (length - 1).bit_length()
    data = np.zeros(2 * ring, np.uint8)
    data[:length] = records_data
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
    ap.add_argument("--ab-object", type=Path, action="append", default=[], metavar="FILE",
                    help="also trace each run with this CO-RE object in place of the "
                    "installed one (A/B of BPF program bodies; root; repeat: one run "
                    "per object)")
    ap.add_argument("--clocksource", action="append", default=[], metavar="NAME",
                    help="run each round once per clocksource named (repeat; switched "
                    "through sysfs, root): e.g. --clocksource hpet --clocksource tsc")
    ap.add_argument("--prog-stats", type=int, default=0, metavar="RUNS",
                    help="then RUNS traced bulk transfers with kernel.bpf_stats_enabled=1: "
                    "run time per BPF program and events per probe, per MiB (root)")
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
               *(f"--ab-object={o}" for o in args.ab_object),
               *(f"--clocksource={c}" for c in args.clocksource), f"--only={args.only}",
               f"--prog-stats={args.prog_stats}"]
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
        if args.prog_stats:
            prog_cost(args.prog_stats, work, args.trace_arg, workloads["bulk"])
        if args.sweep:
            sweep(args.sweep, BULK_SIZE, work, args.trace_arg)


if __name__ == "__main__":
    main()
