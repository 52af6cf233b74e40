"""Trace filters: parsed and validated here, handed to BPF as numbers.

Nothing a user types ever reaches the BPF C text; the backend copies these
values into the `config` map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class FilterError(ValueError):
    pass


@dataclass(frozen=True)
class Filters:
    pid: int | None = None
    comm: str | None = None
    port: int | None = None
    follow_command: bool = False  # `kpath trace -- CMD`: trace CMD's process tree

    def to_record(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, False)}


COMM_MAX = 15  # TASK_COMM_LEN - 1


def parse_pid(value: int | None) -> int | None:
    if value is None:
        return None
    if value <= 0 or value > 4_194_304:  # PID_MAX_LIMIT
        raise FilterError(f"--pid {value}: not a valid process id")
    return value


def parse_port(value: int | None) -> int | None:
    if value is None:
        return None
    if not 1 <= value <= 65535:
        raise FilterError(f"--port {value}: must be between 1 and 65535")
    return value


def parse_comm(value: str | None) -> str | None:
    if value is None:
        return None
    raw = value.encode("utf-8", errors="strict")
    if not raw or len(raw) > COMM_MAX:
        raise FilterError(
            f"--comm {value!r}: must be 1 to {COMM_MAX} bytes (the kernel truncates "
            "task names to 15)"
        )
    if b"\x00" in raw:
        raise FilterError("--comm must not contain NUL bytes")
    return value


def make_filters(
    pid: int | None, comm: str | None, port: int | None, command: bool
) -> Filters:
    if pid is not None and command:
        raise FilterError("--pid and a command (-- CMD) cannot be combined")
    return Filters(parse_pid(pid), parse_comm(comm), parse_port(port), command)
