"""What goes into the VM image, and the keys that decide when to rebuild.

Two layers with very different costs are keyed separately:
- the rootfs (mmdebstrap, ~2 min, network): keyed on the kernel, the suites,
  variant, package list and ROOTFS_RECIPE_VERSION, one per kernel;
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
# Every image is built from the release, its point-release updates and the
# security archive, spelled out (not left to mmdebstrap's defaults, which a
# mirror override would drop): Debian 12's 6.12 kernel is only in
# bookworm-security, and so is the newest 6.1.
SUITES: tuple[str, ...] = ("bookworm", "bookworm-updates", "bookworm-security")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
VARIANT = "minbase"
# What every image has, whatever its kernel.
COMMON_PACKAGES: tuple[str, ...] = (
    "python3",
    "python3-bpfcc",  # the BCC backend
    "libbpf1",  # libbpf.so.1, through which the CO-RE backend loads its object
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


@dataclass(frozen=True)
class Kernel:
    """One kernel the VM can boot: the Debian packages that bring it and its
    headers (BCC compiles against /lib/modules/RELEASE/build)."""

    name: str  # what --kernel takes
    image_package: str
    headers_package: str
    suite: str  # the suite that carries it; must be among the recipe's suites
    release_prefix: str  # its `uname -r` starts with this

    def matches(self, release: str) -> bool:
        return release.startswith(self.release_prefix)


# Meta-packages, as linux-image-amd64 always was: each follows the newest
# build of its series, and the image stamp records the exact release.
KERNELS: dict[str, Kernel] = {
    k.name: k
    for k in (
        Kernel("6.1", "linux-image-amd64", "linux-headers-amd64", "bookworm", "6.1."),
        Kernel("6.12", "linux-image-6.12-amd64", "linux-headers-6.12-amd64",
               "bookworm-security", "6.12."),
    )
}
DEFAULT_KERNEL = "6.1"


def kernel_spec(name: str) -> Kernel:
    try:
        return KERNELS[name]
    except KeyError:
        raise VmError(
            f"unknown VM kernel {name!r}: choose one of {', '.join(KERNELS)}"
        ) from None


# Bump when the rootfs changes in a way the key does not show (mmdebstrap
# options, hooks).
ROOTFS_RECIPE_VERSION = 2
# Bump when the image assembly changes (size, init, install layout) without
# any project file changing.
IMAGE_RECIPE_VERSION = 1
IMAGE_SIZE = "3G"
# Python packages bookworm lacks (python3-pyarrow, python3-msgspec) or has too old for
# kpath's columnar capture: manylinux wheels for the guest's CPython 3.11,
# downloaded once on the host and installed into the image. Part of the
# image's key (the stamp records them).
GUEST_WHEELS: tuple[str, ...] = ("numpy==2.4.6", "pyarrow==26.0.1", "msgspec==0.23.0")
GUEST_WHEEL_PLATFORM = "manylinux_2_28_x86_64"  # bookworm has glibc 2.36
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
    """One rootfs per kernel: its key covers the kernel, so building one
    kernel's image never invalidates another's."""

    kernel: str = DEFAULT_KERNEL
    suite: str = SUITE
    suites: tuple[str, ...] = SUITES
    variant: str = VARIANT
    common_packages: tuple[str, ...] = COMMON_PACKAGES
    version: int = ROOTFS_RECIPE_VERSION

    def __post_init__(self) -> None:
        spec = kernel_spec(self.kernel)
        if spec.suite not in self.suites:
            raise VmError(f"kernel {spec.name} comes from {spec.suite}, which the recipe lacks")

    @property
    def spec(self) -> Kernel:
        return kernel_spec(self.kernel)

    @property
    def packages(self) -> tuple[str, ...]:
        spec = self.spec
        return (*self.common_packages, spec.image_package, spec.headers_package)

    def sources(self, mirror: str | None = None, security_mirror: str | None = None) -> list[str]:
        """One-line apt sources, one per suite; the mirrors are where from,
        not what, so they stay out of the key."""
        archive = mirror or DEBIAN_MIRROR
        security = security_mirror or SECURITY_MIRROR
        return [
            f"deb {security if suite.endswith('-security') else archive} {suite} main"
            for suite in self.suites
        ]

    def key(self) -> str:
        # Sorted and de-duplicated: reordering the list must not cost 2 minutes.
        doc = {
            "kernel": self.kernel,
            "suite": self.suite,
            "suites": sorted(set(self.suites)),
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
