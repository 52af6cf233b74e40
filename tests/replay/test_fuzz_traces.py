"""No file can crash kpath: thousands of broken traces, made by seeded
mutations of the recordings in tests/data (tests/replay/trace_mutations.py),
each run through `replay` (text, --stats, --format json) and `export`
(mermaid and perfetto JSON to stdout; every DOT_EVERY-th file dot too) in
this process. What must hold for every run:

- no exception escapes: a clean refusal is one `kpath: error:` line and a
  non-zero status (a file `replay` refuses is not read again by the other
  commands that read it the same way: they print the same line);
- what reaches stdout is UTF-8 without a control character (text, mermaid)
  or strict JSON (no NaN, no lone surrogate) that parses;
- each run ends in bounded CPU time with bounded output.

The reader refuses what does not fit its schema (tracer/tracefile/schema.py)
with one line; anything escaping from anywhere fails the test.
"""

from __future__ import annotations

import inspect
import json
import random
import re
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

import tracer.tracefile.scan as scan
from kpath.cli import cli
from tests.replay.recordings import DATA, needs_recordings
from tests.replay.trace_mutations import JSONL_MUTATORS, V2_MUTATORS, is_v2
from tracer.tracefile import TraceWriter, read_trace

pytestmark = needs_recordings

SEEDS_PER_FIXTURE = {"jsonl": 20, "v2": 50}  # 13 x 7 x 20 + 5 x 1 x 50 = 2070 files
DOT_EVERY = 10
# bulk_1mib is the one big recording: its first lines (and its trailer) stand
# for it, so that a file takes milliseconds.
PREFIX_LINES = 300
MAX_CPU_S = 10.0  # per command; a good recording takes well under 0.1 s
# stdout of one command at most: this many times the input, plus this much.
OUT_FACTOR, OUT_SLACK = 16, 4 << 20
# Reading in chunks of this size (not the default 32 MiB, which the reader
# allocates whatever the file's size: 30 ms a file): most files then span
# several chunks, so lines that straddle a chunk boundary are exercised.
CHUNK_BYTES = 64 << 10

COMMANDS: tuple[tuple[str, ...], ...] = (
    ("replay",), ("replay", "--stats"), ("replay", "--format", "json"),
    ("export", "-f", "mermaid", "-o", "-"), ("export", "-f", "perfetto", "-o", "-"),
)
DOT = ("export", "-f", "dot", "-o", "-")
# Reads the file batch by batch (tracer/tracefile scan_trace), not through
# read_trace as the others do.
SCAN_COMMANDS = (("replay", "--stats"),)
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_LONE_SURROGATE = re.compile(
    r"(?<!\\)(?:\\\\)*\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f])|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f]")


@dataclass(frozen=True)
class Case:
    mutator: str
    fixture: str
    seed: int

    def __str__(self) -> str:
        return f"{self.mutator}/{self.fixture}/seed {self.seed}"


def _bases() -> dict[str, bytes]:
    out = {}
    for path in sorted(DATA.glob("*.kpath")):
        data = path.read_bytes()
        if not is_v2(data) and data.count(b"\n") > 2 * PREFIX_LINES:
            lines = data.rstrip(b"\n").split(b"\n")
            data = b"\n".join(lines[:PREFIX_LINES] + lines[-1:]) + b"\n"
        elif is_v2(data):
            data = _v2_prefix(path) or data
        out[path.name] = data
    return out


def _v2_prefix(path: Path) -> bytes | None:
    """A big version 2 recording's first PREFIX_LINES events, with its header
    and trailer (as the first lines of a version 1 one): zstd packs an event
    in a few bytes, so the whole file's output would dwarf its size."""
    trace = read_trace(path)
    if trace.num_events <= 2 * PREFIX_LINES or trace.trailer is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        cut = Path(tmp) / "prefix.kpath"
        w = TraceWriter(cut, trace.header)
        w.write_batch(trace.table.slice(0, PREFIX_LINES).combine_chunks().to_batches()[0])
        w.write_trailer(trace.trailer)
        return cut.read_bytes()


BASES = _bases()


def _cases(mutator: str) -> Iterator[Case]:
    for name, data in BASES.items():
        kind = "v2" if is_v2(data) else "jsonl"
        if mutator in (V2_MUTATORS if kind == "v2" else JSONL_MUTATORS):
            for seed in range(SEEDS_PER_FIXTURE[kind]):
                yield Case(mutator, name, seed)


def _mutate(case: Case) -> bytes:
    data = BASES[case.fixture]
    table = V2_MUTATORS if is_v2(data) else JSONL_MUTATORS
    return table[case.mutator](data, random.Random(f"{case} kpath"))


def _place(exc: BaseException) -> str:
    """file:line of the innermost frame of kpath's own code."""
    root = Path(__file__).resolve().parents[2]
    ours = [f for f in traceback.extract_tb(exc.__traceback__)
            if f.filename.startswith(str(root)) and "/tests/" not in f.filename]
    if not ours:
        return "?"
    return f"{Path(ours[-1].filename).relative_to(root)}:{ours[-1].lineno}"


def _check_output(cmd: tuple[str, ...], out: bytes, size: int) -> str | None:
    """What is wrong with a command's stdout, or None."""
    if len(out) > OUT_FACTOR * size + OUT_SLACK:
        return f"{len(out)} bytes of output for {size} of input"
    try:
        text = out.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"stdout is not UTF-8: {exc}"
    if "json" in cmd or "perfetto" in cmd:
        if not text:
            return None
        try:
            json.loads(text, parse_constant=_no_constant)
        except ValueError as exc:
            return f"stdout is not strict JSON: {str(exc)[:120]}"
        m = _LONE_SURROGATE.search(text)
        return f"lone surrogate in JSON: {m.group()}" if m else None
    if "dot" in cmd:
        text = text.replace("\t", " ")  # graphviz indents the DOT source with tabs
    m = _CONTROL.search(text)
    return f"control character {m.group()!r} in stdout" if m else None


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _run(runner: CliRunner, case: Case, path: Path, size: int, index: int
         ) -> Iterator[tuple[str, str]]:
    """(what failed, where) for each command that broke a rule."""
    commands = COMMANDS + ((DOT,) if index % DOT_EVERY == 0 else ())
    refused = ""
    for cmd in commands:
        if refused and cmd not in SCAN_COMMANDS:
            # The file read_trace refused: every command that reads through
            # it prints the same refusal (shown by the first one).
            continue
        argv = [cmd[0], str(path), *cmd[1:]]
        start = time.process_time()
        res = runner.invoke(cli, argv)
        cpu = time.process_time() - start
        label = f"{case} `kpath {' '.join(cmd)}`"
        exc = res.exception
        if exc is not None and not isinstance(exc, SystemExit):
            yield f"{label}: {type(exc).__name__}: {str(exc)[:100]}", _place(exc)
            continue
        if res.exit_code != 0:
            lines = [ln for ln in res.stderr.splitlines() if ln.startswith("kpath: error:")]
            if res.exit_code not in (1, 2) or len(lines) != 1:
                yield (f"{label}: exit {res.exit_code} without one error line: "
                       f"{res.stderr[-300:]!r}", "stderr")
            elif cmd == COMMANDS[0]:
                refused = lines[0]
        problem = _check_output(cmd, res.stdout_bytes, size)
        if problem:
            yield f"{label}: {problem}", "stdout"
        if cpu > MAX_CPU_S:
            yield f"{label}: {cpu:.1f} s of CPU", "time"


MUTATORS = sorted(set(JSONL_MUTATORS) | set(V2_MUTATORS))


@pytest.mark.parametrize("mutator", MUTATORS)
def test_no_broken_trace_crashes_kpath(mutator: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    if "chunk_bytes" in inspect.signature(scan.scan_trace).parameters:
        # read_trace and replay --stats open files through scan_trace(path).
        monkeypatch.setattr(scan.scan_trace, "__defaults__", (CHUNK_BYTES,))
    runner = CliRunner()
    failures: list[tuple[str, str]] = []
    cases = list(_cases(mutator))
    assert cases
    for i, case in enumerate(cases):
        data = _mutate(case)
        path = tmp_path / f"{i}.kpath"
        path.write_bytes(data)
        failures.extend(_run(runner, case, path, len(data), i))
        path.unlink()
    broken = [f"{what} at {where}" for what, where in failures]
    assert not broken, f"{len(broken)} of {len(cases)} files broke kpath:\n" + \
        "\n".join(broken[:30])


def test_the_mutations_make_enough_files() -> None:
    assert sum(len(list(_cases(m))) for m in MUTATORS) >= 2000
