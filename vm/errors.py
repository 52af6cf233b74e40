"""The one error type the VM code raises for problems the user can fix."""

from __future__ import annotations


class VmError(Exception):
    """A one-line, user-facing message (what is wrong and what to do).

    The CLI prints it without a traceback; anything else escaping vm/ is a bug.
    """
