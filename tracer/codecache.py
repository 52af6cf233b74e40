"""The code of dataclasses' generated methods, compiled once instead of at
every start of a process.

Python 3.11's dataclasses write each class's __init__, __repr__, __eq__,
__setattr__, ... as source text and compile it when the class is made:
the 67 dataclasses `replay --stats` imports cost ~25 ms of its start, ~19
of them in compile, in kpath and again in each worker process, before
either reads the trace. Here dataclasses' `exec` takes the code compiled
from the same text before, kept in a file beside the package's .pyc files
(like them: written when the directory is writable, else not kept). The
text is the whole key (a changed class makes new text, never a stale hit);
the file is for one interpreter version (marshal's and the bytecode's).
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import dataclasses
import importlib.util
import marshal
import os
import sys
from types import CodeType
from typing import Any

_PATH = os.path.join(os.path.dirname(__file__), "__pycache__",
                     f"dataclass-code.{sys.implementation.cache_tag}.marshal")
_codes: dict[str, CodeType] = {}  # the file's, then this process's
_fresh: dict[str, CodeType] = {}  # compiled here, not in the file yet
_used: set[str] = set()
_KEEP = 2048  # codes past which the file keeps only the ones this process used
_installed = _released = False


def install() -> None:
    """dataclasses' exec compiles through the cache (once per process)."""
    global _installed
    if _installed or not hasattr(dataclasses, "_create_fn"):  # not 3.11/3.12's dataclasses
        return
    _installed = True
    load()
    dataclasses.exec = _exec  # type: ignore[attr-defined]
    atexit.register(save)


def load() -> None:
    """The codes in the file, if it is this interpreter's (else none)."""
    _codes.update(_read())


def _read() -> dict[str, CodeType]:
    with contextlib.suppress(Exception):  # no file yet, damaged, or another version's
        with open(_PATH, "rb") as f:
            magic, codes = marshal.loads(f.read())  # marshal.load(f): 5x, its reads small
        if magic == importlib.util.MAGIC_NUMBER and isinstance(codes, dict):
            return codes
    return {}


def release() -> None:
    """Lets go of the codes once the process's imports are done (the file's
    ~900 codes, of every command and test run here, take ~2 MiB: the
    memory --stats' two processes count against their bar). A class made
    later is compiled as without the cache."""
    global _released
    _released = True
    _codes.clear()
    _used.clear()


def _exec(source: Any, globals_: dict[str, Any] | None = None,
          locals_: dict[str, Any] | None = None) -> None:
    if isinstance(source, str):
        if not _released:
            _used.add(source)
        code = _codes.get(source)
        if code is None:
            # dont_inherit: as exec compiles in dataclasses, without this
            # module's __future__ annotations
            code = _fresh[source] = compile(source, "<string>", "exec", dont_inherit=True)
            if not _released:
                _codes[source] = code
        source = code
    builtins.exec(source, globals_, locals_)


def save() -> None:
    """Writes the cache when this process compiled code not in it (also
    called before a process ends without its atexit handlers)."""
    if not _fresh:
        return
    codes = {**(_read() if _released else _codes), **_fresh}
    if len(codes) > _KEEP:
        codes = {k: v for k, v in codes.items() if k in _used or k in _fresh}
    _fresh.clear()
    tmp = f"{_PATH}.{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(_PATH), exist_ok=True)
        with open(tmp, "wb") as f:
            marshal.dump((importlib.util.MAGIC_NUMBER, codes), f)
        os.replace(tmp, _PATH)  # whole or not at all, whoever writes last
    except OSError:  # a read-only install: compiled at each start, as before
        with contextlib.suppress(OSError):
            os.unlink(tmp)
