"""The diagram in the README is what the command the README gives produces."""

from __future__ import annotations

import re
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
