"""The VM recordings under tests/data that the replay tests run on."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent.parent / "data"
RECORDINGS = sorted(DATA.glob("*.kpath"))

# Skipped only while no recording exists (a fresh checkout always has them).
needs_recordings = pytest.mark.skipif(not RECORDINGS, reason="no recorded trace in tests/data yet")
