"""Boot the validation VM of each kernel, trace every scenario in it with one
backend, check the kernel's behaviour, then replay and export the fresh
hello/hi trace on the host.

One boot per (kernel, backend): all scenarios run in it. Slow: about 5
minutes per case under TCG with BCC (a compile per scenario), less with
CO-RE. Select with -m vm.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.vm.requirements import needs_vm
from vm.scenarios import SCENARIOS

pytestmark = pytest.mark.vm

# BCC on the kernel it was built for; CO-RE on both (one object, relocated
# against each kernel's BTF).
MATRIX = [("6.1", "bcc"), ("6.1", "core"), ("6.12", "core")]


def _kpath(*args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kpath", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, check=False)


@needs_vm("dot")
@pytest.mark.parametrize(("kernel", "backend"), MATRIX, ids=[f"{k}-{b}" for k, b in MATRIX])
def test_scenarios_pass_in_the_vm(tmp_path: Path, kernel: str, backend: str) -> None:
    res = _kpath("vm", "validate", "--kernel", kernel, "--backend", backend, "--out", "v",
                 cwd=tmp_path, timeout=2400)
    print(res.stdout)
    print(res.stderr[-5000:], file=sys.stderr)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert f"{len(SCENARIOS)} of {len(SCENARIOS)} scenarios passed" in res.stdout
    assert res.stdout.count(f"ok    traced on kernel {kernel}") == len(SCENARIOS)
    assert res.stdout.count(f"ok    traced by the {backend} backend") == len(SCENARIOS)
    for s in SCENARIOS:
        assert (tmp_path / "v" / s.trace_file).stat().st_size > 0
    assert "FAIL" not in res.stdout

    chat = tmp_path / "v" / "hello_hi.kpath"
    replay = _kpath("replay", "--no-color", str(chat), cwd=tmp_path, timeout=120)
    assert replay.returncode == 0, replay.stderr
    assert "SYN-ACK" in replay.stdout and "tcp_v4_send_synack" in replay.stdout
    svg = tmp_path / "chat.svg"
    export = _kpath("export", str(chat), "-f", "svg", "-o", str(svg), cwd=tmp_path, timeout=120)
    assert export.returncode == 0, export.stderr
    root = ET.parse(svg).getroot()
    text = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    assert "__tcp_transmit_skb" in text and "client" in text and "server" in text
