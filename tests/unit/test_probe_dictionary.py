"""Replay reads probes as the trace recorded them (the header's probe
dictionary), not as the reading kpath's catalog describes them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from click.testing import CliRunner

from kpath.cli_replay import replay_cmd
from probes.catalog import BY_NAME, Capture, Direction, Layer
from tests.unit.synthetic_traces import synthetic_chat, synthetic_header
from tracer.events import ProbeStatus
from tracer.timeline import build_timeline, capture_of, layer_of
from tracer.tracefile import (
    Trace,
    TraceWriter,
    describe,
    probe_specs,
    read_trace,
    recorded_spec,
    with_probes,
)

RENAMED = "tcp_v4_rcv_in_a_future_kernel"


def _renamed_chat() -> Trace:
    """The synthetic chat where tcp_v4_rcv has a name this kpath's catalog
    does not know; the header's dictionary describes it as tcp_v4_rcv."""
    chat = synthetic_chat().trace()
    events = [dataclasses.replace(e, probe=RENAMED) if e.probe == "tcp_v4_rcv" else e
              for e in chat.events]
    entry = dataclasses.replace(describe(ProbeStatus(RENAMED, "", "", True, ["entry"]),
                                         BY_NAME["tcp_v4_rcv"]), name=RENAMED)
    header = with_probes(dataclasses.replace(synthetic_header(),
                                             probes=[*synthetic_header().probes, entry]),
                         [e.probe for e in events])
    return dataclasses.replace(chat, header=header, events=events)


def test_a_probe_unknown_to_the_catalog_reads_as_recorded() -> None:
    assert RENAMED not in BY_NAME
    original = build_timeline(synthetic_chat().trace())
    renamed = build_timeline(_renamed_chat())
    assert [te.probe for te in renamed.events].count(RENAMED) > 0
    for a, b in zip(original.events, renamed.events, strict=True):
        assert (a.layer, a.direction, a.endpoint, a.step, a.flow) == \
            (b.layer, b.direction, b.endpoint, b.step, b.flow)
    assert len(original.steps) == len(renamed.steps)


def test_without_the_dictionary_entry_the_probe_is_unknown() -> None:
    """The control for the test above: the dictionary is what made it work."""
    trace = _renamed_chat()
    trace.header = dataclasses.replace(
        trace.header, probes=[p for p in trace.header.probes if p.name != RENAMED])
    tl = build_timeline(trace)
    assert {te.layer for te in tl.events if te.probe == RENAMED} == {None}


def test_recorded_meaning_wins_over_the_catalog(tmp_path: Path) -> None:
    """A header that says tcp_v4_rcv is an IP-layer probe: replay says so too,
    through the file and the CLI."""
    chat = synthetic_chat()
    header = with_probes(synthetic_header(), [e.probe for e in chat.events])
    header.probes = [dataclasses.replace(p, layer="ip") if p.name == "tcp_v4_rcv" else p
                     for p in header.probes]
    path = tmp_path / "relayered.kpath"
    w = TraceWriter(path, header)
    w.events_batch(chat.events)
    w.close("command-exited")
    tl = build_timeline(read_trace(path))
    assert {te.layer for te in tl.events if te.probe == "tcp_v4_rcv"} == {Layer.IP}
    assert BY_NAME["tcp_v4_rcv"].layer is Layer.TCP
    res = CliRunner().invoke(replay_cmd, [str(path), "--format", "json"])
    assert res.exit_code == 0, res.output
    events = json.loads(res.stdout)["events"]
    layers = {ev["layer"] for ev in events if ev["probe"] == "tcp_v4_rcv"}
    assert layers == {"ip"}


def test_version_1_entries_fall_back_to_the_catalog() -> None:
    """A version 1 header records layer and direction, not the capture."""
    old = ProbeStatus("__skb_datagram_iter", "tcp", "rx", True, ["entry"])
    spec = recorded_spec(old)
    assert spec is not None and spec.capture is Capture.DATAGRAM_ITER
    assert spec.direction is Direction.RX
    unknown = recorded_spec(ProbeStatus("no_such_probe", "tcp", "rx", True))
    assert unknown is None  # no capture recorded, none in the catalog
    newer = ProbeStatus("tcp_v4_rcv", "tcp", "rx", True, capture="a_capture_from_the_future")
    fallback = recorded_spec(newer)
    assert fallback is not None and fallback.capture is BY_NAME["tcp_v4_rcv"].capture


def test_probe_specs_and_capture_of_follow_the_dictionary() -> None:
    status = dataclasses.replace(describe(ProbeStatus("x", "", "", True), BY_NAME["ip_rcv"]),
                                 name="ip_rcv", capture=str(Capture.SOCK))
    specs = probe_specs([status])
    assert specs["ip_rcv"].capture is Capture.SOCK
    assert specs["tcp_v4_rcv"] is BY_NAME["tcp_v4_rcv"]  # not in the header: the catalog
    trace = synthetic_chat().trace()
    trace.header = dataclasses.replace(trace.header, probes=[status])
    ev = next(e for e in trace.events if e.probe == "ip_rcv")
    build_timeline(trace)
    # Outside build_timeline (and the CLI), this kpath's catalog answers.
    assert capture_of(ev) is BY_NAME["ip_rcv"].capture and layer_of(ev) is Layer.IP
