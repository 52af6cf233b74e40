"""Boot the real validation VM: build (cached) and run one command in it.

Slow (about 30 s under TCG with a current image, 2 min more for a first
mmdebstrap). Select with `pytest -m vm`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vm.requirements import needs_vm

pytestmark = pytest.mark.vm



@needs_vm()
def test_command_runs_in_stock_kernel_and_files_come_back(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kpath", "vm", "run", "--timeout", "600", "--share", str(tmp_path),
         "--", "sh", "-c", "uname -r > kernel.txt; echo out-from-guest; exit 3"],
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout == "out-from-guest\n"  # boot noise is not on stdout
    assert "guest up after" in result.stderr
    release = (tmp_path / "kernel.txt").read_text().strip()
    assert re.fullmatch(r"6\.1\.0-\d+-amd64", release), release
    assert not (tmp_path / ".kpath-vm").exists()  # per-run files cleaned up
