"""The real debug vmlinux for tests/debuginfo/test_debuginfo_vmlinux.py.

scripts/fetch-debug-vmlinux.sh keeps it in ${KPATH_CACHE:-~/.cache/kpath}/
debuginfo/ (the validation VM's kernel; about 860 MB to download once, 600
MB kept). Without it the tests skip; with KPATH_REQUIRE_VM=1 (CI, set by
scripts/test.sh) they fetch it, and fail if that fails.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
FETCH = ROOT / "scripts" / "fetch-debug-vmlinux.sh"


@pytest.fixture(scope="session")
def debug_vmlinux() -> Path:
    required = os.environ.get("KPATH_REQUIRE_VM") == "1"
    argv = ["bash", str(FETCH)] + ([] if required else ["--no-download"])
    res = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    if res.returncode == 0 and res.stdout.strip():
        return Path(res.stdout.strip().splitlines()[-1])
    why = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"
    if required:
        pytest.fail(f"KPATH_REQUIRE_VM=1 and {FETCH.name} failed: {why}")
    pytest.skip(f"no debug vmlinux in the cache ({why}); {FETCH.name} fetches it, or set "
                "KPATH_REQUIRE_VM=1")
