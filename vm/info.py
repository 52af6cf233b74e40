"""What `kpath vm info` reports: the state of the cache, without building."""

from __future__ import annotations

import shutil
from pathlib import Path

from vm.accel import detect_accel
from vm.cache import ImageStamp, Layout, image_state
from vm.errors import VmError
from vm.qemu import QEMU
from vm.recipe import KERNELS, RootfsRecipe, find_project_dir, project_hash


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    return path if path else f"missing (apt-get install {package})"


def _other_kernels(layout: Layout) -> str:
    """Each other kernel with its built image's release, or not built."""
    parts = []
    for name in KERNELS:
        if name == layout.kernel:
            continue
        stamp = ImageStamp.load(Layout(layout.root, name).stamp)
        parts.append(f"{name} ({stamp.kernel_release if stamp else 'not built'})")
    return ", ".join(parts)


def vm_info(layout: Layout, recipe: RootfsRecipe | None = None) -> list[tuple[str, str]]:
    """Rows for layout.kernel's rootfs and image, and one line on the others."""
    recipe = recipe or RootfsRecipe(kernel=layout.kernel)
    spec = recipe.spec
    rows: list[tuple[str, str]] = [("cache", str(layout.root))]
    rows.append(("kernel", f"{spec.name} ({spec.image_package} + {spec.headers_package}, "
                           f"in {spec.suite})"))
    rows.append(("apt suites", ", ".join(recipe.suites)))
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
            rows.append(("image", f"{state.reason}: run `kpath vm build --kernel {spec.name}`"))
        else:
            size = layout.image.stat().st_blocks * 512 if layout.image.is_file() else 0
            verdict = "up to date" if state.ready else f"stale ({state.reason}), rebuilt on use"
            rows.append(("image", f"{layout.image} {verdict}, {size / 1024**3:.1f} GiB used"))
            rows.append(("release", state.stamp.kernel_release))
    others = _other_kernels(layout)
    if others:
        rows.append(("other kernels", others))
    logs = sorted(layout.logs.glob("*.log")) if layout.logs.is_dir() else []
    rows.append(("console logs", f"{layout.logs} ({len(logs)} kept)"))
    if logs:
        rows.append(("last log", str(logs[-1])))
    return rows
