"""Running a shell script in the validation VM (6.1) with a test's directory
as its working directory (the 9p share), for tests that trace in it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_traced_script(share: Path, script: str) -> None:
    """Run `script` (sh) in the 6.1 guest in `share`; fail unless the guest
    ran it and its `kpath trace` succeeded (the script writes that trace's
    exit code to trace_rc and its stderr to trace.err)."""
    res = subprocess.run(
        [sys.executable, "-m", "kpath", "vm", "run", "--kernel", "6.1", "--timeout", "600",
         "--hang-retries", "1", "--share", str(share), "--", "sh", "-c", script],
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    err = (share / "trace.err").read_text()
    assert (share / "trace_rc").read_text().strip() == "0", err[-2000:]
