"""The VM recordings under tests/data that the replay tests run on."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from probes.catalog import Capture, ProbeSpec, Returns, select
from tracer.tracefile import Trace, probe_specs

DATA = Path(__file__).resolve().parent.parent / "data"
RECORDINGS = sorted(DATA.glob("*.kpath"))

# Skipped only while no recording exists (a fresh checkout always has them).
needs_recordings = pytest.mark.skipif(not RECORDINGS, reason="no recorded trace in tests/data yet")


def columnar_view(trace: Trace) -> Trace:
    """The recording without the events of the probes whose bytes the
    columnar --stats path does not count (it leaves a trace with them to
    the object path, columnar.Irregular: the io_uring and mmsg syscalls,
    whose bytes are the calls' inside them, and tcp_splice_read): what the
    differential tests can compare both paths on. The rest stays a
    consistent trace (those bytes then went "another way")."""
    specs = probe_specs(trace.header.probes)
    drop = {name for name, spec in specs.items()
            if spec.ret is Returns.COUNT or spec.capture is Capture.SOCKET_COPIED_SEQ}
    if not any(e.probe in drop for e in trace.events):
        return trace
    return dataclasses.replace(trace, events=[e for e in trace.events if e.probe not in drop])


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
