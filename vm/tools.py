"""Preflight checks that turn missing tools, privileges or disk space into a
one-line instruction instead of a failure halfway through a build."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from vm.errors import VmError

GIB = 1024**3


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise VmError(f"{name} not found: install it with `apt-get install {package}`")
    return path


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise VmError(f"{what} needs root: run it with sudo")


def require_space(path: Path, needed_bytes: int, what: str) -> None:
    probe = path
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise VmError(
            f"not enough disk space for {what}: {free / GIB:.1f} GiB free under {probe}, "
            f"need {needed_bytes / GIB:.1f} GiB (free some space or set KPATH_CACHE "
            "to a bigger disk)"
        )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
