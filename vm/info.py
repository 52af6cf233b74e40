"""What `kpath vm info` reports: the state of the cache, without building."""

from __future__ import annotations

import shutil
from pathlib import Path

from vm.accel import detect_accel
from vm.cache import Layout, image_state
from vm.errors import VmError
from vm.qemu import QEMU
from vm.recipe import RootfsRecipe, find_project_dir, project_hash


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    return path if path else f"missing (apt-get install {package})"


def vm_info(layout: Layout, recipe: RootfsRecipe | None = None) -> list[tuple[str, str]]:
    recipe = recipe or RootfsRecipe()
    rows: list[tuple[str, str]] = [("cache", str(layout.root))]
    try:
        rows.append(("accel", str(detect_accel())))
    except VmError as exc:
        rows.append(("accel", f"error: {exc}"))
    rows.append(("qemu", _tool(QEMU, "qemu-system-x86")))
    rows.append(("mmdebstrap", _tool("mmdebstrap", "mmdebstrap")))

    rootfs = layout.rootfs(recipe.key())
    rows.append(("rootfs", f"{rootfs} ({'cached' if rootfs.is_dir() else 'not built'})"))

    try:
        project: Path | None = find_project_dir()
    except VmError as exc:
        project = None
        rows.append(("project", f"error: {exc}"))
    if project is not None:
        phash = project_hash(project)
        rows.append(("project", f"{project} (hash {phash})"))
        state = image_state(layout, recipe.key(), phash)
        if state.stamp is None:
            rows.append(("image", f"{state.reason}: run `kpath vm build`"))
        else:
            size = layout.image.stat().st_blocks * 512 if layout.image.is_file() else 0
            verdict = "up to date" if state.ready else f"stale ({state.reason}), rebuilt on use"
            rows.append(("image", f"{layout.image} {verdict}, {size / 1024**3:.1f} GiB used"))
            rows.append(("kernel", state.stamp.kernel_release))
    logs = sorted(layout.logs.glob("*.log")) if layout.logs.is_dir() else []
    rows.append(("console logs", f"{layout.logs} ({len(logs)} kept)"))
    if logs:
        rows.append(("last log", str(logs[-1])))
    return rows
