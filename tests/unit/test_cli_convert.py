"""`kpath convert` on synthetic traces: both directions, one-line errors,
output only when complete, progress."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kpath.cli import cli
from kpath.cli_convert import _Progress
from tests.unit.synthetic_traces import synthetic_chat
from tests.unit.test_cli_view_synthetic import assert_one_line_error
from tracer.tracefile import read_trace


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["convert", *args])


@pytest.fixture
def chat_v2(tmp_path: Path) -> Path:
    chat = synthetic_chat()
    chat.lose(5, "tcp_v4_rcv")
    return chat.write(tmp_path / "chat.kpath")


def test_help_has_examples() -> None:
    res = run("--help")
    assert res.exit_code == 0
    assert "kpath convert chat.kpath --to jsonl -o chat.jsonl" in res.stdout
    assert "convert" in CliRunner().invoke(cli, ["--help"]).stdout


def test_to_jsonl_and_back(chat_v2: Path, tmp_path: Path) -> None:
    jsonl, again = tmp_path / "chat.jsonl", tmp_path / "again.kpath"
    res = run(str(chat_v2), "--to", "jsonl", "-o", str(jsonl))
    assert res.exit_code == 0, res.output
    assert res.stderr.startswith(f"kpath: wrote {jsonl} (version 1, ")
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert list(lines[0]) == ["header"] and lines[0]["header"]["version"] == 1
    assert list(lines[-1]) == ["trailer"]
    assert sum("lost" in x for x in lines) == 1
    res = run(str(jsonl), "-o", str(again))
    assert res.exit_code == 0, res.output
    a, b = read_trace(chat_v2), read_trace(again)
    assert a.events == b.events and a.lost == b.lost and a.trailer == b.trailer
    assert not list(tmp_path.glob(".*.part"))


def test_cut_short_input_stays_cut_short(tmp_path: Path) -> None:
    src = synthetic_chat().write(tmp_path / "cut.kpath", trailer=False)
    out = tmp_path / "cut.jsonl"
    res = run(str(src), "--to", "jsonl", "-o", str(out))
    assert res.exit_code == 0
    assert "kpath: warning:" in res.stderr and "cut short" in res.stderr
    assert read_trace(out).cut_short is not None


def test_errors_are_one_line(chat_v2: Path, tmp_path: Path) -> None:
    assert_one_line_error(run(str(tmp_path / "nope.kpath"), "-o", str(tmp_path / "x")), 2,
                          "no such file")
    assert_one_line_error(run(str(chat_v2), "-o", str(chat_v2)), 2, "is the input file")
    link = tmp_path / "link.kpath"
    link.symlink_to(chat_v2)
    assert_one_line_error(run(str(chat_v2), "-o", str(link)), 2, "is the input file")
    assert_one_line_error(run(str(chat_v2), "-o", str(tmp_path)), 2, "is a directory")
    assert_one_line_error(run(str(chat_v2), "-o", str(tmp_path / "no" / "x.kpath")), 2,
                          "cannot write", "no directory")
    assert_one_line_error(run(str(chat_v2), "-o", str(chat_v2 / "x.kpath")), 2, "cannot write")
    assert_one_line_error(run(str(tmp_path), "-o", str(tmp_path / "x")), 2, "is a directory")
    assert run(str(chat_v2), "--to", "xml", "-o", "x").exit_code == 2  # click's usage error


def test_unreadable_input_leaves_no_output(tmp_path: Path) -> None:
    bad = tmp_path / "bad.kpath"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    out = tmp_path / "out.kpath"
    assert_one_line_error(run(str(bad), "-o", str(out)), 1, "not a kpath trace (a PNG image)")
    assert not out.exists() and not list(tmp_path.glob(".*.part"))


def test_broken_line_is_named_and_no_output(chat_v2: Path, tmp_path: Path) -> None:
    jsonl = tmp_path / "chat.jsonl"
    assert run(str(chat_v2), "--to", "jsonl", "-o", str(jsonl)).exit_code == 0
    lines = jsonl.read_text().splitlines()
    lines.insert(3, "{oops")
    jsonl.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.kpath"
    assert_one_line_error(run(str(jsonl), "-o", str(out)), 1, "chat.jsonl:4: not valid JSON")
    assert not out.exists()


def test_progress_shows_after_a_second(capsys: pytest.CaptureFixture[str]) -> None:
    p = _Progress(quiet=False)
    p("reading", 10)
    assert capsys.readouterr().err == ""  # quick work shows nothing
    p.start -= 2
    p.last -= 10
    p("writing", 1234)
    assert "kpath: writing ... 1234 events" in capsys.readouterr().err
    q = _Progress(quiet=True)
    q.start -= 2
    q.last -= 10
    q("writing", 1)
    assert capsys.readouterr().err == ""
