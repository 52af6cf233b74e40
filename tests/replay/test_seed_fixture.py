"""The seeds' observations hold on the committed VM recording."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tests.seed_checks import check_seed_observations
from tracer.events import Kind
from tracer.tracefile import read_trace

DATA = Path(__file__).resolve().parent.parent / "data"


def test_hello_hi_fixture_shows_the_seed_observations() -> None:
    trace = read_trace(DATA / "hello_hi.kpath")
    assert trace.cut_short is None and trace.lost_total == 0
    assert trace.header.kernel_release.startswith("6.1.")
    found = check_seed_observations(trace)
    assert found["client_port"] != 10086


def test_checks_fail_when_the_synack_takes_the_wrong_path() -> None:
    # Guard against a check that cannot fail: relabel the SYN-ACK's own path
    # as a __tcp_transmit_skb and the checks must object.
    trace = read_trace(DATA / "hello_hi.kpath")
    broken = copy.deepcopy(trace)
    broken.events = [
        e if e.probe != "tcp_v4_send_synack" else type(e)(**{
            **{f: getattr(e, f) for f in e.__dataclass_fields__}, "probe": "__tcp_transmit_skb"})
        for e in broken.events
    ]
    with pytest.raises((AssertionError, StopIteration)):
        check_seed_observations(broken)


def test_checks_fail_when_the_copy_length_differs() -> None:
    trace = read_trace(DATA / "hello_hi.kpath")
    broken = copy.deepcopy(trace)
    broken.events = [
        e if not (e.probe == "__sys_recvfrom" and e.kind == Kind.RETURN and e.ret == 2)
        else type(e)(**{**{f: getattr(e, f) for f in e.__dataclass_fields__}, "ret": 3})
        for e in broken.events
    ]
    with pytest.raises(AssertionError):
        check_seed_observations(broken)
