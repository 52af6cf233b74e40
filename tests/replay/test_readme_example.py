"""The diagram in the README is what the command the README gives produces."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_diagram_is_the_exported_recording(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    image = re.search(r"!\[[^\]]*\]\(([^)]+\.svg)\)", readme)
    command = re.search(r"^kpath export (\S+) -f svg -o (\S+)$", readme, re.MULTILINE)
    assert image and command, "README must show an exported SVG and the command for it"
    trace, target = command.groups()
    assert target == image.group(1)
    out = tmp_path / "again.svg"
    res = subprocess.run([sys.executable, "-m", "kpath", "export", trace, "-f", "svg", "-o",
                          str(out)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == (ROOT / target).read_bytes(), (
        f"regenerate: kpath export {trace} -f svg -o {target}")


def test_every_docs_example_is_what_its_command_produces(tmp_path: Path) -> None:
    listing = (ROOT / "docs" / "examples" / "README.md").read_text()
    commands = re.findall(r"`kpath export (\S+) -f (\S+) -o (\S+)`", listing)
    assert len(commands) >= 8
    for trace, fmt, target in commands:
        out = tmp_path / Path(target).name
        res = subprocess.run([sys.executable, "-m", "kpath", "export", trace, "-f", fmt, "-o",
                              str(out)], cwd=ROOT, capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stderr
        assert out.read_bytes() == (ROOT / target).read_bytes(), (
            f"regenerate: kpath export {trace} -f {fmt} -o {target}")


def test_readme_query_output_is_real() -> None:
    """The "Traces as data" query prints what the README shows."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"^```\n\$ (kpath query .*?)\n```$", readme, re.MULTILINE | re.DOTALL)
    assert block, "README must show a kpath query and its output"
    lines = block.group(1).split("\n")
    end = next(i for i, line in enumerate(lines) if not line.endswith("\\")
               and line.rstrip().endswith('"'))
    command = "\n".join(lines[:end + 1]).replace("\\\n", " ")
    shown = "\n".join(lines[end + 1:]) + "\n"
    args = shlex.split(command)
    res = subprocess.run([sys.executable, "-m", "kpath", *args[1:]], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout == shown
