"""Process plumbing shared by the demo workloads."""

from __future__ import annotations

import os
from collections.abc import Callable


def fork_child(run: Callable[[int], int]) -> tuple[int, int]:
    """Fork a child that runs `run(write_fd)` and exits with its result.

    Returns (pid, read_fd): the parent reads what the child reports on the
    pipe. The child never returns into the caller's code, even on error.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_fd)
            code = run(write_fd)
        finally:
            os._exit(code)
    os.close(write_fd)
    return pid, read_fd
