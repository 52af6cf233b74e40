"""`kpath vm ...`: wiring only; the logic lives in the vm package."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from kpath.cli_types import Seconds
from vm.cache import Layout, cache_root
from vm.errors import VmError
from vm.image import ensure_image
from vm.info import vm_info
from vm.progress import Progress
from vm.recipe import DEFAULT_KERNEL, KERNELS
from vm.runner import DEFAULT_TIMEOUT, RunOptions, run_in_vm

T = TypeVar("T")

_CACHE_HELP = "VM cache directory [default: ${KPATH_CACHE:-~/.cache/kpath}/vm]."


def _guard(action: Callable[[], T]) -> T:
    """VmError is a message for the user, not a traceback."""
    try:
        return action()
    except VmError as exc:
        raise click.ClickException(str(exc)) from exc


# Checked before the image is built: QEMU says no only once it starts.
MAX_MEMORY_MB = 1 << 20  # 1 TiB
MAX_CPUS = 255  # QEMU's x86 machines without an x2APIC


def _cache_option() -> Callable[[Callable[..., None]], Callable[..., None]]:
    return click.option(
        "--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
        help=_CACHE_HELP,
    )


def kernel_option() -> Callable[[Callable[..., None]], Callable[..., None]]:
    return click.option(
        "--kernel", type=click.Choice(list(KERNELS)), default=DEFAULT_KERNEL, show_default=True,
        help="Which image: Debian 12's stock 6.1 (linux-image-amd64) or its 6.12 "
             "(linux-image-6.12-amd64, from bookworm-security).",
    )


@click.group("vm")
def vm_group() -> None:
    """Run kpath in a QEMU VM with a stock Debian bookworm kernel (6.1 or 6.12).

    Use it when the host kernel cannot do kprobes. Each kernel has its own
    image (--kernel, default 6.1), built once (mmdebstrap, about 2 minutes)
    and cached; this project is re-installed into it whenever its sources
    change (seconds). Every image has the kernel's headers, BCC
    (python3-bpfcc) and libbpf1. KVM is used when it can boot a stock
    kernel, TCG otherwise (set KPATH_VM_ACCEL=kvm|tcg to force).
    KPATH_VM_MIRROR and KPATH_VM_SECURITY_MIRROR replace deb.debian.org.

    \b
    Examples:
      sudo kpath vm build
      sudo kpath vm build --kernel 6.12
      sudo kpath vm run -- kpath trace -o chat.kpath -- kpath demo chat
      sudo kpath vm run --kernel 6.12 --timeout 120 -- sh -c 'uname -r > kernel.txt'
      kpath vm info --kernel 6.12
    """


@vm_group.command("build")
@kernel_option()
@click.option("--force", is_flag=True, help="Rebuild the rootfs with mmdebstrap even if cached.")
@_cache_option()
def build_cmd(kernel: str, force: bool, cache: Path | None) -> None:
    """Build (or refresh) the cached VM image of one kernel. Needs root.

    The other kernel's rootfs and image are left as they are.

    \b
    Examples:
      sudo kpath vm build                 # 6.1; no-op when nothing changed
      sudo kpath vm build --kernel 6.12   # the 6.12 image, beside the 6.1 one
      sudo kpath vm build --force         # fresh mmdebstrap rootfs too
    """
    layout = Layout(cache_root(cache), kernel)
    _guard(lambda: ensure_image(layout, Progress(), force=force))


@vm_group.command(
    "run",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option(
    "--timeout", type=Seconds(at_least=1.0), default=DEFAULT_TIMEOUT, show_default=True,
    metavar="SECONDS", help="Kill QEMU after this long (exit status 124).",
)
@click.option(
    "--share", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("."),
    show_default="current directory",
    help="Host directory mounted at /mnt/host, the command's working directory.",
)
@click.option("--memory", type=click.IntRange(min=256, max=MAX_MEMORY_MB), default=2048,
              show_default=True, metavar="MB", help="Guest memory.")
@click.option("--cpus", type=click.IntRange(min=1, max=MAX_CPUS), default=2, show_default=True,
              metavar="N", help="Guest CPUs.")
@click.option("--hang-retries", type=click.IntRange(min=0, max=5), default=0, show_default=True,
              metavar="N",
              help="If the guest kernel hangs (a CPU in a soft lockup for 90+ s), boot "
                   "again and rerun COMMAND, up to N times: for commands that can start "
                   "over. The hang is reported either way.")
@kernel_option()
@_cache_option()
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run_cmd(
    timeout: float, share: Path, memory: int, cpus: int, hang_retries: int, kernel: str,
    cache: Path | None, command: tuple[str, ...],
) -> None:
    """Run COMMAND inside the VM; exit with its exit status.

    The image is built first if missing or stale. The share (default: the
    current directory) is the command's working directory in the guest, so
    files it writes there appear on the host. Boot output is hidden; the
    command's output is streamed live. The serial console log of every run
    is kept in the cache (path printed on failure).

    \b
    Examples:
      sudo kpath vm run -- uname -a
      sudo kpath vm run --kernel 6.12 -- uname -r
      sudo kpath vm run -- kpath trace -o chat.kpath -- kpath demo chat
      sudo kpath vm run --share /tmp/out --timeout 300 -- sh -c 'dmesg > dmesg.txt'
      sudo kpath vm run --hang-retries 1 -- kpath trace -o chat.kpath -- kpath demo chat
    """
    opts = RunOptions(
        command=command, share=share, timeout=timeout, memory_mb=memory, cpus=cpus, cache=cache,
        kernel=kernel, hang_retries=hang_retries,
    )
    code = _guard(lambda: run_in_vm(opts))
    raise SystemExit(code)


@vm_group.command("info")
@kernel_option()
@_cache_option()
def info_cmd(kernel: str, cache: Path | None) -> None:
    """Show the cache location, the accelerator choice and one kernel's image state."""
    rows = vm_info(Layout(cache_root(cache), kernel))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name + ':':<{width + 1}} {value}")
