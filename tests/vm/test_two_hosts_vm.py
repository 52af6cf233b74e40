"""Boot two guests joined by a virtual link, trace each end on its own host,
merge, check (`kpath vm validate -s two-hosts`); then replay the merged
trace. Slow (two TCG guests at once, about 3 minutes). Select with -m vm."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.vm.requirements import needs_vm
from vm.two_hosts_check import MERGED, TRACE_A, TRACE_B

pytestmark = pytest.mark.vm


def _kpath(*args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kpath", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, check=False)


@needs_vm()
def test_two_hosts_scenario_passes(tmp_path: Path) -> None:
    res = _kpath("vm", "validate", "--backend", "core", "-s", "two-hosts", "--out", "v",
                 cwd=tmp_path, timeout=2400)
    print(res.stdout)
    print(res.stderr[-5000:], file=sys.stderr)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert "1 of 1 scenarios passed" in res.stdout and "FAIL" not in res.stdout
    for name in ("every segment received on one host matched a send on the other",
                 "no send matched twice",
                 "every segment sent was matched exactly once",
                 "byte accounting closes across the hosts",
                 "no negative wire hop beyond the uncertainty"):
        assert f"ok    {name}" in res.stdout
    for name in (TRACE_A, TRACE_B, MERGED):
        assert (tmp_path / "v" / name).stat().st_size > 0
    stats = _kpath("replay", "--stats", str(tmp_path / "v" / MERGED), cwd=tmp_path, timeout=300)
    assert stats.returncode == 0, stats.stderr
    assert "host 1 kpath-b: clock offset" in stats.stdout and " wire " in stats.stdout
