"""The two-host rig's pair retry: a guest kernel hang reruns both guests.

QEMU is replaced by a fake run_in_vm_or_hang returning scripted outcomes
(synthetic: no VM boots here)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from vm import two_hosts
from vm.progress import Progress
from vm.runner import EXIT_VM_FAILED, RunOptions


class _Script:
    """Each guest's outcomes, one per boot, and the boots seen."""

    def __init__(self, a: list[int | str], b: list[int | str]) -> None:
        self._left = {"a": list(a), "b": list(b)}
        self.boots: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, opts: RunOptions, progress: Progress | None = None) -> int | str:
        who = opts.command[0]
        with self._lock:
            self.boots.append(who)
            return self._left[who].pop(0)


def _run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, script: _Script) -> tuple[int, int]:
    monkeypatch.setattr(two_hosts, "run_in_vm_or_hang", script)
    monkeypatch.setattr(two_hosts, "ensure_image", lambda layout, progress: None)
    monkeypatch.setattr(two_hosts, "listening", lambda port: True)
    return two_hosts.run_two_guests((("a",), ("b",)), tmp_path, 1, 60.0, tmp_path, "6.1",
                                    Progress())


def test_a_hung_guest_reruns_the_pair(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _Script(a=[0, 0], b=["guest-hang", 0])
    assert _run(monkeypatch, tmp_path, script) == (0, 0)
    assert sorted(script.boots) == ["a", "a", "b", "b"]  # A ran again too
    assert "guest B hung; booting both again to run the pair anew" in capsys.readouterr().err


def test_a_pair_that_keeps_hanging_fails_as_the_vm(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _Script(a=["guest-hang", "guest-hang"], b=[0, 3])
    assert _run(monkeypatch, tmp_path, script) == (EXIT_VM_FAILED, 3)
    assert len(script.boots) == 2 * (two_hosts.PAIR_HANG_RETRIES + 1)
    err = capsys.readouterr().err
    assert err.count("guest A hung") == 2 and err.count("booting both again") == 1


def test_a_failed_command_is_not_rerun(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    script = _Script(a=[1], b=[0])
    assert _run(monkeypatch, tmp_path, script) == (1, 0)
    assert len(script.boots) == 2
