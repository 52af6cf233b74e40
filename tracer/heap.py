"""The C heap of a process that makes large arrays and lets them go, over
and over (the capture's spans, the replay's parts): freed memory kept for
the next ones, instead of each array a mapping of its own whose pages
fault in anew (glibc; elsewhere a no-op)."""

from __future__ import annotations

import ctypes

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_heap(mmap_from: int = 32 << 20, keep: int = 64 << 20) -> bool:
    """Arrays below `mmap_from` bytes from the heap, up to `keep` bytes of
    freed heap kept; False where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_from) and mallopt(_M_TRIM_THRESHOLD, keep))
