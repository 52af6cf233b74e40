"""The CLI on hostile input and failing outputs: every trace string escaped
for each output format, column widths bounded, option ranges checked before
any work, and an output that cannot be written (full disk, closed pipe)
ending with one line, never a traceback."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from kpath.cli import cli
from tests.replay.recordings import DATA, needs_recordings

pytestmark = needs_recordings
ROOT = Path(__file__).resolve().parents[2]
HELLO = DATA / "hello_hi.kpath"
# A comm that tries the terminal and the markup of every format. (A lone
# surrogate is refused by the reader, on its branch: tests/unit/test_escape.py
# covers what the renderers do with one.)
HOSTILE = '\x1b]0;pwned\x07\x1b[2J<script>x</script>;#" \u202e'
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _with_comm(tmp_path: Path, comm: str, name: str = "t.kpath") -> Path:
    """hello_hi with its first event's comm replaced (a crafted file)."""
    lines = HELLO.read_bytes().split(b"\n")
    first = next(i for i, ln in enumerate(lines) if ln.startswith(b'{"event"'))
    rec = json.loads(lines[first])
    rec["event"]["comm"] = comm
    lines[first] = json.dumps(rec).encode()  # ensure_ascii: "\ud800" stays a JSON escape
    out = tmp_path / name
    out.write_bytes(b"\n".join(lines))
    return out


def _kpath(*args: str, stdout: int | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "kpath", *args], cwd=ROOT, stdout=stdout,
                          stderr=subprocess.PIPE, timeout=120, check=False)


def test_hostile_strings_are_escaped_in_every_output(tmp_path: Path) -> None:
    trace = _with_comm(tmp_path, HOSTILE)
    runner = CliRunner()
    for args in (["replay", str(trace)], ["replay", "--stats", str(trace)],
                 ["export", str(trace), "-f", "mermaid", "-o", "-"],
                 ["export", str(trace), "-f", "plantuml", "-o", "-"]):
        res = runner.invoke(cli, args)
        assert res.exit_code == 0, (args, res.output)
        text = res.stdout_bytes.decode("utf-8")
        assert not _CONTROL.search(text), args
    replay = runner.invoke(cli, ["replay", str(trace)]).stdout
    assert "task \\x1b]0;pwned\\x07\\x1b[2J" in replay
    for args in (["replay", "--format", "json", str(trace)],
                 ["export", str(trace), "-f", "perfetto", "-o", "-"]):
        res = runner.invoke(cli, args)
        assert res.exit_code == 0, (args, res.output)
        json.loads(res.stdout_bytes)
    events = json.loads(runner.invoke(cli, ["replay", "--format", "json", str(trace)]).stdout)
    # JSON keeps the data (its own escapes make it safe).
    assert events["events"][0]["comm"] == HOSTILE


def test_hostile_strings_in_html_and_svg(tmp_path: Path) -> None:
    pytest.importorskip("graphviz")
    trace = _with_comm(tmp_path, HOSTILE)
    html_out, svg_out = tmp_path / "t.html", tmp_path / "t.svg"
    for out in (html_out, svg_out):
        res = CliRunner().invoke(cli, ["export", str(trace), "-o", str(out), "--flow", "1"])
        if "not found on PATH" in res.output:
            pytest.skip("graphviz neato is not installed")
        assert res.exit_code == 0, res.output
    page = html_out.read_text(encoding="utf-8")
    assert "<script>x</script>" not in page and "<script>x<\\/script>" in page
    assert not _CONTROL.search(page.replace("\n", " "))
    svg = svg_out.read_text(encoding="utf-8")
    assert "<script>" not in svg and not _CONTROL.search(svg.replace("\n", " "))


def test_a_giant_comm_does_not_widen_every_line(tmp_path: Path) -> None:
    trace = _with_comm(tmp_path, "W" * (1 << 20))
    res = CliRunner().invoke(cli, ["replay", str(trace)])
    assert res.exit_code == 0
    # Before: every line padded to the comm, about 300 x 1 MiB of output.
    assert len(res.stdout_bytes) < 4 * HELLO.stat().st_size
    assert max(len(line) for line in res.stdout.splitlines()) < 300
    assert "\u2026" in res.stdout


def test_packet_ranges_are_checked_before_they_are_expanded() -> None:
    res = CliRunner().invoke(cli, ["export", str(HELLO), "-f", "mermaid", "-o", "-",
                                   "--packet", "1-99999999999"])
    assert res.exit_code == 2 and res.exception is None or isinstance(res.exception, SystemExit)
    assert re.search(r"kpath: error: .*no step #\d+ \(steps are #0\.\.#\d+\)", res.stderr)
    res = CliRunner().invoke(cli, ["export", str(HELLO), "-f", "mermaid", "-o", "-",
                                   "--from", "1" + "0" * 400 + "s"])
    assert res.exit_code == 2 and "past any trace" in res.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("args", [
    ("replay", str(HELLO)), ("replay", "--format", "json", str(HELLO)),
    ("replay", "--stats", str(HELLO)), ("export", str(HELLO), "-f", "mermaid", "-o", "-"),
    ("export", str(HELLO), "-f", "perfetto", "-o", "-"), ("probes",),
])
def test_a_full_disk_is_one_line(args: tuple[str, ...]) -> None:
    with open("/dev/full", "wb") as full:
        res = _kpath(*args, stdout=full.fileno())
    err = res.stderr.decode()
    assert res.returncode == 1, err
    assert err.strip().splitlines()[-1] == (
        "kpath: error: cannot write to standard output: No space left on device")
    assert "Traceback" not in err


@pytest.mark.parametrize("name", ["hello_hi.kpath", "bulk_1mib.kpath", "bulk_lossy_v2.kpath"])
def test_stats_ending_without_teardown_writes_everything(tmp_path: Path, name: str) -> None:
    """`replay --stats` ends its process without the interpreter's teardown
    (kpath/console.py end_quickly): its output, to a file, and its notes
    are whole, as the command gives them in-process."""
    path = DATA / name
    out = tmp_path / "stats.txt"
    with open(out, "wb") as fh:
        res = _kpath("replay", "--stats", str(path), stdout=fh.fileno())
    assert res.returncode == 0, res.stderr
    want = CliRunner().invoke(cli, ["replay", "--stats", str(path)])
    assert want.exit_code == 0
    assert out.read_text() == want.stdout and res.stderr.decode() == want.stderr


def test_a_closed_pipe_ends_quietly() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "kpath", "replay", "--format", "json",
                             str(DATA / "bulk_1mib.kpath")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(100)
    proc.stdout.close()  # the reader goes away, as `| head -c 100` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err


def test_a_device_or_pipe_output_is_not_replaced(tmp_path: Path) -> None:
    """Outputs that appear only when complete are written beside and renamed
    into place: onto /dev/full or a FIFO that rename would replace the node."""
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    res = CliRunner().invoke(cli, ["convert", str(HELLO), "-o", str(fifo)])
    assert res.exit_code == 2 and "not a regular file" in res.stderr
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    res = CliRunner().invoke(cli, ["export", str(HELLO), "-f", "perfetto", "-o", str(fifo)])
    reader.join(timeout=60)
    assert res.exit_code == 0, res.output
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert json.loads(got[0])["traceEvents"]


def test_header_and_trailer_fields_of_the_wrong_type(tmp_path: Path) -> None:
    """The reader's schema refuses them: one line naming the field, for every
    command, before any renderer sees them."""
    lines = (DATA / "bulk_lossy.kpath").read_bytes().rstrip(b"\n").split(b"\n")
    head, trailer = json.loads(lines[0]), json.loads(lines[-1])
    for where, change in (("header", {"hostname": 5}), ("header", {"kernel_release": [1, "<b>"]}),
                          ("header", {"started": {"a": [1]}}), ("trailer", {"reason": 5})):
        h, t = json.loads(json.dumps(head)), json.loads(json.dumps(trailer))
        (h if where == "header" else t)[where].update(change)
        trace = tmp_path / "typed.kpath"
        trace.write_bytes(b"\n".join([json.dumps(h).encode(), *lines[1:-1],
                                      json.dumps(t).encode()]) + b"\n")
        runner = CliRunner()
        for args in (["replay", str(trace)], ["replay", "--stats", str(trace)],
                     ["replay", "--format", "json", str(trace)],
                     ["export", str(trace), "-f", "mermaid", "-o", "-"],
                     ["export", str(trace), "-f", "perfetto", "-o", "-"]):
            res = runner.invoke(cli, args)
            errors = [ln for ln in res.stderr.splitlines() if ln.startswith("kpath: error:")]
            assert isinstance(res.exception, SystemExit) and res.exit_code == 1, \
                (args, res.exception)
            assert len(errors) == 1 and next(iter(change)) in errors[0], (args, res.stderr)
            assert res.stdout == "", args
