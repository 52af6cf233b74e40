"""tracer/codecache.py: dataclasses made through the cache are the ones
compiled anew, and the cache file is read back by the next process."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from tracer import codecache


def _make() -> type:
    @dataclasses.dataclass(frozen=True, slots=True, order=True)
    class Point:
        x: int
        y: str = "a"

    return Point


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "__pycache__" / "codes.marshal"
    monkeypatch.setattr(codecache, "_PATH", str(path))
    monkeypatch.setattr(codecache, "_codes", {})
    monkeypatch.setattr(codecache, "_fresh", {})
    monkeypatch.setattr(codecache, "_used", set())
    monkeypatch.setattr(codecache, "_released", False)
    return path


def test_cached_methods_behave_as_compiled(scratch: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    assert dataclasses.exec is codecache._exec  # type: ignore[attr-defined]
    with monkeypatch.context() as mp:
        mp.setattr(dataclasses, "exec", exec, raising=False)
        plain = _make()
    for _ in range(2):  # compiled, then from the cache
        point = _make()
        p = point(1)
        assert (p.x, p.y) == (1, "a")
        assert repr(p) == repr(plain(1)) == "_make.<locals>.Point(x=1, y='a')"
        assert p == point(1, "a") and p < point(2) and hash(p) == hash(point(1))
        with pytest.raises(dataclasses.FrozenInstanceError):
            p.x = 2  # type: ignore[misc]
        # not compiled with codecache's __future__ flags (annotations as text)
        assert point.__init__.__annotations__ == plain.__init__.__annotations__
        assert inspect.signature(point.__init__) == inspect.signature(plain.__init__)


def test_cache_file_read_by_the_next_process(scratch: Path) -> None:
    _make()
    assert codecache._fresh
    codecache.save()
    assert scratch.exists() and not codecache._fresh
    codecache._codes.clear()
    codecache.load()
    _make()
    assert not codecache._fresh  # every method's code from the file


def test_released_codes_still_saved_with_the_file_s(scratch: Path) -> None:
    _make()
    codecache.save()
    kept = len(codecache._read())
    codecache.release()
    assert codecache._codes == {}

    @dataclasses.dataclass
    class Later:  # made after the release: compiled, then added to the file's
        z: float

    assert Later(1.5).z == 1.5 and codecache._fresh
    codecache.save()
    assert len(codecache._read()) > kept


def test_damaged_or_foreign_file_is_ignored(scratch: Path) -> None:
    scratch.parent.mkdir()
    scratch.write_bytes(b"\x00garbage")
    codecache.load()
    assert codecache._codes == {}
    _make()
    assert codecache._fresh


def test_unwritable_place_keeps_nothing(scratch: Path) -> None:
    scratch.parent.write_text("a file where the directory would be")
    _make()
    codecache.save()  # no error: compiled at each start, as without the cache
    assert not scratch.exists()
