"""What goes into the VM image, and the keys that decide when to rebuild.

Two layers with very different costs are keyed separately:
- the rootfs (mmdebstrap, ~2 min, network): keyed on suite, variant,
  package list and ROOTFS_RECIPE_VERSION;
- the image (hardlink copy + project install + mke2fs, ~15 s): keyed on the
  rootfs key, a hash of the project's source files and IMAGE_RECIPE_VERSION.
Editing kpath therefore re-makes only the image.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vm.errors import VmError

SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES: tuple[str, ...] = (
    "python3",
    "python3-bpfcc",
    "linux-image-amd64",
    "linux-headers-amd64",
    "initramfs-tools",
    "iproute2",
    "kmod",
    "busybox",
    "mount",  # minbase lacks mount(8), which the init script needs for 9p
    "procps",
    "python3-click",
    "python3-networkx",
    "python3-pyelftools",
    "python3-graphviz",
)
# Bump when the rootfs changes in a way the package list does not show
# (mmdebstrap options, hooks).
ROOTFS_RECIPE_VERSION = 1
# Bump when the image assembly changes (size, init, install layout) without
# any project file changing.
IMAGE_RECIPE_VERSION = 1
IMAGE_SIZE = "3G"
# Host and guest are both Debian 12, so the same minor version: the pure
# Python package and its .pyc files are usable as built on the host.
GUEST_PYTHON = "python3.11"

# Files at the project root that a build of the package can read.
_TOP_LEVEL_FILES = ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "setup.py")
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = {".pyc", ".pyo"}


def _short_hash(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:16]


@dataclass(frozen=True)
class RootfsRecipe:
    suite: str = SUITE
    variant: str = VARIANT
    packages: tuple[str, ...] = PACKAGES
    version: int = ROOTFS_RECIPE_VERSION

    def key(self) -> str:
        # Sorted and de-duplicated: reordering the list must not cost 2 minutes.
        doc = {
            "suite": self.suite,
            "variant": self.variant,
            "packages": sorted(set(self.packages)),
            "version": self.version,
        }
        return _short_hash(json.dumps(doc, sort_keys=True).encode())


def find_project_dir(vm_package_dir: Path | None = None) -> Path:
    """The kpath source tree: the parent of the vm package, if it is a project."""
    here = vm_package_dir if vm_package_dir is not None else Path(__file__).resolve().parent
    candidate = here.parent
    if not (candidate / "pyproject.toml").is_file():
        raise VmError(
            f"cannot find kpath's source tree (no pyproject.toml in {candidate}): "
            "the VM image installs kpath from a source checkout, run kpath from one"
        )
    return candidate


def _package_dirs(project: Path) -> list[str]:
    try:
        with (project / "pyproject.toml").open("rb") as handle:
            doc = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise VmError(f"cannot read {project / 'pyproject.toml'}: {exc}") from exc
    packages = doc.get("tool", {}).get("setuptools", {}).get("packages", ["kpath"])
    if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
        raise VmError(f"{project / 'pyproject.toml'}: tool.setuptools.packages is not a list")
    # Dotted subpackages live inside their top-level directory already.
    return sorted({p.split(".")[0] for p in packages})


def project_files(project: Path) -> list[Path]:
    """Relative paths of everything the guest install is built from, sorted."""
    found = [Path(name) for name in _TOP_LEVEL_FILES if (project / name).is_file()]
    for package in _package_dirs(project):
        found.extend(_walk(project, project / package))
    return sorted(found)


def _walk(project: Path, directory: Path) -> Iterator[Path]:
    if not directory.is_dir():
        return
    for path in directory.rglob("*"):
        if any(part in _SKIP_DIRS for part in path.relative_to(project).parts):
            continue
        if path.suffix in _SKIP_SUFFIXES or not path.is_file():
            continue
        yield path.relative_to(project)


def project_hash(project: Path) -> str:
    digest = hashlib.sha256()
    for rel in project_files(project):
        digest.update(str(rel).encode() + b"\0")
        digest.update((project / rel).read_bytes() + b"\0")
    return digest.hexdigest()[:16]
