"""The one exception of the columnar path."""

from __future__ import annotations


class Irregular(Exception):
    """The trace holds a case whose rule the columnar path does not reproduce
    (the message says which); the object path (build_timeline) handles it."""
