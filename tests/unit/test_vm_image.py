"""Image assembly helpers that must never damage the cached rootfs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vm.cache import Layout
from vm.errors import VmError
from vm.image import LAUNCHER, _write_new, clean_stale_tmp, install_guest_files
from vm.tools import require_space, require_tool


def test_write_new_breaks_hardlinks_instead_of_editing(tmp_path: Path) -> None:
    cached = tmp_path / "cached-hostname"
    cached.write_text("host\n")
    staged = tmp_path / "staged-hostname"
    os.link(cached, staged)  # what `cp -al` gives the staging tree
    _write_new(staged, "kpath-vm\n", 0o644)
    assert cached.read_text() == "host\n"
    assert staged.read_text() == "kpath-vm\n"


def test_install_guest_files(tmp_path: Path) -> None:
    (tmp_path / "usr" / "local" / "bin").mkdir(parents=True)
    install_guest_files(tmp_path)
    init = tmp_path / "kpath-init"
    assert init.read_text().startswith("#!/bin/sh")
    assert os.access(init, os.X_OK)
    assert "echo o > /proc/sysrq-trigger" in init.read_text()
    launcher = tmp_path / "usr" / "local" / "bin" / "kpath"
    assert launcher.read_text() == LAUNCHER
    assert os.access(launcher, os.X_OK)
    assert (tmp_path / "mnt" / "host").is_dir()


def test_stale_build_dirs_of_dead_processes_are_removed(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    dead = 2**22 + 12345  # above pid_max's default: never a live process
    leftovers = [tmp_path / f".rootfs-abc123.tmp-{dead}", tmp_path / f".image.tmp-{dead}",
                 Layout(tmp_path, "6.12").image_tmp(dead), Layout(tmp_path).image_old(dead)]
    live = Layout(tmp_path, "6.12").image_tmp(os.getpid())
    keep = tmp_path / "rootfs-abc123"
    for directory in (*leftovers, live, keep, Layout(tmp_path).image_dir):
        (directory / "etc").mkdir(parents=True)
    clean_stale_tmp(layout)
    assert not any(d.exists() for d in leftovers)
    assert live.exists() and keep.exists() and Layout(tmp_path).image_dir.exists()


def test_preflight_messages_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(VmError, match="apt-get install nope-pkg"):
        require_tool("kpath-no-such-tool", "nope-pkg")
    with pytest.raises(VmError, match="not enough disk space.*KPATH_CACHE"):
        require_space(tmp_path / "not" / "yet", 1 << 60, "the VM image")
