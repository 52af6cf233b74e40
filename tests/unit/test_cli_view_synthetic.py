"""`kpath replay` and `kpath export` on synthetic trace files: output, and
one-line errors with exit codes (2: bad invocation, 1: the work failed)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kpath.cli_replay import replay_cmd
from kpath.cli_view import export_cmd
from tests.unit.synthetic_traces import synthetic_chat


@pytest.fixture
def synthetic_chat_file(tmp_path: Path) -> Path:
    return synthetic_chat().write(tmp_path / "synthetic_chat.kpath")


def run(cmd: object, *args: str) -> Result:
    return CliRunner().invoke(cmd, list(args))  # type: ignore[arg-type]


def assert_one_line_error(res: Result, code: int, *needles: str) -> None:
    assert res.exit_code == code, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    err = res.stderr.strip()
    assert err.startswith("kpath: error: ") and "\n" not in err, err
    assert "Traceback" not in res.output
    for needle in needles:
        assert needle in err


def test_replay_synthetic_chat(synthetic_chat_file: Path) -> None:
    res = run(replay_cmd, str(synthetic_chat_file))
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith(f"kpath replay {synthetic_chat_file}")
    assert "flow 1: 127.0.0.1:54321 (client) <-> 127.0.0.1:10086 (server)" in res.stdout
    assert "\x1b[" not in res.stdout  # not a terminal: no colour
    assert res.stderr == ""
    assert run(replay_cmd, str(synthetic_chat_file), "--flow", "1").stdout == res.stdout


def test_replay_synthetic_cut_short_warns(tmp_path: Path) -> None:
    path = synthetic_chat().write(tmp_path / "synthetic_cut.kpath", trailer=False)
    with path.open("ab") as fh:
        fh.write(b"\xff\xff\xff\xff\x00\x01\x00\x00\x0c\x00")  # killed mid-batch
    res = run(replay_cmd, str(path))
    assert res.exit_code == 0
    assert res.stderr.startswith("kpath: warning: trace cut short (")
    assert re.search(r"!! WARNING: trace cut short \(batch \d+ incomplete or unreadable",
                     res.stdout)
    assert "flow 1:" in res.stdout  # everything complete is still shown


def test_replay_missing_file() -> None:
    res = run(replay_cmd, "/nonexistent/synthetic.kpath")
    assert_one_line_error(res, 1, "no such file")


def test_replay_foreign_file(tmp_path: Path) -> None:
    foreign = tmp_path / "synthetic_foreign.json"
    foreign.write_text('{"traceEvents": []}\n')
    assert_one_line_error(run(replay_cmd, str(foreign)), 1, "not a kpath trace")
    binary = tmp_path / "synthetic.pcap"
    binary.write_bytes(b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00" + bytes(range(200, 256)))
    assert_one_line_error(run(replay_cmd, str(binary)), 1, "not a kpath trace")
    assert_one_line_error(run(replay_cmd, str(tmp_path)), 1, "directory")


def test_replay_bad_flow_number(synthetic_chat_file: Path) -> None:
    assert_one_line_error(run(replay_cmd, str(synthetic_chat_file), "--flow", "2"), 2,
                          "no flow 2", "it has 1 flow: 1..1")
    assert_one_line_error(run(replay_cmd, str(synthetic_chat_file), "--flow", "x"), 2,
                          "--flow wants a flow number")


def test_export_formats(synthetic_chat_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "synthetic.mmd"
    res = run(export_cmd, str(synthetic_chat_file), "-f", "mermaid", "-o", str(out))
    assert res.exit_code == 0, res.output
    assert out.read_text().startswith("sequenceDiagram\n")
    # format from the output's suffix; default output name from the trace's
    res = run(export_cmd, str(synthetic_chat_file), "-o", str(tmp_path / "synthetic.dot"))
    assert res.exit_code == 0 and "digraph kpath" in (tmp_path / "synthetic.dot").read_text()
    res = run(export_cmd, str(synthetic_chat_file), "-f", "mermaid")
    assert res.exit_code == 0
    assert synthetic_chat_file.with_suffix(".mmd").read_text() == out.read_text()
    # text formats to stdout
    res = run(export_cmd, str(synthetic_chat_file), "-f", "dot", "-o", "-")
    assert res.exit_code == 0 and res.stdout.startswith("// kpath sequence diagram")


def test_export_svg(synthetic_chat_file: Path, tmp_path: Path) -> None:
    if shutil.which("neato") is None:
        pytest.skip("graphviz neato not installed")
    out = tmp_path / "synthetic.svg"
    res = run(export_cmd, str(synthetic_chat_file), "-f", "svg", "-o", str(out), "--flow", "1")
    assert res.exit_code == 0, res.output
    first = out.read_bytes()
    assert b"<svg" in first and b"client app" in first
    run(export_cmd, str(synthetic_chat_file), "-f", "svg", "-o", str(out), "--flow", "1")
    assert out.read_bytes() == first  # deterministic


def test_export_errors(synthetic_chat_file: Path, tmp_path: Path) -> None:
    f = str(synthetic_chat_file)
    assert_one_line_error(run(export_cmd, f, "-f", "jpeg", "-o", str(tmp_path / "x")), 2,
                          "unknown format 'jpeg'")
    assert_one_line_error(run(export_cmd, f, "-f", "png", "-o", "-"), 2, "binary")
    assert_one_line_error(run(export_cmd, f, "-f", "dot", "--flow", "9"), 2, "no flow 9")
    assert_one_line_error(run(export_cmd, f, "-f", "dot", "-o", "/nonexistent/dir/x.dot"), 1,
                          "cannot write /nonexistent/dir/x.dot")
    assert_one_line_error(run(export_cmd, "/nonexistent.kpath", "-f", "dot"), 1, "no such file")
    assert_one_line_error(run(export_cmd, f, "-f", "dot", "-o", f), 2, "refusing to overwrite")


def test_export_without_graphviz_binary(synthetic_chat_file: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no neato anywhere
    res = run(export_cmd, str(synthetic_chat_file), "-f", "svg", "-o", str(tmp_path / "x.svg"))
    assert_one_line_error(res, 1, "neato", "install graphviz")
    assert not (tmp_path / "x.svg").exists()
    # formats that need no binary still work
    res = run(export_cmd, str(synthetic_chat_file), "-f", "mermaid", "-o", "-")
    assert res.exit_code == 0
