"""`kpath vm run`: boot the cached image, run one command, return its exit code.

The command goes in through the 9p share (a per-run hidden directory holding
a shell script), its output comes back live on the serial console, its exit
code comes back through the share (and, as a fallback, in the END marker).
"""

from __future__ import annotations

import os
import secrets
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Literal, TextIO

from vm.accel import detect_accel
from vm.cache import Layout, cache_root
from vm.console import ConsoleFilter
from vm.errors import VmError
from vm.image import ensure_image
from vm.progress import Progress
from vm.qemu import QEMU, QemuConfig, qemu_argv
from vm.recipe import DEFAULT_KERNEL
from vm.tools import require_tool

EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_VM_FAILED = 125  # the VM, not the command, failed (as docker run)
EXIT_INTERRUPTED = 130
DEFAULT_TIMEOUT = 900.0
RUN_DIR_NAME = ".kpath-vm"
KEEP_LOGS = 20
# After the END marker the guest powers itself off within a second or two;
# a stuck power-off must not turn a finished run into a timeout.
POWEROFF_GRACE = 20.0

# The guest reaches its init in 12-19 s under TCG (60 s on a loaded host). A
# boot that shows nothing past the firmware for this long has hung (seen once
# in ~50 TCG boots: silence after "Booting from ROM"); it is retried once.
BOOT_TIMEOUT = 300.0
BOOT_ATTEMPTS = 2

# A guest whose kernel reports a CPU in a soft lockup for this long has
# hung: under TCG a starved vCPU's one report stays far below it (seen on
# Linux 6.1 under multi-threaded TCG, no longer used: both CPUs in timer
# interrupts for as long as we waited while a jump label was patched;
# bench/README.md, "The guest hangs under TCG"). Waiting for the run's
# timeout would only waste it.
GUEST_HANG_S = 90

Outcome = Literal["eof", "timeout", "interrupted", "boot-hang", "guest-hang"]
Hang = Literal["boot-hang", "guest-hang"]


@dataclass(frozen=True)
class RunOptions:
    command: tuple[str, ...]
    share: Path
    timeout: float = DEFAULT_TIMEOUT
    memory_mb: int = 2048
    cpus: int = 2
    cache: Path | None = None
    kernel: str = DEFAULT_KERNEL  # which image: a vm.recipe.KERNELS name
    nic: tuple[str, ...] = ("-nic", "none")  # QEMU's NIC options (vm/qemu.py)
    # Boot again and rerun the command this many times after a guest hang
    # (GUEST_HANG_S): for commands that can start over (validation runs).
    hang_retries: int = 0


class _Terminated(Exception):
    """SIGTERM/SIGHUP while QEMU runs: unwind so QEMU is stopped, not orphaned."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def command_script(command: Sequence[str]) -> str:
    """The guest-side script: the argv quoted once, never interpreted on the host."""
    if not command:
        raise VmError("nothing to run: put the command after --, e.g. `kpath vm run -- uname -r`")
    return "#!/bin/sh\n# written by kpath vm run\n" + shlex.join(command) + "\n"


def summarize(command: Sequence[str], width: int = 100) -> str:
    """The command on one short line, for progress messages only."""
    text = " ".join(shlex.join(command).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def read_exit_code(run_dir: Path) -> int | None:
    try:
        return int((run_dir / "exit-code").read_text().strip())
    except (OSError, ValueError):
        return None


def run_in_vm(opts: RunOptions, progress: Progress | None = None) -> int:
    code = run_in_vm_or_hang(opts, progress)
    return EXIT_VM_FAILED if isinstance(code, str) else code


def run_in_vm_or_hang(opts: RunOptions, progress: Progress | None = None) -> int | Hang:
    """run_in_vm, but a hang that outlived its retries is told apart from a
    failed command: a caller running several guests at once reruns them all."""
    progress = progress or Progress()
    script = command_script(opts.command)
    share = opts.share.resolve()
    if not share.is_dir():
        raise VmError(f"share {share} is not a directory")
    qemu = require_tool(QEMU, "qemu-system-x86")
    accel = detect_accel()
    layout = Layout(cache_root(opts.cache), opts.kernel)
    built = ensure_image(layout, progress)

    run_id = new_run_id()
    run_dir = share / RUN_DIR_NAME / run_id
    try:
        run_dir.mkdir(parents=True)
        (run_dir / "cmd").write_text(script)
    except OSError as exc:
        raise VmError(f"cannot write the command into the share {share}: {exc}") from exc
    layout.logs.mkdir(parents=True, exist_ok=True)
    log = layout.logs / f"{run_id}.log"
    cfg = QemuConfig(
        accel=accel, kernel=layout.vmlinuz, initrd=layout.initrd, image=layout.image,
        share=share, run_id=run_id, memory_mb=opts.memory_mb, cpus=opts.cpus, qemu=qemu,
        nic=opts.nic,
    )
    try:
        progress.say(f"vm run: booting {built.stamp.kernel_release} ({accel}) ...")
        with ExitStack() as image_lock:
            image_lock.enter_context(layout.lock(shared=True))
            return _boot(cfg, opts, run_dir, log, progress, image_lock.close)
    finally:
        _remove_run_dir(run_dir)
        _prune_logs(layout.logs)


def _boot(
    cfg: QemuConfig,
    opts: RunOptions,
    run_dir: Path,
    log: Path,
    progress: Progress,
    qemu_started: Callable[[], None] = lambda: None,
) -> int | Hang:
    """Run QEMU to the end, booting again once if the guest hangs before its
    init, and opts.hang_retries times if its kernel hangs while the command
    runs (the image is used with -snapshot: a retry starts from the same disk)."""
    boot_hangs = guest_hangs = 0
    while True:
        code = _boot_once(cfg, opts, run_dir, log, progress, qemu_started)
        if code == "boot-hang":
            boot_hangs += 1
            again = boot_hangs < BOOT_ATTEMPTS
            progress.say(f"vm run: the guest did not reach its init in {BOOT_TIMEOUT:.0f}s "
                         f"(boot hang), QEMU killed{'; booting again' if again else ''}; "
                         f"console log {log}")
        elif code == "guest-hang":
            guest_hangs += 1
            again = guest_hangs <= opts.hang_retries
            progress.say(f"vm run: the guest kernel hung (a CPU in a soft lockup for "
                         f"{GUEST_HANG_S}+ s), QEMU killed"
                         f"{'; booting again to run the command anew' if again else ''}; "
                         f"console log {log}")
        else:
            return code
        if not again:
            return code


def _boot_once(
    cfg: QemuConfig,
    opts: RunOptions,
    run_dir: Path,
    log: Path,
    progress: Progress,
    qemu_started: Callable[[], None],
) -> int | Hang:
    """One QEMU run: the command's exit code, or how the guest hung."""
    started = time.monotonic()

    def on_notice(line: str) -> None:
        progress.say(line)

    console = ConsoleFilter(cfg.run_id, out=_Stdout().write, notice=on_notice)
    proc = subprocess.Popen(
        qemu_argv(cfg),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # Own session: a terminal Ctrl-C reaches only us, and we stop QEMU
        # in order (after saving the console log) instead of racing it.
        start_new_session=True,
    )
    outcome: Outcome = "interrupted"
    interrupt_code = EXIT_INTERRUPTED
    try:
        with _signals_unwind(), log.open("wb") as log_file:
            assert proc.stdout is not None
            outcome = _pump(proc.stdout, log_file, console, started + opts.timeout, progress,
                            started, opts.command, qemu_started,
                            boot_deadline=started + min(BOOT_TIMEOUT, opts.timeout))
    except KeyboardInterrupt:
        outcome = "interrupted"
    except _Terminated as exc:
        outcome = "interrupted"
        interrupt_code = 128 + exc.signum
    finally:
        _stop(proc)

    elapsed = time.monotonic() - started
    if console.ended and console.exit_code is not None:
        code = read_exit_code(run_dir)
        if code is None:
            code = console.exit_code
            if code == EXIT_VM_FAILED:
                progress.say(f"vm run: the VM setup failed; console log {log}")
        progress.say(f"vm run: command exited {code}, VM ran {elapsed:.1f}s")
        return code
    if outcome == "boot-hang" or outcome == "guest-hang":
        return outcome
    if outcome == "interrupted":
        progress.say(f"vm run: interrupted, QEMU stopped; console log {log}")
        return interrupt_code
    if outcome == "timeout":
        progress.say(f"vm run: timed out after {opts.timeout:.0f}s, QEMU killed; console log {log}")
        return EXIT_TIMEOUT
    progress.say(
        f"vm run: the guest died before the command finished (QEMU exit {proc.returncode}); "
        f"console log {log}"
    )
    _show_tail(log)
    return EXIT_VM_FAILED


def _pump(
    stream: IO[bytes],
    log_file: IO[bytes],
    console: ConsoleFilter,
    deadline: float,
    progress: Progress,
    started: float,
    command: Sequence[str],
    qemu_started: Callable[[], None],
    boot_deadline: float | None = None,
) -> Outcome:
    fd = stream.fileno()
    announced = False
    first = True
    while True:
        now = time.monotonic()
        if now >= deadline:
            return "timeout"
        if boot_deadline is not None and not console.started and now >= boot_deadline:
            return "boot-hang"
        ready, _, _ = select.select([fd], [], [], min(deadline - now, 0.3))
        if not ready:
            console.idle()
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return "eof"  # QEMU closed its output: it has exited
        if first:
            # Firmware output: QEMU has opened kernel, initrd and image.
            first = False
            qemu_started()
        log_file.write(chunk)
        log_file.flush()
        console.feed(chunk)
        if console.lockup_s >= GUEST_HANG_S:
            return "guest-hang"
        if console.started and not announced:
            announced = True
            progress.say(
                f"vm run: guest up after {time.monotonic() - started:.1f}s, "
                f"running {summarize(command)}"
            )
        if console.ended:
            deadline = min(deadline, time.monotonic() + POWEROFF_GRACE)


class _Stdout:
    """Live output that survives a closed pipe (`kpath vm run ... | head`):
    the command keeps running and its output stays in the console log."""

    def __init__(self) -> None:
        self.closed = False

    def write(self, text: str) -> None:
        if self.closed:
            return
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            self.closed = True
            # Point fd 1 at /dev/null so the interpreter's exit flush is quiet.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


@contextmanager
def _signals_unwind() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Terminated(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # QEMU exits cleanly on SIGTERM
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _show_tail(log: Path, lines: int = 15, stream: TextIO | None = None) -> None:
    try:
        text = log.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return
    tail = [line.rstrip("\r") for line in text.splitlines() if line.strip()][-lines:]
    out = stream if stream is not None else sys.stderr
    for line in tail:
        print(f"  | {line}", file=out)


def _remove_run_dir(run_dir: Path) -> None:
    for name in ("cmd", "exit-code"):
        (run_dir / name).unlink(missing_ok=True)
    for directory in (run_dir, run_dir.parent):
        try:
            directory.rmdir()
        except OSError:
            break  # not empty (another run, or files the user put there)


def _prune_logs(logs: Path, keep: int = KEEP_LOGS) -> None:
    if not logs.is_dir():
        return
    for old in sorted(logs.glob("*.log"))[:-keep]:
        old.unlink(missing_ok=True)


def shared_out(out: Path, share: Path) -> tuple[Path, Path]:
    """`--out` as an absolute path and relative to the shared directory
    (what the guest sees); VmError when it lies outside that directory."""
    share = share.resolve()
    out_abs = (share / out).resolve() if not out.is_absolute() else out.resolve()
    try:
        return out_abs, out_abs.relative_to(share)
    except ValueError:
        raise VmError(f"--out {out} must be inside the shared directory {share}") from None
