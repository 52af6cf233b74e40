"""The VM recordings under tests/data that the replay tests run on."""

from __future__ import annotations

from pathlib import Path

import pytest

from probes.catalog import ProbeSpec, select
from tracer.tracefile import Trace

DATA = Path(__file__).resolve().parent.parent / "data"
RECORDINGS = sorted(DATA.glob("*.kpath"))

# Skipped only while no recording exists (a fresh checkout always has them).
needs_recordings = pytest.mark.skipif(not RECORDINGS, reason="no recorded trace in tests/data yet")


# One end of each connection only (the two-host recording: the other end's
# syscalls, and so its reads, are in the other host's trace).
ONE_END = frozenset({"two_hosts_a.kpath", "two_hosts_b.kpath"})
# Known gaps of the reconstruction on whole-guest and merged traces (issue
# 10), shown as expected failures rather than left out:
# - a lead-in (net_rx_action of a non-TCP frame, ARP) waits in its context
#   and joins a packet processed seconds later, out of time order;
# - bench/synth copies of a one-end or merged trace do not print the
#   original's accounting.
LEAD_IN_ORDER = frozenset({"two_hosts_ab.kpath"})
SYNTH_COPIES = frozenset({"two_hosts_a.kpath", "two_hosts_b.kpath", "two_hosts_ab.kpath"})


def recorded_selection(trace: Trace) -> tuple[str, list[ProbeSpec]]:
    """The recording's own probes as a session request (its profile label
    kept): a profile since grown or renamed still covers every recorded probe."""
    _, specs = select(",".join(p.name for p in trace.header.probes))
    return trace.header.profile, specs
