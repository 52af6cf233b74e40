"""The run loop against a fake QEMU: exit codes, timeout, a dying guest.

The fake prints what the real guest prints on the serial console, so the
whole host side (streaming, markers, exit-code file, QEMU teardown) runs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from kpath import cli_vm
from vm import runner
from vm.accel import Accel
from vm.errors import VmError
from vm.progress import Progress
from vm.qemu import QemuConfig
from vm.runner import EXIT_TIMEOUT, EXIT_VM_FAILED, RunOptions

FAKE_QEMU = f"""#!{sys.executable}
import os, re, sys, time
args = sys.argv[1:]
share = re.search(r"path=([^,]+)", args[args.index("-virtfs") + 1]).group(1)
run_id = re.search(r"kpath_run=(\\S+)", args[args.index("-append") + 1]).group(1)
mode = os.environ["FAKE_QEMU_MODE"]
out = sys.stdout
out.write("SeaBIOS noise\\r\\n[    0.1] kernel noise\\r\\n"); out.flush()
if mode == "die":
    out.write("Kernel panic - not syncing\\r\\n"); sys.exit(1)
if mode.startswith("boothang"):
    # Hangs before init: always ("boothang"), or on the first boot only.
    boots = f"{{share}}/boots"
    n = int(open(boots).read()) + 1 if os.path.exists(boots) else 1
    open(boots, "w").write(str(n))
    if mode == "boothang" or n == 1:
        time.sleep(60)
out.write(f"KPATH-VM-START {{run_id}}\\r\\n")
out.write(open(f"{{share}}/.kpath-vm/{{run_id}}/cmd").read().splitlines()[-1] + "\\r\\n")
out.flush()
if mode == "hang":
    time.sleep(60)
if mode.startswith("lockup"):
    # As a hung 6.1 guest printed them (console log of 2026-12-02): every
    # ~28 s, each CPU; hung always ("lockup") or in the first run only.
    runs = f"{{share}}/runs"
    n = int(open(runs).read()) + 1 if os.path.exists(runs) else 1
    open(runs, "w").write(str(n))
    if mode == "lockup" or n == 1:
        for cpu, task, s in [(1, "swapper/1:0", 22), (0, "kpath:208", 26), (1, "swapper/1:0", 49),
                             (0, "kpath:208", 52), (1, "swapper/1:0", 75), (0, "kpath:208", 78),
                             (1, "swapper/1:0", 101)]:
            out.write(f"[  156.708458] watchdog: BUG: soft lockup - CPU#{{cpu}} stuck for "
                      f"{{s}}s! [{{task}}]\\r\\n")
            out.flush()
        time.sleep(60)
open(f"{{share}}/.kpath-vm/{{run_id}}/exit-code", "w").write("7\\n")
out.write(f"KPATH-VM-END {{run_id}} rc=7\\r\\n[   17.0] sysrq: Power Off\\r\\n")
"""


@pytest.fixture()
def fake(tmp_path: Path) -> QemuConfig:
    qemu = tmp_path / "fake-qemu"
    qemu.write_text(FAKE_QEMU)
    qemu.chmod(0o755)
    share = tmp_path / "share"
    (share / ".kpath-vm" / "r1").mkdir(parents=True)
    (share / ".kpath-vm" / "r1" / "cmd").write_text(runner.command_script(["echo", "hi there"]))
    return QemuConfig(
        accel=Accel("tcg", "test"), kernel=tmp_path / "k", initrd=tmp_path / "i",
        image=tmp_path / "img", share=share, run_id="r1", qemu=str(qemu),
    )


def _boot(cfg: QemuConfig, timeout: float = 30, hang_retries: int = 0) -> int | str:
    opts = RunOptions(command=("echo", "hi there"), share=cfg.share, timeout=timeout,
                      hang_retries=hang_retries)
    log = cfg.share.parent / "console.log"
    return runner._boot(cfg, opts, cfg.share / ".kpath-vm" / "r1", log, Progress())


def test_exit_code_and_output_come_back(
    fake: QemuConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "ok")
    assert _boot(fake) == 7
    captured = capsys.readouterr()
    assert captured.out == "echo 'hi there'\n"  # command output only, no boot noise
    assert "command exited 7," in captured.err
    assert "kernel noise" in (fake.share.parent / "console.log").read_text()


def test_guest_death_is_reported_with_the_console_log(
    fake: QemuConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "die")
    assert _boot(fake) == EXIT_VM_FAILED
    err = capsys.readouterr().err
    assert "guest died" in err
    assert str(fake.share.parent / "console.log") in err
    assert "Kernel panic" in err  # the tail of the log is shown


def test_timeout_kills_qemu(
    fake: QemuConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "hang")
    assert _boot(fake, timeout=2) == EXIT_TIMEOUT
    assert "timed out after 2s" in capsys.readouterr().err


def test_a_boot_that_hangs_before_init_is_retried_once(
    fake: QemuConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(runner, "BOOT_TIMEOUT", 1.0)
    monkeypatch.setenv("FAKE_QEMU_MODE", "boothang-once")
    assert _boot(fake) == 7
    assert "did not reach its init in 1s (boot hang), QEMU killed; booting again" in (
        capsys.readouterr().err)
    monkeypatch.setenv("FAKE_QEMU_MODE", "boothang")
    (fake.share / "boots").unlink()
    assert _boot(fake) == "boot-hang"  # run_in_vm's exit: EXIT_VM_FAILED
    err = capsys.readouterr().err
    assert err.count("boot hang") == 2 and "booting again" in err.splitlines()[0]
    assert (fake.share / "boots").read_text() == "2"


def test_a_guest_kernel_hang_stops_qemu_and_is_retried_when_asked(
    fake: QemuConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "lockup")
    started = time.monotonic()
    assert _boot(fake) == "guest-hang"  # not the 30 s timeout: the hang is seen
    assert time.monotonic() - started < 20
    err = capsys.readouterr().err
    assert "guest kernel hung (a CPU in a soft lockup for 90+ s), QEMU killed;" in err
    assert "booting again" not in err and (fake.share / "runs").read_text() == "1"

    (fake.share / "runs").unlink()
    monkeypatch.setenv("FAKE_QEMU_MODE", "lockup-once")
    assert _boot(fake, hang_retries=1) == 7
    assert "QEMU killed; booting again to run the command anew" in capsys.readouterr().err
    assert (fake.share / "runs").read_text() == "2"

    (fake.share / "runs").unlink()
    monkeypatch.setenv("FAKE_QEMU_MODE", "lockup")
    assert _boot(fake, hang_retries=1) == "guest-hang"
    assert capsys.readouterr().err.count("guest kernel hung") == 2


def test_run_dir_is_removed(tmp_path: Path) -> None:
    run_dir = tmp_path / ".kpath-vm" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "cmd").write_text("true\n")
    (run_dir / "exit-code").write_text("0\n")
    runner._remove_run_dir(run_dir)
    assert not (tmp_path / ".kpath-vm").exists()


def test_cli_passes_the_command_through_untouched(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[RunOptions] = []

    def fake_run(opts: RunOptions) -> int:
        seen.append(opts)
        return 3

    monkeypatch.setattr(cli_vm, "run_in_vm", fake_run)
    args = ["run", "--timeout", "60", "--share", str(tmp_path), "--cpus", "1",
            "--hang-retries", "2", "--",
            "kpath", "trace", "-o", "chat.kpath", "--timeout", "5", "--", "sh", "-c", "a; b"]
    result = CliRunner().invoke(cli_vm.vm_group, args)
    assert result.exit_code == 3, result.output
    assert seen[0].command == (
        "kpath", "trace", "-o", "chat.kpath", "--timeout", "5", "--", "sh", "-c", "a; b"
    )
    assert seen[0].timeout == 60 and seen[0].cpus == 1 and seen[0].share == tmp_path
    assert seen[0].hang_retries == 2


def test_cli_without_separator_stops_at_first_word(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[RunOptions] = []

    def fake_run(opts: RunOptions) -> int:
        seen.append(opts)
        return 0

    monkeypatch.setattr(cli_vm, "run_in_vm", fake_run)
    result = CliRunner().invoke(cli_vm.vm_group, ["run", "uname", "-r", "--cpus", "9"])
    assert result.exit_code == 0, result.output
    assert seen[0].command == ("uname", "-r", "--cpus", "9")
    assert seen[0].hang_retries == 0  # rerunning a command is asked for, never assumed


def test_cli_turns_vm_errors_into_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(opts: RunOptions) -> int:
        raise VmError("mmdebstrap not found: install it with `apt-get install mmdebstrap`")

    monkeypatch.setattr(cli_vm, "run_in_vm", broken)
    result = CliRunner().invoke(cli_vm.vm_group, ["run", "--", "true"])
    assert result.exit_code == 1
    assert "Error: mmdebstrap not found" in result.output
    assert "Traceback" not in result.output
