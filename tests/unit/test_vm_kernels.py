"""The kernel matrix: one recipe, rootfs key and image directory per kernel,
the suites each kernel needs, and --kernel/--backend carried to the guest."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from kpath import cli_validate, cli_vm
from tracer.tracefile import read_trace
from vm import validate as validate_mod
from vm.cache import ImageStamp, Layout
from vm.errors import VmError
from vm.image import find_headers, find_kernel, mmdebstrap_argv
from vm.info import vm_info
from vm.recipe import DEFAULT_KERNEL, KERNELS, RootfsRecipe, kernel_spec
from vm.runner import RunOptions
from vm.scenarios import BY_SCENARIO, SCENARIOS
from vm.validate import BACKENDS, check_traces, guest_command, trace_argv

DATA = Path(__file__).resolve().parents[1] / "data"


def test_the_two_kernels_and_their_packages() -> None:
    assert DEFAULT_KERNEL == "6.1"
    assert list(KERNELS) == ["6.1", "6.12"]
    old, new = RootfsRecipe("6.1").packages, RootfsRecipe("6.12").packages
    assert {"linux-image-amd64", "linux-headers-amd64"} <= set(old)
    assert {"linux-image-6.12-amd64", "linux-headers-6.12-amd64"} <= set(new)
    assert not {"linux-image-amd64", "linux-headers-amd64"} & set(new)
    for packages in (old, new):  # both backends, whatever the kernel
        assert {"python3-bpfcc", "libbpf1"} <= set(packages)


def test_each_kernel_has_its_own_rootfs_key() -> None:
    assert RootfsRecipe().key() == RootfsRecipe("6.1").key()
    assert RootfsRecipe("6.1").key() != RootfsRecipe("6.12").key()
    assert RootfsRecipe("6.12").key() == RootfsRecipe("6.12").key()
    assert RootfsRecipe("6.12", suites=("bookworm-security",)).key() != RootfsRecipe("6.12").key()


def test_6_12_comes_from_bookworm_security() -> None:
    spec = kernel_spec("6.12")
    assert spec.suite == "bookworm-security"
    argv = mmdebstrap_argv(RootfsRecipe("6.12"), Path("/t"), security_mirror="http://s/sec")
    assert "deb http://s/sec bookworm-security main" in argv
    assert "deb http://deb.debian.org/debian bookworm main" in argv
    assert "deb http://deb.debian.org/debian bookworm-updates main" in argv
    include = next(a for a in argv if a.startswith("--include="))
    assert "linux-image-6.12-amd64" in include.split(",")[-2:]
    with pytest.raises(VmError, match="bookworm-security"):
        RootfsRecipe("6.12", suites=("bookworm",))


def test_unknown_kernel_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(VmError, match="6.1, 6.12"):
        RootfsRecipe("5.10")
    with pytest.raises(VmError, match="unknown VM kernel"):
        Layout(tmp_path, "../etc")


def test_release_prefixes() -> None:
    assert kernel_spec("6.1").matches("6.1.0-41-amd64")
    assert not kernel_spec("6.1").matches("6.12.117+deb12-amd64")
    assert kernel_spec("6.12").matches("6.12.117+deb12-amd64")
    assert not kernel_spec("6.12").matches("6.1.0-41-amd64")


def test_one_image_directory_per_kernel(tmp_path: Path) -> None:
    old, new = Layout(tmp_path), Layout(tmp_path, "6.12")
    assert old.image_dir == tmp_path / "image-6.1"
    assert new.image_dir == tmp_path / "image-6.12"
    assert new.image == tmp_path / "image-6.12" / "rootfs.ext4"
    assert new.vmlinuz.parent == new.initrd.parent == new.stamp.parent == new.image_dir
    assert old.image_tmp(7) != new.image_tmp(7)
    assert old.logs == new.logs  # one lock, one log directory for the cache
    assert old.rootfs(RootfsRecipe("6.1").key()) != new.rootfs(RootfsRecipe("6.12").key())


def _boot(root: Path, *releases: str) -> None:
    (root / "boot").mkdir(parents=True)
    for release in releases:
        (root / "boot" / f"vmlinuz-{release}").write_text("")
        (root / "boot" / f"initrd.img-{release}").write_text("")


def test_find_kernel_takes_the_requested_series(tmp_path: Path) -> None:
    _boot(tmp_path, "6.1.0-41-amd64", "6.12.117+deb12-amd64")
    assert find_kernel(tmp_path, kernel_spec("6.1"))[2] == "6.1.0-41-amd64"
    assert find_kernel(tmp_path, kernel_spec("6.12"))[2] == "6.12.117+deb12-amd64"
    only_old = tmp_path / "old"
    _boot(only_old, "6.1.0-41-amd64")
    with pytest.raises(VmError, match="no 6.12 kernel"):
        find_kernel(only_old, kernel_spec("6.12"))


def test_find_headers_follows_the_guest_symlink(tmp_path: Path) -> None:
    release = "6.12.117+deb12-amd64"
    modules = tmp_path / "lib" / "modules" / release
    modules.mkdir(parents=True)
    with pytest.raises(VmError, match="no kernel headers"):
        find_headers(tmp_path, release)
    # Debian's link is absolute: it must resolve inside the rootfs, not on the host.
    os.symlink(f"/usr/src/linux-headers-{release}", modules / "build")
    with pytest.raises(VmError, match="no kernel headers"):
        find_headers(tmp_path, release)
    headers = tmp_path / "usr" / "src" / f"linux-headers-{release}"
    headers.mkdir(parents=True)
    (headers / "Makefile").write_text("")
    assert find_headers(tmp_path, release) == headers


@pytest.mark.parametrize("backend", BACKENDS)
def test_trace_argv_passes_the_backend(backend: str) -> None:
    chat = BY_SCENARIO["chat"]
    argv = trace_argv(chat, Path("v"), backend)
    assert argv[:4] == ["kpath", "trace", "--backend", backend]
    assert argv[argv.index("-o") + 1] == "v/hello_hi.kpath"
    assert argv[argv.index("--") + 1:] == ["kpath", "demo", *chat.workload]
    script = guest_command(SCENARIOS, Path("v"), backend)[2]
    assert script.count(f"kpath trace --backend {backend} ") == len(SCENARIOS)


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(VmError, match="auto, core, bcc"):
        trace_argv(BY_SCENARIO["chat"], Path("v"), "ebpf")


def test_guest_command_drops_an_older_runs_traces_first() -> None:
    script = guest_command([BY_SCENARIO["chat"]], Path("v"), "core")[2]
    steps = script.split("; ")
    rm = steps.index("rm -f v/hello_hi.kpath")
    assert steps[rm + 1].startswith("kpath trace --backend core ")


def test_traces_must_come_from_the_kernel_that_was_booted(tmp_path: Path) -> None:
    chat = BY_SCENARIO["chat"]
    (tmp_path / chat.trace_file).write_bytes((DATA / chat.trace_file).read_bytes())
    assert read_trace(tmp_path / chat.trace_file).header.kernel_release.startswith("6.1.")
    (on_61,) = check_traces([chat], tmp_path, "6.1")
    assert on_61.results[0].name == "traced on kernel 6.1" and on_61.results[0].ok
    (on_612,) = check_traces([chat], tmp_path, "6.12")
    assert not on_612.ok and not on_612.results[0].ok
    assert "6.1." in on_612.results[0].detail
    (unchecked,) = check_traces([chat], tmp_path)
    assert not unchecked.results[0].name.startswith("traced on kernel")


def test_traces_must_come_from_the_backend_asked_for(tmp_path: Path) -> None:
    chat = BY_SCENARIO["chat"]
    (tmp_path / chat.trace_file).write_bytes((DATA / chat.trace_file).read_bytes())
    assert read_trace(tmp_path / chat.trace_file).header.backend == "bcc"
    (bcc,) = check_traces([chat], tmp_path, "6.1", "bcc")
    assert [r.ok for r in bcc.results[:2]] == [True, True]
    assert bcc.results[1].name == "traced by the bcc backend"
    (core,) = check_traces([chat], tmp_path, "6.1", "core")
    assert not core.ok and core.results[1].detail == "the trace says bcc"
    (auto,) = check_traces([chat], tmp_path, "6.1", "auto")  # either backend will do
    assert not any(r.name.startswith("traced by") for r in auto.results)


def test_validate_boots_the_requested_kernel(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[RunOptions] = []

    def fake_run(opts: RunOptions, progress: object = None) -> int:
        seen.append(opts)
        return 0

    monkeypatch.setattr(validate_mod, "run_in_vm", fake_run)
    outcomes = validate_mod.validate([BY_SCENARIO["chat"]], Path("v"), tmp_path,
                                     kernel="6.12", backend="core")
    assert seen[0].kernel == "6.12"
    assert "kpath trace --backend core " in seen[0].command[2]
    assert outcomes[0].error is not None  # the fake run wrote no trace: a failure


def _invoke(args: list[str]) -> str:
    command = cli_validate.validate_cmd if args[0] == "validate" else cli_vm.vm_group
    result = CliRunner().invoke(command, args[1:] if args[0] == "validate" else args)
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_kernel_and_backend_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[dict[str, object]] = []

    def fake_validate(*args: object, **kwargs: object) -> list[object]:
        calls.append(kwargs)
        return []

    monkeypatch.setattr(cli_validate, "validate", fake_validate)
    _invoke(["validate"])
    _invoke(["validate", "--kernel", "6.12", "--backend", "core"])
    assert (calls[0]["kernel"], calls[0]["backend"]) == ("6.1", "auto")
    assert (calls[1]["kernel"], calls[1]["backend"]) == ("6.12", "core")
    bad = CliRunner().invoke(cli_validate.validate_cmd, ["--kernel", "5.10"])
    assert bad.exit_code == 2 and "5.10" in bad.output

    runs: list[RunOptions] = []
    monkeypatch.setattr(cli_vm, "run_in_vm", lambda opts: runs.append(opts) or 0)
    CliRunner().invoke(cli_vm.vm_group, ["run", "--share", str(tmp_path), "--", "true"])
    CliRunner().invoke(cli_vm.vm_group, ["run", "--kernel", "6.12", "--share", str(tmp_path),
                                         "--", "uname", "--kernel"])
    assert [r.kernel for r in runs] == ["6.1", "6.12"]
    assert runs[1].command == ("uname", "--kernel")  # after --, the guest's

    builds: list[Layout] = []
    monkeypatch.setattr(cli_vm, "ensure_image",
                        lambda layout, progress, force: builds.append(layout))
    _invoke(["build", "--cache", str(tmp_path)])
    _invoke(["build", "--kernel", "6.12", "--cache", str(tmp_path)])
    assert [b.image_dir.name for b in builds] == ["image-6.1", "image-6.12"]


def test_info_reports_the_chosen_kernel_and_the_other(tmp_path: Path) -> None:
    stamp = ImageStamp(rootfs_key="r", project_hash="p", kernel_release="6.12.117+deb12-amd64")
    other = Layout(tmp_path, "6.12")
    other.image_dir.mkdir(parents=True)
    stamp.dump(other.stamp)
    rows = dict(vm_info(Layout(tmp_path)))
    assert rows["kernel"].startswith("6.1 (linux-image-amd64")
    assert rows["other kernels"] == "6.12 (6.12.117+deb12-amd64)"
    rows = dict(vm_info(Layout(tmp_path, "6.12")))
    assert "linux-image-6.12-amd64" in rows["kernel"] and "bookworm-security" in rows["kernel"]
    assert rows["other kernels"] == "6.1 (not built)"
    assert "--kernel 6.12" not in rows["image"]  # it has a stamp: no build hint
    out = _invoke(["info", "--kernel", "6.12", "--cache", str(tmp_path)])
    assert "image-6.12" in out


def test_shlex_round_trip_of_the_guest_command() -> None:
    # The guest runs the line with sh: each trace argv must come back whole.
    script = guest_command(SCENARIOS, Path("out dir"), "bcc")[2]
    for s in SCENARIOS:
        assert shlex.join(trace_argv(s, Path("out dir"), "bcc")) in script
