"""kpath merge on SYNTHETIC two-host traces: the veth recording (both ends
in one kernel, two namespaces) cut in two pseudo-hosts by connection end,
the second one's clock moved by a known amount. The merge must find that
amount within its stated uncertainty and match every segment once; and
what cannot be joined is refused in one line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kpath.cli import cli
from tracer.merge import MergeError, merge_traces
from tracer.timeline import build_timeline
from tracer.timeline.latency import Hop, packet_latencies
from tracer.tracefile import Source, TraceWriter, read_trace

DATA = Path(__file__).resolve().parent.parent / "data"
VETH = DATA / "veth_netns.kpath"
CLIENT_ADDR = "10.199.0.1"  # vm/netns_pair.py
CLIENT_NETNS = 4026532180  # the recording's client namespace
SHIFT = 3_000_000_123  # synthetic: host 1's clock runs this far ahead


def synthetic_split(tmp: Path, shift: int = SHIFT, same_boot: bool = False) -> tuple[Path, Path]:
    """The veth recording as two pseudo-hosts: each event to the end it is
    on (its endpoint, else its namespace, else its task)."""
    trace = read_trace(VETH)
    tl = build_timeline(trace)
    paths = []
    for host in (0, 1):
        boot = "boot-0" if same_boot else f"boot-{host}"
        hdr = dataclasses.replace(trace.header, hostname=f"synthetic-{host}",
                                  sources=[Source(hostname=f"synthetic-{host}", boot_id=boot)])
        mine = []
        for te in tl.events:
            ep, ev = te.endpoint, te.ev
            if ep is not None:
                on = 0 if ep.addr == CLIENT_ADDR else 1
            elif ev.netns:
                on = 0 if ev.netns == CLIENT_NETNS else 1
            else:
                on = 0 if ev.comm == "veth-client" else 1
            if on == host:
                mine.append(dataclasses.replace(ev, ts_ns=ev.ts_ns + (shift if host else 0)))
        path = tmp / f"synthetic_{host}.kpath"
        w = TraceWriter(path, hdr)
        w.events_batch(mine)
        w.close("command-exited")
        paths.append(path)
    return paths[0], paths[1]


def test_merge_finds_the_shift_within_its_uncertainty(tmp_path: Path) -> None:
    a, b = synthetic_split(tmp_path)
    res = merge_traces([a, b], tmp_path / "ab.kpath")
    pairing = res.inputs[1].pairing
    assert pairing is not None
    est = pairing.estimate
    assert abs(est.offset_ns - SHIFT) <= est.uncertainty_ns
    assert est.uncertainty_ns < 100_000  # veth: the shortest trips take microseconds
    # The veth chat: 10 segments cross, each matched once, none left over.
    assert pairing.matched == 10
    assert not pairing.unmatched_sent and not pairing.unmatched_received
    assert len({(m.key, m.sent_ns) for m in pairing.matches}) == 10


def test_merged_trace_holds_both_hosts_on_one_clock(tmp_path: Path) -> None:
    a, b = synthetic_split(tmp_path)
    out = tmp_path / "ab.kpath"
    merge_traces([a, b], out)
    merged = read_trace(out)
    srcs = merged.header.sources
    assert [s.hostname for s in srcs] == ["synthetic-0", "synthetic-1"]
    assert srcs[0].shift_ns is None and srcs[1].shift_ns is not None
    assert abs(-srcs[1].shift_ns - SHIFT) <= (srcs[1].shift_uncertainty_ns or 0)
    assert merged.num_events == read_trace(VETH).num_events
    assert {e.source for e in merged.events} == {0, 1}
    # Back on one clock: the merged events span what the recording spans.
    orig = read_trace(VETH).events
    span = max(e.ts_ns for e in merged.events) - min(e.ts_ns for e in merged.events)
    assert abs(span - (max(e.ts_ns for e in orig) - min(e.ts_ns for e in orig))) \
        <= 2 * (srcs[1].shift_uncertainty_ns or 0)


def test_the_wire_is_a_hop_of_each_crossing_packet(tmp_path: Path) -> None:
    a, b = synthetic_split(tmp_path)
    out = tmp_path / "ab.kpath"
    res = merge_traces([a, b], out)
    tl = build_timeline(read_trace(out))
    lat = packet_latencies(tl)
    wires = [pl.hops[Hop.WIRE].ns for pl in lat if Hop.WIRE in pl.hops]
    assert len(wires) == 10
    unc = res.header.sources[1].shift_uncertainty_ns or 0
    assert min(wires) >= -unc
    # dev>rx spans the wire: measured only where there is no wire point
    assert not any(Hop.DEVICE_RX in pl.hops and Hop.WIRE in pl.hops for pl in lat)
    # the columnar --stats show the same wire hop and the hosts
    text = CliRunner().invoke(cli, ["replay", str(out), "--stats"]).output
    assert " wire " in text and "host 1 synthetic-1: clock offset" in text


def test_reconstruction_keeps_each_hosts_threads_apart(tmp_path: Path) -> None:
    # One kernel's thread ids on both pseudo-hosts: as two hosts' would collide.
    a, b = synthetic_split(tmp_path)
    out = tmp_path / "ab.kpath"
    merge_traces([a, b], out)
    tl = build_timeline(read_trace(out))
    for st in tl.steps:
        hosts = {te.ev.source for te in st.events}
        if len(hosts) > 1:  # only a packet crosses hosts
            assert type(st).__name__ == "Packet"
    labels = {te.context for te in tl.events if te.ev.source == 1}
    assert labels and all("@1" in label for label in labels)


def test_same_host_twice_is_refused(tmp_path: Path) -> None:
    a, b = synthetic_split(tmp_path, same_boot=True)
    with pytest.raises(MergeError, match="come from the same host"):
        merge_traces([a, b], tmp_path / "ab.kpath")
    res = CliRunner().invoke(cli, ["merge", str(a), str(a), "-o", str(tmp_path / "x.kpath")])
    assert res.exit_code == 1
    assert res.output.count("\n") == 1 and "same host" in res.output


def test_no_common_connection_is_refused(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["merge", str(DATA / "hello_hi.kpath"),
                                   str(DATA / "bulk_1mib.kpath"), "-o",
                                   str(tmp_path / "x.kpath")])
    assert res.exit_code == 1 and res.output.count("\n") == 1
    assert "shares no connection" in res.output
    assert not (tmp_path / "x.kpath").exists()


def test_unreadable_input_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.kpath"
    junk.write_bytes(b"\x89PNG\r\n")
    res = CliRunner().invoke(cli, ["merge", str(VETH), str(junk), "-o", str(tmp_path / "x")])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "PNG" in res.output


def test_source_column_survives_jsonl(tmp_path: Path) -> None:
    a, b = synthetic_split(tmp_path)
    out = tmp_path / "ab.kpath"
    merge_traces([a, b], out)
    merged = read_trace(out)
    jl = tmp_path / "ab.jsonl"
    res = CliRunner().invoke(cli, ["convert", str(out), "--to", "jsonl", "-o", str(jl), "-q"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in jl.read_text().splitlines()]
    events = [rec["event"] for rec in lines if "event" in rec]
    # 0 is left out of a line, as sk and skb are
    assert {e.get("source", 0) for e in events} == {0, 1}
    assert [e.source for e in read_trace(jl).events] == [e.source for e in merged.events]
    assert read_trace(jl).header.sources[1].shift_ns == merged.header.sources[1].shift_ns


def test_older_files_read_source_zero() -> None:
    for name in ("bulk_lossy_v2.kpath", "hello_hi.kpath"):  # version 2 without it, version 1
        assert {e.source for e in read_trace(DATA / name).events} == {0}
