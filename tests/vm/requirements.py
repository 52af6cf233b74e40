"""What the VM tests need on the host; without it they skip (and in CI, with
KPATH_REQUIRE_VM=1, tests/conftest.py turns that skip into a failure)."""

from __future__ import annotations

import os
import shutil

import pytest


def missing(*extra_tools: str) -> str | None:
    if os.geteuid() != 0:
        return "needs root (mmdebstrap, mke2fs -d)"
    for tool in ("qemu-system-x86_64", "mmdebstrap", "mke2fs", *extra_tools):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


def needs_vm(*extra_tools: str) -> pytest.MarkDecorator:
    why = missing(*extra_tools)
    return pytest.mark.skipif(why is not None, reason=str(why))
