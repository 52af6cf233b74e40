"""Accelerator choice with injected paths: no /dev/kvm access needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from vm.accel import detect_accel
from vm.errors import VmError


@pytest.fixture()
def kvm(tmp_path: Path) -> Path:
    device = tmp_path / "kvm"
    device.write_text("")  # a regular file opens O_RDWR like a usable device
    return device


@pytest.fixture()
def modules(tmp_path: Path) -> Path:
    sys_module = tmp_path / "module"
    (sys_module / "kvm").mkdir(parents=True)
    return sys_module


def test_no_kvm_device_means_tcg(tmp_path: Path, modules: Path) -> None:
    accel = detect_accel(env={}, kvm_device=tmp_path / "missing", sys_module=modules)
    assert accel.name == "tcg"
    # every TCG feature but AVX, which QEMU 7.2 emulates wrongly (vm/accel.py)
    model, *switches = accel.cpu.split(",")
    assert model == "max" and {"avx=off", "avx2=off"} <= set(switches)
    assert "no " in accel.reason


def test_unopenable_kvm_device_means_tcg(tmp_path: Path, modules: Path) -> None:
    directory = tmp_path / "kvmdir"  # opening a directory O_RDWR fails with EISDIR
    directory.mkdir()
    accel = detect_accel(env={}, kvm_device=directory, sys_module=modules)
    assert accel.name == "tcg"
    assert "cannot open" in accel.reason


def test_kvm_pvm_means_tcg(kvm: Path, modules: Path) -> None:
    (modules / "kvm_pvm").mkdir()
    accel = detect_accel(env={}, kvm_device=kvm, sys_module=modules)
    assert accel.name == "tcg"
    assert "kvm_pvm" in accel.reason


def test_usable_kvm_means_kvm_with_host_cpu(kvm: Path, modules: Path) -> None:
    accel = detect_accel(env={}, kvm_device=kvm, sys_module=modules)
    assert accel.name == "kvm"
    assert accel.cpu == "host"
    assert str(accel).startswith("kvm: ")


@pytest.mark.parametrize("value", ["kvm", "TCG", " tcg "])
def test_env_override_wins(tmp_path: Path, modules: Path, value: str) -> None:
    (modules / "kvm_pvm").mkdir()
    accel = detect_accel(
        env={"KPATH_VM_ACCEL": value}, kvm_device=tmp_path / "missing", sys_module=modules
    )
    assert accel.name == value.strip().lower()
    assert "KPATH_VM_ACCEL" in accel.reason


def test_bad_env_override_is_a_user_error(kvm: Path, modules: Path) -> None:
    with pytest.raises(VmError, match="kvm or tcg"):
        detect_accel(env={"KPATH_VM_ACCEL": "hvf"}, kvm_device=kvm, sys_module=modules)
