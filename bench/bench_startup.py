"""Start-up benchmark: from `kpath trace` to every probe attached, per backend.

Each run starts `python -m kpath trace --backend B --duration 0.2
--ready-file F` as a user would and measures two things side by side:
- wall: from the process start to the ready file (written once every probe
  is attached): what a user waits for;
- attach: what kpath itself reports on stderr ("attached N probes in X s"),
  from run_trace's start (Python start-up and imports excluded).
Backends are interleaved run by run (core, bcc, core, bcc, ...) so that a
slow phase of the machine (TCG swings 2x) hits both alike. Backends whose
prerequisites are missing here are reported and skipped.

Usage (root):
  .venv/bin/python bench/bench_startup.py [--runs 5] [--backends core,bcc]
  kpath vm run --kernel 6.1 -- python3 bench/bench_startup.py --runs 3
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tracer.capture import bcc, core  # noqa: E402
from tracer.capture.base import first_failure  # noqa: E402

ATTACHED = re.compile(r"attached (\d+) probes in ([0-9.]+) s")


def one_run(backend: str, workdir: Path, timeout: float) -> tuple[float, float, int]:
    """(wall s to ready, in-process attach s, probes attached)."""
    ready = workdir / f"ready-{backend}"
    ready.unlink(missing_ok=True)
    out = workdir / f"bench-{backend}.kpath"
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kpath", "trace", "--backend", backend, "--duration", "0.2",
         "--ready-file", str(ready), "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    wall = None
    while proc.poll() is None and time.monotonic() - start < timeout:
        if ready.exists():
            wall = time.monotonic() - start
            break
        time.sleep(0.002)
    _, err = proc.communicate(timeout=timeout)
    m = ATTACHED.search(err)
    if proc.returncode != 0 or wall is None or m is None:
        raise RuntimeError(f"{backend}: trace failed (exit {proc.returncode}):\n{err}")
    return wall, float(m.group(2)), int(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--backends", default="core,bcc")
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args()
    wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
    usable = []
    for name in wanted:
        checks = core.prerequisites() if name == "core" else bcc.prerequisites()
        failed = first_failure(checks)
        if failed is None:
            usable.append(name)
        else:
            print(f"{name}: not usable here ({failed.name}: {failed.detail})")
    results: dict[str, list[tuple[float, float, int]]] = {b: [] for b in usable}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            for name in usable:
                results[name].append(one_run(name, Path(tmp), args.timeout))
                wall, attach, n = results[name][-1]
                print(f"run {i + 1} {name}: ready after {wall:.3f} s, attach {attach:.3f} s, "
                      f"{n} probes", file=sys.stderr)
    print(f"kernel {platform.release()}, {args.runs} interleaved runs per backend, "
          "default profile")
    print("| backend | probes | wall to ready: median (min-max) | in-process attach: median |")
    print("|---|---|---|---|")
    for name, rows in results.items():
        walls = [r[0] for r in rows]
        attaches = [r[1] for r in rows]
        print(f"| {name} | {rows[0][2]} | {statistics.median(walls):.3f} s "
              f"({min(walls):.3f}-{max(walls):.3f}) | {statistics.median(attaches):.3f} s |")
    if len(results) == 2 and all(results.values()):
        c = statistics.median(r[0] for r in results["core"])
        b = statistics.median(r[0] for r in results["bcc"])
        print(f"bcc / core wall-time ratio: {b / c:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
