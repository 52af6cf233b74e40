"""The capture stage's one error hierarchy. libbpf and BCC failures are
translated into these at the boundary (tracer/capture/libbpf.py, bcc.py);
anything else escaping tracer/capture is a bug."""

from __future__ import annotations


class CaptureError(Exception):
    """Tracing cannot start or go on; the message says why and what to do."""

    def __init__(self, message: str, log: str = "", errno: int = 0) -> None:
        super().__init__(message)
        self.log = log  # libbpf's or BCC's own output (the verifier log on a failed load)
        self.errno = errno


class PrerequisiteError(CaptureError):
    """This machine lacks something the backend needs (root, BTF, kprobes, ...)."""


class LoadError(CaptureError):
    """The BPF program did not compile or load."""


class AttachError(CaptureError):
    """One attachment failed; the session reports the probe as missing."""

    ABSENT_ERRNOS = (2, 99)  # ENOENT, EADDRNOTAVAIL: the target does not exist

    @property
    def absent(self) -> bool:
        return self.errno in self.ABSENT_ERRNOS
