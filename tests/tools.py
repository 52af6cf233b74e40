"""External tools some tests drive (chromium, plantuml, node + Mermaid's
parser). scripts/setup.sh installs them. Locally a missing tool skips the
test; in CI (KPATH_REQUIRE_TOOLS=1, set by scripts/test.sh) it fails it, so
that a broken install cannot pass as green."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MERMAID_CHECK = ROOT / "tools" / "mermaid-check"


def _missing(why: str) -> None:
    if os.environ.get("KPATH_REQUIRE_TOOLS") == "1":
        pytest.fail(f"required tool missing (KPATH_REQUIRE_TOOLS=1): {why}")
    pytest.skip(why)


def require(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        _missing(f"{name} not installed ({hint})")
        raise AssertionError("unreachable")
    return path


def mermaid_parse(*files: Path) -> list[dict[str, object]]:
    """Run Mermaid's own parser on files; one result per file."""
    import json

    node = require("node", "apt install nodejs npm; scripts/setup.sh")
    if not (MERMAID_CHECK / "node_modules" / "mermaid").is_dir():
        _missing("Mermaid's parser is not installed: run scripts/setup.sh "
                 "(npm install in tools/mermaid-check)")
    res = subprocess.run([node, str(MERMAID_CHECK / "check.mjs"), *map(str, files)],
                         capture_output=True, text=True, timeout=120, cwd=MERMAID_CHECK)
    out = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(out) == len(files), res.stdout + res.stderr
    return out


def plantuml_svg(src: Path) -> str:
    """Render with Debian's plantuml; returns the SVG text."""
    exe = require("plantuml", "apt install plantuml")
    res = subprocess.run([exe, "-tsvg", "-failfast2", str(src)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, (res.stdout + res.stderr)[-2000:]
    svg = src.with_suffix(".svg")
    assert svg.exists(), res.stdout + res.stderr
    return svg.read_text(encoding="utf-8")


def require_module(name: str, hint: str) -> None:
    """Skip (fail in CI) when the Python module `name` cannot be imported."""
    import importlib.util

    if importlib.util.find_spec(name) is None:
        _missing(f"Python module {name} not installed ({hint})")


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def chromium(url: str, *args: str, timeout: float = 120) -> str:
    """Run headless Chromium on url with a fresh profile; returns stdout."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        _missing("chromium not installed (apt install chromium)")
        raise AssertionError("unreachable")
    with tempfile.TemporaryDirectory(prefix="kpath-chromium-") as profile:
        res = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
                             capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def png_pixels(path: Path) -> tuple[int, int, list[tuple[int, ...]]]:
    """Width, height and the pixels of a PNG scaled down to at most 600 px a
    side (enough to tell a picture from a blank page), via Pillow (Debian's
    python3-pil)."""
    try:
        from PIL import Image
    except ImportError:
        _missing("Pillow not installed (apt install python3-pil)")
        raise AssertionError("unreachable") from None
    Image.MAX_IMAGE_PIXELS = None  # our own tall diagrams, not untrusted input
    with Image.open(path) as im:
        size = im.size
        rgb = im.convert("RGB")
        rgb.thumbnail((600, 600))
        return size[0], size[1], list(rgb.getdata())


def pixel_variance(pixels: list[tuple[int, ...]]) -> float:
    lum = [(r * 299 + g * 587 + b * 114) / 1000 for r, g, b in pixels]
    mean = sum(lum) / len(lum)
    return sum((x - mean) ** 2 for x in lum) / len(lum)
