"""The QEMU command line for one run (pure: tested without QEMU)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vm.accel import Accel

QEMU = "qemu-system-x86_64"
SHARE_TAG = "host"
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def valid_run_id(run_id: str) -> bool:
    # The id travels on the kernel command line and into a shell `case`: keep
    # it to characters that need no quoting anywhere.
    return _RUN_ID.fullmatch(run_id) is not None


def qemu_escape(value: str) -> str:
    """QEMU option values use ',' as separator; a literal comma is ',,'."""
    return value.replace(",", ",,")


@dataclass(frozen=True)
class QemuConfig:
    accel: Accel
    kernel: Path
    initrd: Path
    image: Path
    share: Path
    run_id: str
    memory_mb: int = 2048
    cpus: int = 2
    qemu: str = QEMU
    # The guest's NIC: none by default (loopback and veth carry the TCP);
    # the two-host rig gives each guest one on a link between them.
    nic: tuple[str, ...] = ("-nic", "none")


# Under TCG the guest kernel finds its emulated TSCs "unsynchronized" and
# falls back to the HPET, so every clock read (bpf_ktime_get_ns in each
# probe, TCP's own timestamps) is an emulated MMIO access. TCG's TSC is one
# host clock for every vCPU: trusting it is sound, and cheap to read. It was
# the first suspect of the guest hangs, whose cause was one vCPU running
# code another had patched (vm/accel.py); on the HPET the two-host scenario
# lost events uncounted in 2 of 2 CI runs (bench/README.md, "The guest
# hangs under TCG").
TCG_CLOCK = "clocksource=tsc tsc=reliable"


def kernel_cmdline(run_id: str, tcg: bool = False) -> str:
    if not valid_run_id(run_id):
        raise ValueError(f"bad run id {run_id!r}")
    # panic=-1: reboot at once on panic, which -no-reboot turns into a QEMU
    # exit instead of a hang until the timeout. quiet/loglevel=5 keep boot
    # notices off the console that carries the command's output, yet let
    # warnings through: a soft lockup's backtrace is printed at the default
    # level (4), and softlockup_all_cpu_backtrace adds every other CPU's, so
    # a guest hang's console log says where each CPU was stuck.
    clock = f"{TCG_CLOCK} " if tcg else ""
    return (
        "console=ttyS0 root=/dev/vda rw init=/kpath-init panic=-1 quiet loglevel=5 "
        f"softlockup_all_cpu_backtrace=1 {clock}kpath_run={run_id}"
    )


def qemu_argv(cfg: QemuConfig) -> list[str]:
    if cfg.memory_mb < 256:
        raise ValueError("the guest needs at least 256 MB")
    if cfg.cpus < 1:
        raise ValueError("the guest needs at least 1 cpu")
    share = qemu_escape(str(cfg.share))
    image = qemu_escape(str(cfg.image))
    return [
        cfg.qemu,
        "-accel", cfg.accel.option,
        "-cpu", cfg.accel.cpu,
        "-m", str(cfg.memory_mb),
        "-smp", str(cfg.cpus),
        "-nographic",
        "-no-reboot",
        # No NIC by default: the share is the only channel we need, loopback
        # and veth carry the TCP we trace, and skipping iPXE saves ~1 s of TCG boot.
        *cfg.nic,
        "-kernel", str(cfg.kernel),
        "-initrd", str(cfg.initrd),
        # -snapshot: guest writes go to a temporary overlay, never the cache.
        "-snapshot",
        "-drive", f"file={image},if=virtio,format=raw",
        "-virtfs",
        f"local,path={share},mount_tag={SHARE_TAG},security_model=none,id={SHARE_TAG}",
        "-append", kernel_cmdline(cfg.run_id, tcg=cfg.accel.name == "tcg"),
    ]
