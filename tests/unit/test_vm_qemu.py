"""QEMU argv and the guest command script: pure functions, no QEMU."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from vm.accel import TCG_CPU, Accel
from vm.errors import VmError
from vm.qemu import TCG_CLOCK, QemuConfig, kernel_cmdline, qemu_argv, qemu_escape, valid_run_id
from vm.runner import command_script, new_run_id, read_exit_code, summarize


def _cfg(tmp_path: Path, accel: Accel, **kw: object) -> QemuConfig:
    return QemuConfig(
        accel=accel,
        kernel=tmp_path / "vmlinuz",
        initrd=tmp_path / "initrd.img",
        image=tmp_path / "rootfs.ext4",
        share=tmp_path / "share",
        run_id="20250101-000000-abcdef",
        **kw,  # type: ignore[arg-type]
    )


def _opt(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_tcg_argv(tmp_path: Path) -> None:
    argv = qemu_argv(_cfg(tmp_path, Accel("tcg", "test")))
    assert argv[0] == "qemu-system-x86_64"
    # one thread for every vCPU: the guest patches its own code (vm/accel.py)
    assert _opt(argv, "-accel") == "tcg,thread=single"
    assert _opt(argv, "-cpu") == TCG_CPU
    assert _opt(argv, "-m") == "2048"
    assert _opt(argv, "-smp") == "2"
    assert {"-nographic", "-no-reboot", "-snapshot"} <= set(argv)
    assert _opt(argv, "-kernel") == str(tmp_path / "vmlinuz")
    assert _opt(argv, "-initrd") == str(tmp_path / "initrd.img")
    assert _opt(argv, "-drive") == f"file={tmp_path / 'rootfs.ext4'},if=virtio,format=raw"
    assert _opt(argv, "-virtfs") == (
        f"local,path={tmp_path / 'share'},mount_tag=host,security_model=none,id=host"
    )
    append = _opt(argv, "-append").split()
    for word in ("console=ttyS0", "root=/dev/vda", "rw", "init=/kpath-init", "panic=-1"):
        assert word in append
    assert "kpath_run=20250101-000000-abcdef" in append


def test_tcg_guest_reads_the_tsc_and_kvm_keeps_its_clock(tmp_path: Path) -> None:
    # Under TCG the guest would fall back to the emulated HPET (an MMIO exit
    # per clock read); under KVM the guest picks kvm-clock itself.
    tcg = _opt(qemu_argv(_cfg(tmp_path, Accel("tcg", "t"))), "-append").split()
    kvm = _opt(qemu_argv(_cfg(tmp_path, Accel("kvm", "t"))), "-append").split()
    assert set(TCG_CLOCK.split()) == {"clocksource=tsc", "tsc=reliable"}
    assert set(TCG_CLOCK.split()) <= set(tcg)
    assert not {w for w in kvm if w.startswith(("clocksource=", "tsc="))}
    # a hang's console log holds every CPU's backtrace
    assert {"loglevel=5", "softlockup_all_cpu_backtrace=1"} <= set(tcg) & set(kvm)


def test_kvm_argv_uses_host_cpu_and_sizes(tmp_path: Path) -> None:
    argv = qemu_argv(_cfg(tmp_path, Accel("kvm", "test"), memory_mb=4096, cpus=4))
    assert _opt(argv, "-accel") == "kvm"
    assert _opt(argv, "-cpu") == "host"
    assert _opt(argv, "-m") == "4096"
    assert _opt(argv, "-smp") == "4"


def test_commas_in_paths_are_escaped(tmp_path: Path) -> None:
    cfg = QemuConfig(
        accel=Accel("tcg", "t"), kernel=Path("/k"), initrd=Path("/i"),
        image=Path("/c,ache/rootfs.ext4"), share=Path("/a,b"), run_id="r1",
    )
    argv = qemu_argv(cfg)
    assert _opt(argv, "-drive").startswith("file=/c,,ache/rootfs.ext4,if=virtio")
    assert _opt(argv, "-virtfs").startswith("local,path=/a,,b,mount_tag=host")
    assert qemu_escape("a,b,,c") == "a,,b,,,,c"


def test_bad_sizes_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        qemu_argv(_cfg(tmp_path, Accel("tcg", "t"), memory_mb=64))
    with pytest.raises(ValueError):
        qemu_argv(_cfg(tmp_path, Accel("tcg", "t"), cpus=0))


@pytest.mark.parametrize("run_id", ["", "a b", "x;reboot", "$(id)", "a" * 65])
def test_unsafe_run_ids_never_reach_the_kernel_cmdline(run_id: str) -> None:
    assert not valid_run_id(run_id)
    with pytest.raises(ValueError):
        kernel_cmdline(run_id)


def test_new_run_ids_are_safe_and_unique() -> None:
    ids = {new_run_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(valid_run_id(i) for i in ids)


@pytest.mark.parametrize(
    "argv",
    [
        ["kpath", "trace", "-o", "chat.kpath", "--", "kpath", "demo", "chat"],
        ["sh", "-c", "uname -r > kernel.txt; exit 3"],
        ["echo", "it's", '"quoted"', "$HOME", "`id`", "a;b", "*", "", "new\nline"],
    ],
)
def test_command_script_round_trips_through_sh(argv: list[str], tmp_path: Path) -> None:
    script = command_script(argv)
    assert script.startswith("#!/bin/sh\n")
    # The guest runs the script with /bin/sh; parse it the same way here by
    # having sh print each argument it would pass.
    body = script.split("\n", 2)[2]  # after the shebang and the comment
    assert shlex.split(body) == argv
    printer = tmp_path / "printargs.sh"
    printer.write_text(script.replace(shlex.join(argv), "printf '%s\\0' " + shlex.join(argv)))
    out = subprocess.run(["/bin/sh", str(printer)], capture_output=True, check=True).stdout
    assert out.split(b"\0")[:-1] == [a.encode() for a in argv]


def test_empty_command_is_a_user_error() -> None:
    with pytest.raises(VmError, match="after --"):
        command_script([])


def test_read_exit_code(tmp_path: Path) -> None:
    assert read_exit_code(tmp_path) is None
    (tmp_path / "exit-code").write_text("3\n")
    assert read_exit_code(tmp_path) == 3
    (tmp_path / "exit-code").write_text("garbage")
    assert read_exit_code(tmp_path) is None


def test_summarize_is_one_short_line() -> None:
    assert summarize(["sh", "-c", "a\nb"]) == "sh -c 'a b'"
    long = summarize(["python3", "-c", "x" * 500])
    assert len(long) == 100 and long.endswith("...")
