"""bench/bench_replay.py's measuring: a child's own peak RSS, caps that
stop or skip a command, commands this kpath lacks reported as such."""

from __future__ import annotations

import sys

from bench.bench_replay import (
    MIB,
    NOT_AVAILABLE,
    Caps,
    Result,
    kpath,
    measure,
    parse_size,
)
from bench.synth import convert_argv


def test_peak_rss_is_the_childs_own() -> None:
    small = measure("small", [sys.executable, "-c", "pass"], 1, 60, 1 << 40)
    big = measure("big", [sys.executable, "-c", "b = bytearray(200 << 20); b[::4096] = b'x' * "
                          "len(b[::4096])"], 1, 60, 1 << 40)
    assert small.ok and big.ok
    assert small.rss is not None and big.rss is not None
    assert small.rss < 40 * MIB  # not this test process's RSS
    assert big.rss >= 200 * MIB


def test_caps_stop_a_child_and_skip_what_would_pass_them() -> None:
    res = measure("slow", [sys.executable, "-c", "import time; time.sleep(30)"], 1, 0.5, 1 << 40)
    assert res.status.startswith("skipped (cap)")
    assert res.wall is not None and res.wall < 10
    caps = Caps(timeout=100, rss_cap=1 << 30)
    caps.seen["x"] = [Result("x", 1000, "ok", wall=1.0, rss=100 * MIB),
                      Result("x", 2000, "ok", wall=2.0, rss=110 * MIB)]
    assert caps.predict("x", 50_000) is None  # 50 s, 590 MiB
    assert caps.predict("x", 200_000).startswith("skipped (cap)")  # type: ignore[union-attr]


def test_a_command_this_kpath_lacks_is_not_available() -> None:
    res = measure("nope", kpath("no-such-command-here", "x"), 1, 60, 1 << 40)
    assert res.status == NOT_AVAILABLE


def test_convert_command_line_follows_its_usage(tmp_path) -> None:  # type: ignore[no-untyped-def]
    a, b = tmp_path / "a", tmp_path / "b"
    two = "Usage: kpath convert [OPTIONS] SRC DST\n"
    one = "Usage: kpath convert [OPTIONS] FILE\n\n  -o, --output OUT  where\n"
    assert convert_argv(two, a, b)[-2:] == [str(a), str(b)]  # type: ignore[index]
    assert convert_argv(one, a, b)[-3:] == [str(a), "-o", str(b)]  # type: ignore[index]
    assert convert_argv("Usage: kpath convert [OPTIONS] FILE\n", a, b) is None
    assert parse_size("1M") == 1_000_000 and parse_size("200k") == 200_000


def test_baselines_read_every_event(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    from pathlib import Path

    import pytest

    from bench.synth import write_synthetic

    root = Path(__file__).resolve().parent.parent.parent
    trace = tmp_path / "synthetic.kpath"
    res = write_synthetic(root / "tests" / "data" / "hello_hi.kpath", trace, 5)
    script = str(root / "bench" / "bench_replay.py")
    out = subprocess.run([sys.executable, script, "--child", "json", str(trace)],
                         capture_output=True, text=True, check=True).stdout
    assert int(out) == res.events
    pytest.importorskip("duckdb")
    out = subprocess.run([sys.executable, script, "--child", "duckdb", str(trace)],
                         capture_output=True, text=True, check=True).stdout
    assert int(out) == res.events
