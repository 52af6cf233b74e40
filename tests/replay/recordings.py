"""The VM recordings under tests/data that the replay tests run on."""

from __future__ import annotations

from collections.abc import Callable
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


def overlapping_v2(recording: Path, tmp_path: Path, max_copies: int, max_events: int) -> Path:
    """A busy host: 3..max_copies copies of the recording in flight at once
    (bench.synth --overlap 8, about max_events events), as a version 2 file."""
    from bench.synth import write_synthetic
    from tracer.tracefile import read_trace
    from tracer.tracefile.convert import convert

    copies = max(3, min(max_copies, max_events // read_trace(recording).num_events))
    out = tmp_path / "overlap.kpath"
    write_synthetic(recording, out, copies, overlap=8)
    v2 = tmp_path / "overlap_v2.kpath"
    convert(out, v2)
    return v2


def assert_parted_in_both_versions(recording: Path, tmp_path: Path,
                                   check: Callable[[Path, int], int]) -> None:
    """check(path, part_events) on the recording and on its version 2
    conversion: it compares the output rebuilt in parts with the whole one
    and returns how many parts it rebuilt. Only a trace the groups refuse
    may be rebuilt whole."""
    from tracer.timeline import groups
    from tracer.tracefile import read_trace
    from tracer.tracefile.convert import convert

    target = max(50, read_trace(recording).num_events // 6)
    v2 = tmp_path / "v2.kpath"
    convert(recording, v2)
    for path in (recording, v2):
        parted = check(path, target)
        assert parted or groups.plan_groups(str(path)) is None, path.name
