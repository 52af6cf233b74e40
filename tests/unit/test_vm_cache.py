"""Cache keys and staleness: what forces a slow rootfs vs a fast image rebuild."""

from __future__ import annotations

from pathlib import Path

import pytest

from vm.cache import ImageStamp, Layout, cache_root, image_state
from vm.errors import VmError
from vm.image import find_kernel, mke2fs_argv, mmdebstrap_argv
from vm.recipe import (
    COMMON_PACKAGES,
    RootfsRecipe,
    find_project_dir,
    project_files,
    project_hash,
)


def test_cache_root_defaults_and_overrides(tmp_path: Path) -> None:
    assert cache_root(env={"KPATH_CACHE": str(tmp_path)}) == tmp_path / "vm"
    assert cache_root(env={}) == Path.home() / ".cache" / "kpath" / "vm"
    assert cache_root(override=tmp_path / "x", env={"KPATH_CACHE": "/nope"}) == tmp_path / "x"


def test_rootfs_key_ignores_package_order_but_not_content() -> None:
    base = RootfsRecipe()
    assert RootfsRecipe(common_packages=tuple(reversed(COMMON_PACKAGES))).key() == base.key()
    assert RootfsRecipe(common_packages=(*COMMON_PACKAGES, "strace")).key() != base.key()
    assert RootfsRecipe(suite="trixie").key() != base.key()
    assert RootfsRecipe(version=base.version + 1).key() != base.key()


def test_recipe_has_what_the_guest_needs() -> None:
    for package in ("python3-bpfcc", "libbpf1", "linux-headers-amd64", "mount", "kmod",
                    "python3-click"):
        assert package in RootfsRecipe().packages


def _project(root: Path) -> Path:
    (root / "pyproject.toml").write_text('[tool.setuptools]\npackages = ["kpath", "vm"]\n')
    (root / "kpath").mkdir()
    (root / "kpath" / "__init__.py").write_text("")
    (root / "vm" / "guest").mkdir(parents=True)
    (root / "vm" / "guest" / "init.sh").write_text("#!/bin/sh\n")
    (root / "vm" / "__pycache__").mkdir()
    (root / "vm" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    (root / "tests").mkdir()
    (root / "tests" / "test_x.py").write_text("")
    return root


def test_project_files_are_the_packages_only(tmp_path: Path) -> None:
    project = _project(tmp_path)
    names = [str(p) for p in project_files(project)]
    assert names == ["kpath/__init__.py", "pyproject.toml", "vm/guest/init.sh"]


def test_project_hash_follows_sources_not_bytecode_or_tests(tmp_path: Path) -> None:
    project = _project(tmp_path)
    before = project_hash(project)
    (project / "vm" / "__pycache__" / "y.pyc").write_bytes(b"more junk")
    (project / "tests" / "test_y.py").write_text("")
    assert project_hash(project) == before
    (project / "vm" / "guest" / "init.sh").write_text("#!/bin/sh\necho changed\n")
    assert project_hash(project) != before


def test_project_hash_sees_renames(tmp_path: Path) -> None:
    project = _project(tmp_path)
    before = project_hash(project)
    (project / "kpath" / "__init__.py").rename(project / "kpath" / "other.py")
    assert project_hash(project) != before


def test_find_project_dir(tmp_path: Path) -> None:
    project = _project(tmp_path)
    assert find_project_dir(project / "vm") == project
    with pytest.raises(VmError, match="source"):
        find_project_dir(tmp_path / "kpath" / "vm")


def _image(layout: Layout, stamp: ImageStamp) -> None:
    layout.image_dir.mkdir(parents=True)
    for path in (layout.image, layout.vmlinuz, layout.initrd):
        path.write_text("x")
    stamp.dump(layout.stamp)


def test_image_state(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert image_state(layout, "r1", "p1").reason == "no image yet"
    _image(layout, ImageStamp(rootfs_key="r1", project_hash="p1", kernel_release="6.1.0-1"))
    assert image_state(layout, "r1", "p1").ready
    assert image_state(layout, "r1", "p2").reason == "kpath sources changed"
    assert image_state(layout, "r2", "p1").reason == "package list changed"
    layout.initrd.unlink()
    state = image_state(layout, "r1", "p1")
    assert not state.ready and "initrd.img" in state.reason


def test_old_recipe_or_corrupt_stamp_is_stale(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    _image(layout, ImageStamp("r1", "p1", "6.1.0-1", image_recipe=0))
    assert image_state(layout, "r1", "p1").reason == "image recipe changed"
    layout.stamp.write_text("{not json")
    assert not image_state(layout, "r1", "p1").ready


def test_find_kernel_picks_newest_with_its_initrd(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    for release in ("6.1.0-9-amd64", "6.1.0-56-amd64"):
        (boot / f"vmlinuz-{release}").write_text("")
        (boot / f"initrd.img-{release}").write_text("")
    kernel, initrd, release = find_kernel(tmp_path)
    assert release == "6.1.0-56-amd64"  # natural sort: 56 > 9
    assert initrd.name == "initrd.img-6.1.0-56-amd64"
    assert kernel.name == "vmlinuz-6.1.0-56-amd64"
    (boot / "initrd.img-6.1.0-56-amd64").unlink()
    with pytest.raises(VmError, match="initrd"):
        find_kernel(tmp_path)


def test_build_argvs(tmp_path: Path) -> None:
    recipe = RootfsRecipe()
    argv = mmdebstrap_argv(recipe, tmp_path / "t", mirror="http://m/debian")
    assert argv[0] == "mmdebstrap"
    assert "--variant=minbase" in argv
    include = next(a for a in argv if a.startswith("--include="))
    assert set(include.removeprefix("--include=").split(",")) == set(recipe.packages)
    assert argv[-5:] == [
        "bookworm", str(tmp_path / "t"),
        "deb http://m/debian bookworm main",
        "deb http://m/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]
    assert mke2fs_argv(tmp_path / "s", tmp_path / "i")[-4:] == [
        "-d", str(tmp_path / "s"), str(tmp_path / "i"), "3G",
    ]


def test_other_guest_wheels_make_the_image_stale(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    # An image built before the guest had wheels has none in its stamp.
    layout.image_dir.mkdir(parents=True)
    for path in (layout.image, layout.vmlinuz, layout.initrd):
        path.write_text("x")
    layout.stamp.write_text('{"rootfs_key": "r1", "project_hash": "p1", '
                            '"kernel_release": "6.1.0-1", "image_recipe": 1}')
    assert image_state(layout, "r1", "p1").reason == "guest Python wheels changed"
    ImageStamp("r1", "p1", "6.1.0-1").dump(layout.stamp)
    assert image_state(layout, "r1", "p1").ready
    ImageStamp("r1", "p1", "6.1.0-1", guest_wheels=("numpy==1.0",)).dump(layout.stamp)
    assert image_state(layout, "r1", "p1").reason == "guest Python wheels changed"
