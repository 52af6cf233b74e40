"""Where the VM artefacts live and whether they are current.

Layout under ${KPATH_CACHE:-~/.cache/kpath}/vm/:
    rootfs-<key>/        finished mmdebstrap tree (only ever appears by rename);
                         the key covers the kernel, so there is one per kernel
    .rootfs-<key>.tmp-<pid>/  a build in progress (removed if its pid is gone)
    mmdebstrap-<key>.log
    image-<kernel>/      rootfs.ext4, vmlinuz, initrd.img, image.json
                         (image-6.1/, image-6.12/: see vm.recipe.KERNELS)
    logs/<run-id>.log    serial console of each `kpath vm run`
    wheels/              the guest's Python wheels (vm.recipe.GUEST_WHEELS)
    .lock                serialises builds
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from vm.recipe import DEFAULT_KERNEL, GUEST_WHEELS, IMAGE_RECIPE_VERSION, kernel_spec


def cache_root(override: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    if override is not None:
        return override
    environ = os.environ if env is None else env
    base = environ.get("KPATH_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "kpath"
    return root / "vm"


@dataclass(frozen=True)
class Layout:
    root: Path
    kernel: str = DEFAULT_KERNEL  # a vm.recipe.KERNELS name: which image

    def __post_init__(self) -> None:
        kernel_spec(self.kernel)  # the name becomes a directory name: only known ones

    def rootfs(self, key: str) -> Path:
        return self.root / f"rootfs-{key}"

    def rootfs_tmp(self, key: str, pid: int) -> Path:
        return self.root / f".rootfs-{key}.tmp-{pid}"

    def mmdebstrap_log(self, key: str) -> Path:
        return self.root / f"mmdebstrap-{key}.log"

    @property
    def image_dir(self) -> Path:
        return self.root / f"image-{self.kernel}"

    def image_tmp(self, pid: int) -> Path:
        return self.root / f".{self.image_dir.name}.tmp-{pid}"

    def image_old(self, pid: int) -> Path:
        return self.root / f".{self.image_dir.name}.old-{pid}"

    @property
    def image(self) -> Path:
        return self.image_dir / "rootfs.ext4"

    @property
    def vmlinuz(self) -> Path:
        return self.image_dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.image_dir / "initrd.img"

    @property
    def stamp(self) -> Path:
        return self.image_dir / "image.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def wheels(self) -> Path:
        return self.root / "wheels"

    @contextmanager
    def lock(self, shared: bool = False) -> Iterator[None]:
        """Builds take it exclusive (two would fight over renames); a run takes
        it shared while QEMU opens the image, so no build swaps it mid-open."""
        self.root.mkdir(parents=True, exist_ok=True)
        # O_RDONLY: flock needs no write access, so a user who can read a
        # cache built by root can still take the shared lock.
        fd = os.open(self.root / ".lock", os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


@dataclass(frozen=True)
class ImageStamp:
    """Written last into image-<kernel>/, so a stamp means the files beside it are whole."""

    rootfs_key: str
    project_hash: str
    kernel_release: str
    image_recipe: int = IMAGE_RECIPE_VERSION
    guest_wheels: tuple[str, ...] = GUEST_WHEELS

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> ImageStamp | None:
        try:
            doc = json.loads(path.read_text())
            return cls(
                rootfs_key=str(doc["rootfs_key"]),
                project_hash=str(doc["project_hash"]),
                kernel_release=str(doc["kernel_release"]),
                image_recipe=int(doc["image_recipe"]),
                guest_wheels=tuple(str(w) for w in doc.get("guest_wheels", ())),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class ImageState:
    ready: bool
    reason: str
    stamp: ImageStamp | None


def image_state(layout: Layout, rootfs_key: str, project_hash: str) -> ImageState:
    stamp = ImageStamp.load(layout.stamp)
    if stamp is None:
        return ImageState(False, "no image yet", None)
    missing = [p.name for p in (layout.image, layout.vmlinuz, layout.initrd) if not p.is_file()]
    if missing:
        return ImageState(False, f"image incomplete (missing {', '.join(missing)})", stamp)
    if stamp.rootfs_key != rootfs_key:
        return ImageState(False, "package list changed", stamp)
    if stamp.image_recipe != IMAGE_RECIPE_VERSION:
        return ImageState(False, "image recipe changed", stamp)
    if stamp.guest_wheels != GUEST_WHEELS:
        return ImageState(False, "guest Python wheels changed", stamp)
    if stamp.project_hash != project_hash:
        return ImageState(False, "kpath sources changed", stamp)
    return ImageState(True, "up to date", stamp)
