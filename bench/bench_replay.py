"""Replay benchmark on SYNTHETIC traces of 1 M and 10 M events.

The traces are made, not recorded (bench/synth.py): whole copies of a real
recording (default tests/data/hello_hi.kpath), each a connection of its own,
overlapping in time, until the trace holds the size asked for (whole copies:
a few events more). Before timing anything, a 20-copy trace is checked to
replay --stats like the recording (no MISMATCH, no warning the recording
does not have).

Each command runs as a user runs it, in a child process of its own, on the
same v1 (JSON Lines) file: wall time (start-up included, from the
command's fork to its exit), events per second its CPU time (user + system)
and its peak RSS (from os.wait4 in a small spawner: the command and the
children it waited for, not this bench); the
load average is printed before and after (other work on the machine slows
the wall time, much less the CPU time):

- baselines: a bare `json.loads` of every line (one core), and DuckDB
  (`read_json` with the event columns of tracer/events.py's EVENT_SCHEMA,
  plus a group-by per probe; DuckDB's own threads);
- `kpath replay --stats`, `kpath replay --format json` (output to /dev/null),
  `kpath export -f FMT` for each format (default summarisation);
- trace format v2: `kpath convert` of a 2 M-event v1 trace, then
  `kpath replay --stats` of the result, as a ratio to the json.loads pass
  over the v1 file (target <= 0.3x, <= 256 MiB). A command this kpath does
  not have is reported "not available in this kpath" (asked with --help).

Caps: a command runs under a timeout (--timeout, 600 s) and an RSS cap
(--rss-cap, 8 GiB), polled from /proc and killed past either; a command
whose time or RSS at the smaller sizes, extrapolated linearly, passes a cap
is not started: "skipped (cap)" (the object-based replay at 10 M events
would take minutes and some 17 GB).

Usage:
  .venv/bin/python bench/bench_replay.py                # 100k, 1M and 10M events
  .venv/bin/python bench/bench_replay.py --stats-files h1m.kpath b1m.kpath --baseline ../main \\
      --json-v1 h2m.v1.kpath --rounds 2      # replay --stats of v2 traces beside another checkout
  .venv/bin/python bench/bench_replay.py --quick        # 20k and 100k events, a few formats
  .venv/bin/python bench/bench_replay.py --sizes 1M --formats svg,html --outdir /tmp/b
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# bench.synth (numpy, tracer) is imported where needed: the baseline children
# start with this file and must not carry it.

FORMATS = ("svg", "png", "pdf", "dot", "mermaid", "plantuml", "perfetto", "html")
NOT_AVAILABLE = "not available in this kpath"
MIB = 1 << 20
TARGET_EVENTS_PER_S = 1_000_000
TARGET_RSS = 256 * MIB
TARGET_RATIO = 0.3


# ---- children: the baselines run in a process of their own, like kpath ----

def child_json(path: str) -> None:
    """json.loads of every line; prints the number of event records."""
    n = 0
    with open(path, "rb") as fh:
        for line in fh:
            if "event" in json.loads(line):
                n += 1
    print(n)


def duckdb_event_type() -> str:
    """The v1 event record as a DuckDB STRUCT, from the one definition of the
    event columns (EVENT_SCHEMA); v1 writes enumerations, names and IPv4
    addresses as text."""
    import pyarrow as pa

    from tracer.events import EVENT_SCHEMA

    def sql(t: pa.DataType) -> str:
        if pa.types.is_dictionary(t) or pa.types.is_string(t):
            return "VARCHAR"
        return {pa.uint8(): "UTINYINT", pa.uint16(): "USMALLINT", pa.uint32(): "UINTEGER",
                pa.uint64(): "UBIGINT", pa.int64(): "BIGINT", pa.int8(): "TINYINT",
                pa.int32(): "INTEGER"}[t]

    text = {"saddr", "daddr"}
    return "STRUCT(" + ", ".join(
        f"{f.name} {'VARCHAR' if f.name in text else sql(f.type)}" for f in EVENT_SCHEMA) + ")"


def child_duckdb(path: str) -> None:
    """DuckDB read_json of the events plus a group-by per probe; prints the
    number of events. Exit 3 when DuckDB is not installed."""
    try:
        import duckdb
    except ImportError:
        print("DuckDB is not installed: pip install 'kpath[bench]' (or pip install duckdb)",
              file=sys.stderr)
        sys.exit(3)
    con = duckdb.connect()
    rows = con.execute(
        "SELECT event.probe AS probe, count(*) AS n, sum(event.length) AS bytes, "
        "min(event.ts_ns), max(event.ts_ns) "
        "FROM read_json(?, format = 'newline_delimited', columns = {'event': '"
        + duckdb_event_type() + "'}) WHERE event IS NOT NULL GROUP BY probe ORDER BY n DESC",
        [path]).fetchall()
    print(sum(r[1] for r in rows))


# ---- measuring a child ----

@dataclasses.dataclass
class Result:
    label: str
    events: int
    status: str  # "ok", "failed: ...", "skipped (cap): ...", NOT_AVAILABLE
    wall: float | None = None
    rss: int | None = None  # bytes
    cpu: float | None = None  # user + system seconds of the command and its children
    note: str = ""
    # peak of the summed RSS of the command and its descendants, polled
    # (`replay --stats` with worker processes: rss is one process's peak)
    tree_rss: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def row(self) -> str:
        if not self.ok:
            return f"| {self.label} | {self.status} | | | | {self.note} |"
        assert self.wall is not None and self.rss is not None
        cpu = f"{self.cpu:,.1f} s" if self.cpu is not None else "?"
        note = self.note
        if self.tree_rss is not None and self.tree_rss > self.rss + 4 * MIB:
            note = f"{note}; process tree {self.tree_rss / MIB:,.0f} MiB".lstrip("; ")
        return (f"| {self.label} | {self.wall:,.1f} s | {cpu} | {self.events / self.wall:,.0f} | "
                f"{self.rss / MIB:,.0f} MiB | {note} |")


# The measured command runs under a small spawner (python -S, a few MiB)
# that reports the command's own ru_maxrss: a child forked straight from
# this bench would count the bench's RSS at fork time as its peak (Linux
# keeps a process's pre-exec high-water mark). It also times the command,
# from its fork to its exit: the bench's own clock, read when its polling
# (every 50 ms, for the RSS caps) sees the exit, added up to 50 ms and the
# spawner's start-up (~15 ms) to every run (before 2026-12-04).
_SPAWNER = """
import os, sys, time
t0 = time.monotonic()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
wall = time.monotonic() - t0
with open(sys.argv[1], "w") as fh:
    fh.write(f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime} {wall}")
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def _tree_rss(pid: int) -> int:
    """RSS of pid's descendants (from /proc): the command's process tree,
    without the spawner (pid) that measures it (~9 MiB)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            if p != pid:
                with open(f"/proc/{p}/status") as fh:
                    for line in fh:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) * 1024
                            break
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError):
            continue
    return total


def measure(label: str, argv: list[str], events: int, timeout: float, rss_cap: int,
            stdout: Path | None = None, cwd: Path = ROOT) -> Result:
    """Run argv (cwd: the repository) and measure it; killed past a cap."""
    out = open(stdout, "wb") if stdout is not None else subprocess.DEVNULL  # noqa: SIM115
    err = tempfile.TemporaryFile()  # noqa: SIM115
    with tempfile.NamedTemporaryFile("r", prefix="kpath-bench-rss-") as rss_file:
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-S", "-c", _SPAWNER, rss_file.name, *argv],
                                cwd=cwd, stdout=out, stderr=err, start_new_session=True)
        killed = ""
        tree_peak = 0
        while proc.poll() is None:
            elapsed = time.monotonic() - t0
            rss = _tree_rss(proc.pid)
            tree_peak = max(tree_peak, rss)
            if not killed and (elapsed > timeout or rss > rss_cap):
                killed = (f"stopped after {elapsed:.0f} s at {rss / MIB:,.0f} MiB "
                          f"(caps {timeout:.0f} s, {rss_cap / MIB:,.0f} MiB)")
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.05)
        wall = time.monotonic() - t0  # to the poll that saw the exit: a killed run's
        text = rss_file.read().split()
    peak = int(text[0]) * 1024 if text else None
    cpu = float(text[1]) if len(text) > 1 else None
    if len(text) > 2:
        wall = float(text[2])  # the command's own, from its fork to its exit
    if stdout is not None:
        out.close()  # type: ignore[union-attr]
    err.seek(0)
    stderr = err.read().decode(errors="replace").strip()
    err.close()
    if killed:
        return Result(label, events, f"skipped (cap): {killed}", wall, peak, cpu)
    if proc.returncode != 0:
        if "No such command" in stderr:
            return Result(label, events, NOT_AVAILABLE)
        last = stderr.splitlines()[-1] if stderr else f"exit {proc.returncode}"
        return Result(label, events, f"failed: {last[:200]}", wall, peak, cpu)
    return Result(label, events, "ok", wall, peak, cpu, tree_rss=tree_peak or None)


class Caps:
    """Skips a command whose earlier runs, extrapolated, pass a cap: a line
    through the two largest sizes measured (one: through the origin)."""

    def __init__(self, timeout: float, rss_cap: int) -> None:
        self.timeout, self.rss_cap = timeout, rss_cap
        self.seen: dict[str, list[Result]] = {}

    def predict(self, key: str, events: int) -> str | None:
        runs = self.seen.get(key, [])
        capped = [r for r in runs if r.status.startswith("skipped (cap)") and r.events <= events]
        if capped:
            return f"skipped (cap): already past a cap at {capped[-1].events:,} events"
        ok = sorted((r for r in runs if r.ok), key=lambda r: r.events)
        if not ok:
            return None
        last = ok[-1]
        assert last.wall is not None and last.rss is not None
        first = ok[-2] if len(ok) > 1 and ok[-2].events < last.events else None

        def extrapolate(y1: float, y2: float) -> float:
            if first is None:
                return y2 * events / last.events
            slope = max((y2 - y1) / (last.events - first.events), 0.0)
            return y2 + slope * (events - last.events)

        wall = extrapolate(first.wall if first else 0.0, last.wall)  # type: ignore[arg-type]
        rss = extrapolate(first.rss if first else 0.0, last.rss)  # type: ignore[arg-type]
        if wall > self.timeout or rss > self.rss_cap:
            return (f"skipped (cap): {last.wall:,.0f} s and {last.rss / MIB:,.0f} MiB at "
                    f"{last.events:,} events predict {wall:,.0f} s and "
                    f"{rss / (1 << 30):,.1f} GiB")
        return None

    def run(self, key: str, label: str, argv: list[str], events: int,
            stdout: Path | None = None) -> Result:
        why = self.predict(key, events)
        if why is not None:
            return Result(label, events, why)
        res = measure(label, argv, events, self.timeout, self.rss_cap, stdout)
        self.seen.setdefault(key, []).append(res)
        return res


# ---- the bench ----

def kpath(*args: str) -> list[str]:
    return [sys.executable, "-m", "kpath", *args]


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 200k, 1M, 10M)")
    mult = {"": 1, "k": 1000, "m": 1_000_000}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


def stats_check(path: Path, source_warnings: int, copies: int) -> str:
    """What the --stats output says of the trace's consistency."""
    text = path.read_text(errors="replace")
    mismatch = text.count("MISMATCH")
    warnings = sum(ln.startswith("    !!") for ln in text.splitlines())
    extra = warnings - source_warnings * copies
    if mismatch or extra:
        return f"INCONSISTENT: {mismatch} MISMATCH, {extra} extra warning(s)"
    return "accounting ok"


def make_trace(source: Path, events: int, out: Path) -> tuple[int, int]:
    from bench.synth import copies_for, write_synthetic

    res = write_synthetic(source, out, copies_for(source, events))
    print(f"  synthetic {out.name}: {res.copies:,} copies of {source.name}, "
          f"{res.events:,} events, {res.bytes / 1e6:,.0f} MB, made in {res.seconds:.1f} s",
          flush=True)
    return res.events, res.copies


def bench_size(caps: Caps, source: Path, events_asked: int, outdir: Path,
               formats: list[str], source_warnings: int) -> list[Result]:
    trace = outdir / f"synthetic_{events_asked}.kpath"
    events, copies = make_trace(source, events_asked, trace)
    results = []

    def show(res: Result) -> Result:
        print("  " + res.row(), flush=True)
        results.append(res)
        return res

    me = [sys.executable, str(Path(__file__).resolve())]
    show(caps.run("json", "json.loads per line (baseline)", [*me, "--child", "json", str(trace)],
                  events))
    duck = show(caps.run("duckdb", "DuckDB read_json + group by probe (baseline)",
                         [*me, "--child", "duckdb", str(trace)], events))
    if duck.status.startswith("failed") and "DuckDB is not installed" in duck.status:
        duck.status = "not installed: pip install 'kpath[bench]'"
    stats_out = outdir / "stats.txt"
    res = caps.run("stats", "kpath replay --stats", kpath("replay", "--stats", str(trace)),
                   events, stdout=stats_out)
    if res.ok:
        res.note = stats_check(stats_out, source_warnings, copies)
    show(res)
    stats_out.unlink(missing_ok=True)
    show(caps.run("json-out", "kpath replay --format json",
                  kpath("replay", "--format", "json", str(trace)), events))
    for fmt in formats:
        out = outdir / f"export.{fmt}"
        r = caps.run(f"export-{fmt}", f"kpath export -f {fmt}",
                     kpath("export", str(trace), "-f", fmt, "-o", str(out)), events)
        if r.ok and out.exists():
            r.note = f"{out.stat().st_size / 1024:,.0f} KiB"
        out.unlink(missing_ok=True)
        show(r)
    trace.unlink()
    return results


def bench_v2(caps: Caps, source: Path, events_asked: int, outdir: Path,
             source_warnings: int) -> list[Result]:
    v1 = outdir / f"synthetic_{events_asked}.kpath"
    v2 = outdir / f"synthetic_{events_asked}.v2.kpath"
    results = []

    def show(res: Result) -> Result:
        print("  " + res.row(), flush=True)
        results.append(res)
        return res

    from bench.synth import convert_argv, convert_help

    help_text = convert_help()
    if help_text is None:
        for label in ("kpath convert v1 -> v2", "kpath replay --stats (v2)"):
            show(Result(label, events_asked, NOT_AVAILABLE,
                        note="no `kpath convert`: trace format v2 not in this kpath"))
        return results
    events, copies = make_trace(source, events_asked, v1)
    me = [sys.executable, str(Path(__file__).resolve())]
    base = show(caps.run("v2-json", "json.loads per line over the v1 file (baseline)",
                         [*me, "--child", "json", str(v1)], events))
    argv = convert_argv(help_text, v1, v2)
    if argv is None:
        show(Result("kpath convert v1 -> v2", events, "failed: cannot read its usage line"))
        return results
    conv = caps.run("v2-convert", "kpath convert v1 -> v2", argv, events)
    if conv.ok and v2.exists():
        conv.note = f"{v1.stat().st_size / 1e6:,.0f} MB -> {v2.stat().st_size / 1e6:,.0f} MB"
    show(conv)
    v1.unlink()
    if not conv.ok:
        return results
    stats_out = outdir / "stats.txt"
    stats = caps.run("v2-stats", "kpath replay --stats (v2)",
                     kpath("replay", "--stats", str(v2)), events, stdout=stats_out)
    if stats.ok:
        stats.note = stats_check(stats_out, source_warnings, copies) + "; "
    stats_out.unlink(missing_ok=True)
    if stats.ok and base.ok:
        assert stats.wall is not None and base.wall is not None and stats.rss is not None
        ratio = stats.wall / base.wall
        cpu = (f", CPU {stats.cpu / base.cpu:.2f}x" if stats.cpu is not None
               and base.cpu else "")
        stats.note += (f"{ratio:.2f}x json.loads{cpu} (target <= {TARGET_RATIO}x: "
                       f"{'met' if ratio <= TARGET_RATIO else 'not met'}); RSS "
                       f"{'<=' if stats.rss <= TARGET_RSS else '>'} 256 MiB")
    show(stats)
    v2.unlink(missing_ok=True)
    return results


def bench_stats_files(files: list[Path], baseline: Path | None, v1: Path | None, rounds: int,
                      timeout: float, rss_cap: int, outdir: Path, jobs: list[int]) -> None:
    """`kpath replay --stats` of traces already made, by this checkout and
    by `baseline` (another checkout: `python -m kpath` run in it), with each
    --jobs value, run by run alternating, outputs compared byte for byte;
    with `v1`, a json.loads pass over that file in each round (the format
    target's baseline)."""
    trees = [(f"this{_jobs_tag(j)}", ROOT, j) for j in jobs] + (
        [(f"baseline{_jobs_tag(j)}", baseline, j) for j in jobs] if baseline is not None else [])
    me = [sys.executable, str(Path(__file__).resolve())]
    runs: dict[tuple[str, str], list[Result]] = {}
    for r in range(rounds):
        if v1 is not None:
            runs.setdefault((v1.name, "json.loads"), []).append(measure(
                "json.loads", [*me, "--child", "json", str(v1)], 0, timeout, rss_cap))
        for f in files:
            texts = []
            for name, tree, j in trees:
                out = outdir / "stats.txt"
                res = measure(f"replay --stats ({name})",
                              kpath("replay", "--stats", "--jobs", str(j), str(f)), 0,
                              timeout, rss_cap, stdout=out, cwd=tree)
                with open(out, "rb") as fh:
                    m = re.search(rb": (\d+) events", fh.read(4096))
                    fh.seek(0)
                    texts.append(hashlib.file_digest(fh, "sha256").digest())
                out.unlink()
                res.events = int(m[1]) if m else 0
                runs.setdefault((f.name, name), []).append(res)
            if len(set(texts)) > 1:
                print(f"  {f.name}: the outputs DIFFER", flush=True)
        print(f"  round {r + 1} of {rounds} done (load average {os.getloadavg()[0]:.1f})",
              flush=True)
    print("  | trace | command | CPU per run | events/s of CPU (best) | peak RSS | "
          "process tree peak RSS | wall | events/s of wall (median) |")
    print("  |---|---|---:|---:|---:|---:|---:|---:|")
    for (trace, name), results in runs.items():
        ok = [x for x in results if x.ok and x.cpu]
        if not ok:
            print(f"  | {trace} | {name} | {results[0].status} | | | | | |")
            continue
        cpus = ", ".join(f"{x.cpu:.2f} s" for x in ok)
        rate = f"{max(x.events / x.cpu for x in ok if x.cpu):,.0f}" if ok[0].events else ""
        rss = sorted(x.rss / MIB for x in ok if x.rss)
        walls = ", ".join(f"{x.wall:.2f} s" for x in ok if x.wall)
        # polled every 50 ms, the spawner's few MiB included
        tree = sorted(x.tree_rss / MIB for x in ok if x.tree_rss)
        trees = f"{tree[0]:,.0f}-{tree[-1]:,.0f} MiB" if tree else ""
        wall = sorted(x.wall for x in ok if x.wall)
        per_wall = (f"{ok[0].events / wall[len(wall) // 2]:,.0f}"
                    if ok[0].events and wall else "")
        print(f"  | {trace} | {name} | {cpus} | {rate} | {rss[0]:,.0f}-{rss[-1]:,.0f} MiB "
              f"| {trees} | {walls} | {per_wall} |")


def _jobs_tag(jobs: int) -> str:
    return "" if jobs == 1 else f", --jobs {jobs}"


# Bounded memory of the object timeline's outputs (issue 8 item 4): a trace
# the window planner can cut (connections one after another) and one it
# cannot (bulk transfers in flight together: one window, the whole trace).
JSON_TRACES = (("many small flows", "host_chat_tracepoints.kpath", 1.0),
               ("overlapping bulk", "bulk_1mib.kpath", 8.0))


def bench_json(caps: Caps, events_asked: int, outdir: Path) -> list[Result]:
    from bench.synth import copies_for, write_synthetic

    results = []
    for name, source_name, overlap in JSON_TRACES:
        source = ROOT / "tests" / "data" / source_name
        trace = outdir / f"synthetic_json_{overlap:g}.kpath"
        res = write_synthetic(source, trace, copies_for(source, events_asked), overlap=overlap)
        print(f"  synthetic {name}: {res.copies:,} copies of {source_name} "
              f"({overlap:g} in flight), {res.events:,} events", flush=True)
        key = name.replace(" ", "-")
        for label, argv in (
                ("kpath replay --format json", kpath("replay", "--format", "json", str(trace))),
                ("kpath export -f perfetto",
                 kpath("export", str(trace), "-f", "perfetto", "-o", os.devnull))):
            r = caps.run(f"{key}-{label}", f"{label} ({name})", argv, res.events)
            if r.rss is not None:
                r.note = f"RSS {'<=' if r.rss <= TARGET_RSS else '>'} 256 MiB"
            print("  " + r.row(), flush=True)
            results.append(r)
        trace.unlink()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100k,1M,10M",
                    help="events per trace, comma-separated (200k, 1M, 10M); default "
                         "100k,1M,10M (the small size predicts which commands would pass a cap)")
    ap.add_argument("--v2-size", default="2M", help="events of the v1 trace converted to v2")
    ap.add_argument("--source", type=Path, default=ROOT / "tests" / "data" / "hello_hi.kpath",
                    help="the real recording copied (default tests/data/hello_hi.kpath)")
    ap.add_argument("--formats", default=",".join(FORMATS), help="export formats")
    ap.add_argument("--outdir", type=Path,
                    help="where the synthetic traces go (default: a temporary directory)")
    ap.add_argument("--json-size", default="1M",
                    help="events of the two traces replay --format json and export -f "
                         "perfetto are measured on for bounded memory (0: skip)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per command")
    ap.add_argument("--rss-cap", type=float, default=8.0, help="GiB per command")
    ap.add_argument("--quick", action="store_true",
                    help="a small run: 20k and 100k events, v2 at 50k, svg and perfetto")
    ap.add_argument("--stats-files", type=Path, nargs="+", metavar="TRACE",
                    help="only `replay --stats` of these traces (made beforehand, e.g. v2 by "
                         "bench.synth), CPU time per run")
    ap.add_argument("--baseline", type=Path, metavar="DIR",
                    help="with --stats-files: another checkout run beside this one")
    ap.add_argument("--json-v1", type=Path, metavar="V1",
                    help="with --stats-files: a json.loads pass over this v1 file each round")
    ap.add_argument("--rounds", type=int, default=2, help="with --stats-files: runs of each")
    ap.add_argument("--jobs", default="1", metavar="N[,M]",
                    help="with --stats-files: replay --stats --jobs values run (default 1)")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        {"json": child_json, "duckdb": child_duckdb}[args.child[0]](args.child[1])
        return
    if args.stats_files:
        print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
        with tempfile.TemporaryDirectory(prefix="kpath-bench-replay-") as scratch:
            bench_stats_files(args.stats_files, args.baseline, args.json_v1, args.rounds,
                              args.timeout, int(args.rss_cap * (1 << 30)), Path(scratch),
                              [int(j) for j in args.jobs.split(",")])
        return
    if args.quick:
        args.sizes, args.v2_size, args.formats = "20k,100k", "50k", "svg,perfetto"
        args.json_size = "50k"
    sizes = sorted(parse_size(s) for s in args.sizes.split(","))
    formats = [f for f in args.formats.split(",") if f]
    caps = Caps(args.timeout, int(args.rss_cap * (1 << 30)))

    from bench.synth import inconsistency, write_synthetic

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    print(f"kpath {commit} (python {platform.python_version()}, {os.cpu_count()} cores, "
          f"{datetime.date.today()}), source {args.source.name}, "
          f"load average {os.getloadavg()[0]:.2f}")
    tmp = None
    if args.outdir is None:
        tmp = tempfile.mkdtemp(prefix="kpath-bench-replay-")
        outdir = Path(tmp)
    else:
        outdir = args.outdir
        outdir.mkdir(parents=True, exist_ok=True)
    try:
        small = outdir / "synthetic_check.kpath"
        write_synthetic(args.source, small, 20, overlap=8)
        problem = inconsistency(args.source, small, 20)
        small.unlink()
        if problem:
            sys.exit(f"synthetic trace is inconsistent: {problem}")
        src_stats = subprocess.run(kpath("replay", "--stats", str(args.source)), cwd=ROOT,
                                   capture_output=True, text=True, check=True).stdout
        source_warnings = sum(ln.startswith("    !!") for ln in src_stats.splitlines())
        print("20 synthetic copies replay --stats like the recording: consistent\n")
        all_results: dict[int, list[Result]] = {}
        for n in sizes:
            print(f"{n:,} events (synthetic):")
            print("  | command | wall | CPU | events/s | peak RSS | note |")
            print("  |---|---:|---:|---:|---:|---|")
            all_results[n] = bench_size(caps, args.source, n, outdir, formats, source_warnings)
            print()
        v2_events = parse_size(args.v2_size)
        print(f"trace format v2, {v2_events:,} events (synthetic):")
        print("  | command | wall | CPU | events/s | peak RSS | note |")
        print("  |---|---:|---:|---:|---:|---|")
        bench_v2(caps, args.source, v2_events, outdir, source_warnings)
        print()
        json_events = parse_size(args.json_size)
        if json_events:
            print(f"bounded memory, {json_events:,} events (synthetic; target <= 256 MiB):")
            print("  | command | wall | CPU | events/s | peak RSS | note |")
            print("  |---|---:|---:|---:|---:|---|")
            bench_json(caps, json_events, outdir)
            print()
        big = max(sizes)
        stats = next(r for r in all_results[big] if r.label == "kpath replay --stats")
        if stats.ok:
            assert stats.wall is not None and stats.rss is not None
            rate = stats.events / stats.wall
            met = rate >= TARGET_EVENTS_PER_S and stats.rss <= TARGET_RSS
            print(f"target (issue 8): replay --stats >= 1 M events/s, <= 256 MiB at 10 M events: "
                  f"at {big:,}: {rate:,.0f} events/s, {stats.rss / MIB:,.0f} MiB: "
                  f"{'met' if met else 'not met'}")
        else:
            print(f"target (issue 8): replay --stats at {big:,} events: {stats.status}")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
