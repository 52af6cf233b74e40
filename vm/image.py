"""`kpath vm build`: the cached rootfs and the bootable image made from it.

The rootfs comes from mmdebstrap (slow, network) and is reused across project
changes. The image is a hardlink copy of the rootfs plus this project, the
guest init and a kpath launcher, packed with `mke2fs -d` (fast). Every build
happens in a temporary directory that is renamed into place only when
complete, so an interrupted build never leaves something that looks valid.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from vm.cache import ImageStamp, Layout, image_state
from vm.errors import VmError
from vm.progress import Progress
from vm.recipe import (
    GUEST_PYTHON,
    GUEST_WHEEL_PLATFORM,
    GUEST_WHEELS,
    IMAGE_SIZE,
    Kernel,
    RootfsRecipe,
    find_project_dir,
    kernel_spec,
    project_files,
    project_hash,
)
from vm.tools import GIB, pid_alive, require_root, require_space, require_tool

GUEST_INIT = Path(__file__).resolve().parent / "guest" / "init.sh"
# Where apt fetches from: the Debian archive (bookworm, bookworm-updates) and
# the security archive; the defaults are deb.debian.org.
MIRROR_ENV = "KPATH_VM_MIRROR"
SECURITY_MIRROR_ENV = "KPATH_VM_SECURITY_MIRROR"
# Measured: the rootfs is 1.3 GB; the image adds up to the same again.
ROOTFS_SPACE = 4 * GIB
IMAGE_SPACE = 2 * GIB

LAUNCHER = """#!/usr/bin/python3
# Installed by `kpath vm build`: the kpath copied from the host's working tree.
import sys

from kpath.cli import main

sys.exit(main())
"""


@dataclass(frozen=True)
class BuiltImage:
    layout: Layout
    stamp: ImageStamp
    rebuilt: bool


def mmdebstrap_argv(
    recipe: RootfsRecipe,
    target: Path,
    mirror: str | None = None,
    security_mirror: str | None = None,
) -> list[str]:
    return [
        "mmdebstrap",
        "--mode=root",  # mke2fs -d needs real root ownership in the tree
        "--format=directory",
        f"--variant={recipe.variant}",
        f"--include={','.join(recipe.packages)}",
        recipe.suite,
        str(target),
        # Explicit "deb ..." lines, one per suite (see vm.recipe.SUITES).
        *recipe.sources(mirror, security_mirror),
    ]


def mke2fs_argv(staging: Path, image: Path, size: str = IMAGE_SIZE) -> list[str]:
    return ["mke2fs", "-q", "-t", "ext4", "-L", "kpath-root", "-d", str(staging), str(image), size]


def _natural_key(text: str) -> list[tuple[int, int | str]]:
    return [(0, int(tok)) if tok.isdigit() else (1, tok) for tok in re.split(r"(\d+)", text)]


def find_kernel(rootfs: Path, spec: Kernel | None = None) -> tuple[Path, Path, str]:
    """Newest kernel in rootfs/boot (of spec's series, if given), its initrd
    and its release string."""
    kernels = sorted(
        (p for p in rootfs.glob("boot/vmlinuz-*")
         if spec is None or spec.matches(p.name.removeprefix("vmlinuz-"))),
        key=lambda p: _natural_key(p.name),
    )
    if not kernels:
        which = f"{spec.name} kernel" if spec is not None else "kernel"
        raise VmError(f"no {which} in {rootfs}/boot: rebuild it with `kpath vm build --force`")
    kernel = kernels[-1]
    release = kernel.name.removeprefix("vmlinuz-")
    # Debian's virtio, 9p and ext4 are modules: without the initrd no root fs.
    initrd = rootfs / "boot" / f"initrd.img-{release}"
    if not initrd.is_file():
        raise VmError(f"no initrd for {release} in {rootfs}/boot: rebuild with --force")
    return kernel, initrd, release


def find_headers(rootfs: Path, release: str) -> Path:
    """The headers BCC compiles against: /lib/modules/RELEASE/build, inside rootfs."""
    build = rootfs / "lib" / "modules" / release / "build"
    target = Path(os.readlink(build)) if build.is_symlink() else build
    # Debian's link is absolute (/usr/src/linux-headers-RELEASE): the rootfs's, not ours.
    headers = rootfs / target.relative_to("/") if target.is_absolute() else build.parent / target
    if not (headers / "Makefile").is_file():
        raise VmError(
            f"no kernel headers for {release} in {rootfs} (lib/modules/{release}/build): "
            "rebuild it with `kpath vm build --force`"
        )
    return headers


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    points = [line.split()[1] for line in lines if len(line.split()) > 1]
    return [p for p in points if p.startswith(prefix)]


def _safe_rmtree(path: Path) -> None:
    # An interrupted mmdebstrap can leave /proc, /sys or /dev mounted inside its
    # target; rmtree through a bind mount would delete host files.
    mounts = _mounts_under(path)
    if mounts:
        raise VmError(f"{path} still has mounts ({', '.join(mounts)}): unmount, then delete it")
    shutil.rmtree(path, ignore_errors=False)


def clean_stale_tmp(layout: Layout) -> None:
    """Remove temporary build dirs whose builder process is gone."""
    if not layout.root.is_dir():
        return
    for entry in layout.root.iterdir():
        match = re.fullmatch(r"\.(?:rootfs-\w+|image(?:-[\w.]+)?)\.(?:tmp|old)-(\d+)", entry.name)
        if match and entry.is_dir() and not pid_alive(int(match.group(1))):
            _safe_rmtree(entry)


def _run_mmdebstrap(argv: list[str], log: Path, progress: Progress) -> None:
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace",
            # Own process group, so an interrupt can reach mmdebstrap's worker
            # too: its main process only waits for the worker to finish.
            start_new_session=True,
        )
        assert proc.stdout is not None
        last = ""
        try:
            for line in proc.stdout:
                log_file.write(line)
                log_file.flush()
                if line.strip():
                    last = line.strip()
                # mmdebstrap's "I:" lines are its stage names: good progress.
                if line.startswith(("I: ", "E: ")):
                    progress.say(f"vm build:   mmdebstrap: {line[3:].strip()}")
        except BaseException:
            # Ctrl-C: mmdebstrap must undo its own mounts in the target before
            # anything is deleted, so signal its group and let it clean up.
            # Keep draining its output so it never blocks on a full pipe.
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
            log_file.writelines(proc.stdout)
            proc.wait()
            raise
        rc = proc.wait()
    if rc != 0:
        raise VmError(f"mmdebstrap failed (exit {rc}): {last}; full log: {log}")


def build_rootfs(layout: Layout, recipe: RootfsRecipe, progress: Progress) -> Path:
    require_root("building the VM root filesystem (mmdebstrap)")
    require_tool("mmdebstrap", "mmdebstrap")
    layout.root.mkdir(parents=True, exist_ok=True)
    require_space(layout.root, ROOTFS_SPACE, "the VM root filesystem")
    key = recipe.key()
    final = layout.rootfs(key)
    tmp = layout.rootfs_tmp(key, os.getpid())
    log = layout.mmdebstrap_log(key)
    argv = mmdebstrap_argv(recipe, tmp, os.environ.get(MIRROR_ENV) or None,
                           os.environ.get(SECURITY_MIRROR_ENV) or None)
    progress.say(
        f"vm build: mmdebstrap {recipe.suite} with kernel {recipe.kernel} (about 2 min), log {log}"
    )
    started = time.monotonic()
    try:
        try:
            _run_mmdebstrap(argv, log, progress)
        except KeyboardInterrupt:
            progress.say("vm build: interrupted, removing the partial rootfs")
            raise
        # A rootfs we cannot boot, or where BCC cannot compile, must not
        # become the cache.
        _, _, release = find_kernel(tmp, recipe.spec)
        find_headers(tmp, release)
        if final.exists():  # --force: swap, then drop the old tree
            old = layout.root / f".rootfs-{key}.old-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            _safe_rmtree(old)
        else:
            tmp.rename(final)
    finally:
        if tmp.exists():
            _safe_rmtree(tmp)
    progress.say(
        f"vm build: rootfs {key} ({release}) built in {time.monotonic() - started:.0f}s"
    )
    return final


def ensure_rootfs(
    layout: Layout, recipe: RootfsRecipe, progress: Progress, force: bool = False
) -> Path:
    final = layout.rootfs(recipe.key())
    if final.is_dir() and not force:
        progress.say(f"vm build: cached rootfs {recipe.key()} (kernel {recipe.kernel})")
        return final
    return build_rootfs(layout, recipe, progress)


def _write_new(path: Path, text: str, mode: int) -> None:
    # The staging tree is a hardlink copy of the cached rootfs: writing into an
    # existing file would change the cache too, so always replace, never edit.
    if path.exists() or path.is_symlink():
        path.unlink()
    path.write_text(text)
    path.chmod(mode)


def _wheel_file(wheels: Path, pin: str) -> Path | None:
    name, version = pin.split("==")
    found = sorted(wheels.glob(f"{name}-{version}-*.whl"))
    return found[0] if found else None


def fetch_wheels(wheels: Path, progress: Progress) -> list[Path]:
    """The guest's wheels (GUEST_WHEELS), downloaded into the cache once."""
    missing = [pin for pin in GUEST_WHEELS if _wheel_file(wheels, pin) is None]
    if missing:
        wheels.mkdir(parents=True, exist_ok=True)
        progress.say(f"vm build: downloading {', '.join(missing)} for the guest")
        argv = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--only-binary=:all:", "--disable-pip-version-check",
            "--platform", GUEST_WHEEL_PLATFORM, "--python-version", GUEST_PYTHON[6:],
            "--implementation", "cp", "--dest", str(wheels), *missing,
        ]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise VmError(f"cannot download the guest's wheels ({', '.join(missing)}): "
                          f"{lines[-1] if lines else '?'}")
    out = [_wheel_file(wheels, pin) for pin in GUEST_WHEELS]
    lacking = [pin for pin, path in zip(GUEST_WHEELS, out, strict=True) if path is None]
    if lacking:
        raise VmError(f"pip download left no wheel for {', '.join(lacking)} in {wheels}")
    return [p for p in out if p is not None]


def install_project(staging: Path, project: Path, work: Path, progress: Progress,
                    wheels: list[Path] | None = None) -> None:
    """pip-install the project (no deps: Debian's python3-* packages and the
    guest wheels provide them)."""
    if importlib.util.find_spec("pip") is None:
        raise VmError(f"pip is missing for {sys.executable}: apt-get install python3-pip")
    if importlib.util.find_spec("setuptools") is None:
        raise VmError(
            f"setuptools is missing for {sys.executable}: apt-get install python3-setuptools"
        )
    # Build from a copy of exactly the hashed files: the image then matches its
    # stamp, and setuptools' build/ and egg-info never land in the working tree.
    src = work / "src"
    for rel in project_files(project):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project / rel, src / rel)
    site = staging / "usr" / "local" / "lib" / GUEST_PYTHON / "dist-packages"
    site.mkdir(parents=True, exist_ok=True)
    progress.say(f"vm build: installing kpath from {project}")
    argv = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
        "--no-build-isolation", "--disable-pip-version-check", "--no-warn-script-location",
        "--target", str(site), str(src),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise VmError(f"pip install of kpath into the image failed: {lines[-1] if lines else '?'}")
    if wheels:
        progress.say("vm build: installing " + ", ".join(w.name.split("-")[0] for w in wheels))
        argv = [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
            "--disable-pip-version-check", "--no-warn-script-location",
            "--target", str(site), *(str(w) for w in wheels),
        ]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise VmError(f"installing the guest wheels failed: {lines[-1] if lines else '?'}")
    # pip --target drops console scripts in <site>/bin; the guest gets its own launcher.
    shutil.rmtree(site / "bin", ignore_errors=True)


def install_guest_files(staging: Path) -> None:
    _write_new(staging / "kpath-init", GUEST_INIT.read_text(), 0o755)
    _write_new(staging / "usr" / "local" / "bin" / "kpath", LAUNCHER, 0o755)
    (staging / "mnt" / "host").mkdir(parents=True, exist_ok=True)


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise VmError(f"{what} failed (exit {result.returncode}): {detail[-1] if detail else '?'}")


def build_image(
    layout: Layout, rootfs: Path, rootfs_key: str, project: Path, phash: str, progress: Progress
) -> ImageStamp:
    require_root("building the VM image (mke2fs -d over a root-owned tree)")
    require_tool("mke2fs", "e2fsprogs")
    require_space(layout.root, IMAGE_SPACE, "the VM image")
    kernel, initrd, release = find_kernel(rootfs, kernel_spec(layout.kernel))
    wheels = fetch_wheels(layout.wheels, progress)
    work = layout.image_tmp(os.getpid())
    staging = work / "rootfs"
    out = work / "image"
    started = time.monotonic()
    try:
        work.mkdir(parents=True)
        out.mkdir()
        progress.say("vm build: hardlink copy of the rootfs")
        _run(["cp", "-al", str(rootfs), str(staging)], "cp -al of the rootfs")
        install_project(staging, project, work, progress, wheels)
        install_guest_files(staging)
        progress.say(f"vm build: mke2fs ext4 {IMAGE_SIZE}")
        _run(mke2fs_argv(staging, out / layout.image.name), "mke2fs")
        shutil.copyfile(kernel, out / layout.vmlinuz.name)
        shutil.copyfile(initrd, out / layout.initrd.name)
        stamp = ImageStamp(rootfs_key=rootfs_key, project_hash=phash, kernel_release=release)
        stamp.dump(out / layout.stamp.name)
        _swap_in(out, layout.image_dir, layout.image_old(os.getpid()))
    finally:
        if work.exists():
            _safe_rmtree(work)
    progress.say(f"vm build: image ready ({release}) in {time.monotonic() - started:.0f}s")
    return stamp


def _swap_in(new: Path, final: Path, old: Path) -> None:
    # A running QEMU keeps its open (now unlinked) files: swapping is safe.
    if final.exists():
        final.rename(old)
        new.rename(final)
        _safe_rmtree(old)
    else:
        new.rename(final)


def ensure_image(
    layout: Layout,
    progress: Progress,
    force: bool = False,
    recipe: RootfsRecipe | None = None,
    project: Path | None = None,
) -> BuiltImage:
    """Build layout.kernel's image if missing or stale; `force` rebuilds its
    rootfs too. Other kernels' rootfs and images are left alone."""
    recipe = recipe or RootfsRecipe(kernel=layout.kernel)
    if recipe.kernel != layout.kernel:
        raise ValueError(f"recipe for kernel {recipe.kernel}, layout for {layout.kernel}")
    project = project or find_project_dir()
    with layout.lock():
        clean_stale_tmp(layout)
        rootfs = ensure_rootfs(layout, recipe, progress, force=force)
        phash = project_hash(project)
        state = image_state(layout, recipe.key(), phash)
        if state.ready and state.stamp is not None and not force:
            progress.say(
                f"vm build: image {layout.image_dir.name} up to date "
                f"({state.stamp.kernel_release}, kpath {phash})"
            )
            return BuiltImage(layout, state.stamp, rebuilt=False)
        progress.say(f"vm build: {'forced rebuild' if force else state.reason}: making the image")
        stamp = build_image(layout, rootfs, recipe.key(), project, phash, progress)
        return BuiltImage(layout, stamp, rebuilt=True)
