"""Peak memory of a command's whole process tree (a command with worker
processes: `kpath replay --stats --jobs N`), and its CPU time.

Samples /proc every 20 ms: the sum of VmRSS over the command and all its
descendants (pages shared between processes, such as forked workers'
imported modules, count once per process), and the sum of Pss from
smaps_rollup (shared pages split among the processes sharing them). CPU:
user + system of the command and every descendant waited for (os.wait4).
Prints one line: wall s, cpu s, peak tree RSS MiB, peak tree PSS MiB,
the command's own ru_maxrss MiB, and the load average at the start.

Usage:
  .venv/bin/python bench/tree_mem.py -o out.txt -- .venv/bin/kpath replay --stats T.kpath
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

MIB = 1 << 20


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError):
            continue
    return out


def _field(path: str, name: str) -> int:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(name):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def tree_memory(pid: int) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) of pid and its descendants, bytes."""
    rss = pss = 0
    for p in _descendants(pid):
        rss += _field(f"/proc/{p}/status", "VmRSS:")
        pss += _field(f"/proc/{p}/smaps_rollup", "Pss:")
    return rss, pss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default=os.devnull, help="the command's stdout")
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("argv", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    load = os.getloadavg()[0]
    with open(args.output, "wb") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out)
        peak_rss = peak_pss = 0
        while True:
            rss, pss = tree_memory(proc.pid)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            waited, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if waited:
                break
            time.sleep(args.interval)
        wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    print(f"wall {wall:.2f} s  cpu {cpu:.2f} s (user {usage.ru_utime:.2f})  "
          f"tree rss {peak_rss / MIB:.0f} MiB  tree pss {peak_pss / MIB:.0f} MiB  "
          f"maxrss {usage.ru_maxrss / 1024:.0f} MiB  load {load:.2f}  exit {proc.returncode}")
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
