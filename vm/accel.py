"""Pick the QEMU accelerator.

KVM is only worth it when it can run a stock kernel. Our hosts expose
/dev/kvm through kvm_pvm (pagetable-based virtualization), under which the
stock Debian guest kernel hangs at boot, so kvm_pvm means TCG. TCG is about
an order of magnitude slower but always works.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vm.errors import VmError

AccelName = Literal["kvm", "tcg"]

ENV_OVERRIDE = "KPATH_VM_ACCEL"
# Every feature TCG implements but AVX: QEMU 7.2's TCG emulates AVX2 wrongly
# enough that numpy's AVX2 sort (np.unique in replay --stats) segfaults in the
# guest on 8 of 12 chat traces that sort fine on real AVX2 hardware. Without
# AVX the guest's numpy and pyarrow run their SSE4.2 (x86-64-v2) code.
TCG_CPU = "max,avx=off,avx2=off,fma=off,f16c=off,vaes=off,vpclmulqdq=off"
# One host thread runs every vCPU in turn. With a thread per vCPU (QEMU's
# default), a vCPU ran code another had just patched back: 6.12 oopsed on an
# int3 at a jump label text_poke_bp had already restored, and 6.1 hung in
# soft lockups while patching the same site (bench/README.md, "The guest
# hangs under TCG"). kpath's attach and detach patch such sites every run.
TCG_ACCEL = "tcg,thread=single"
KVM_DEVICE = Path("/dev/kvm")
SYS_MODULE = Path("/sys/module")


@dataclass(frozen=True)
class Accel:
    name: AccelName
    reason: str  # one line, shown to the user next to the choice

    @property
    def cpu(self) -> str:
        # -cpu host passes the real CPU through under KVM; TCG can only emulate.
        return "host" if self.name == "kvm" else TCG_CPU

    @property
    def option(self) -> str:
        """QEMU's -accel argument."""
        return "kvm" if self.name == "kvm" else TCG_ACCEL

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


def detect_accel(
    env: Mapping[str, str] | None = None,
    kvm_device: Path = KVM_DEVICE,
    sys_module: Path = SYS_MODULE,
) -> Accel:
    environ = os.environ if env is None else env
    override = environ.get(ENV_OVERRIDE, "").strip().lower()
    if override:
        if override == "kvm":
            return Accel("kvm", f"{ENV_OVERRIDE}=kvm")
        if override == "tcg":
            return Accel("tcg", f"{ENV_OVERRIDE}=tcg")
        raise VmError(f"{ENV_OVERRIDE} must be kvm or tcg, not {override!r}")

    if not kvm_device.exists():
        return Accel("tcg", f"no {kvm_device}")
    try:
        fd = os.open(kvm_device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return Accel("tcg", f"cannot open {kvm_device}: {exc.strerror}")
    os.close(fd)
    # No lsmod on our hosts; a loaded module always has a /sys/module entry.
    if (sys_module / "kvm_pvm").exists():
        return Accel("tcg", "kvm_pvm present, stock kernels hang under PVM")
    return Accel("kvm", f"{kvm_device} usable")
