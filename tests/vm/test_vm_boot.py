"""Boot the real validation VM of each kernel: build (cached) and run one
command in it; the image has what both backends need.

Slow (about 30 s per kernel under TCG with a current image, 2 min more for a
first mmdebstrap). Select with `pytest -m vm`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vm.requirements import needs_vm

pytestmark = pytest.mark.vm

RELEASE = {"6.1": r"6\.1\.0-\d+-amd64", "6.12": r"6\.12\.\d+\+deb12-amd64"}

# What the guest reports: its release, and a yes/no per requirement. BCC
# needs the headers; CO-RE needs the kernel's BTF and libbpf.so.1.
GUEST_SCRIPT = """
uname -r > kernel.txt
for f in /lib/modules/$(uname -r)/build/Makefile /sys/kernel/btf/vmlinux \
         /usr/lib/x86_64-linux-gnu/libbpf.so.1; do
    if [ -e "$f" ]; then echo "yes $f"; else echo "no $f"; fi
done > have.txt
python3 -c 'import bcc' && echo "yes bcc" >> have.txt || echo "no bcc" >> have.txt
grep -m1 '^flags' /proc/cpuinfo > flags.txt
echo out-from-guest
exit 3
"""


@needs_vm()
@pytest.mark.parametrize("kernel", sorted(RELEASE))
def test_command_runs_in_stock_kernel_and_files_come_back(tmp_path: Path, kernel: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kpath", "vm", "run", "--kernel", kernel, "--timeout", "600",
         "--share", str(tmp_path), "--", "sh", "-c", GUEST_SCRIPT],
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout == "out-from-guest\n"  # boot noise is not on stdout
    assert "guest up after" in result.stderr
    release = (tmp_path / "kernel.txt").read_text().strip()
    assert re.fullmatch(RELEASE[kernel], release), release
    have = (tmp_path / "have.txt").read_text().splitlines()
    assert len(have) == 4 and all(line.startswith("yes ") for line in have), have
    assert not (tmp_path / ".kpath-vm").exists()  # per-run files cleaned up
    if "(tcg:" in result.stderr:
        # QEMU 7.2's TCG emulates AVX2 wrongly: numpy's sort segfaulted with it
        flags = (tmp_path / "flags.txt").read_text().split()
        assert "sse4_2" in flags and not {"avx", "avx2"} & set(flags), flags
