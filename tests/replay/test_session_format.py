"""What a live trace writes, driven by the replay double: trace format
version 2, the probe dictionary (each probe described as the catalog says),
this host as the source, the clock offsets at start and end."""

from __future__ import annotations

from pathlib import Path

from kpath.console import KeptStatus
from probes.catalog import BY_NAME
from tracer.capture.replay import ReplayBackend
from tracer.filters import make_filters
from tracer.session import TraceRequest, run_trace
from tracer.tracefile import local_source, read_trace, scan_trace

from .recordings import DATA, recorded_selection


def test_the_session_writes_a_self_describing_version_2_trace(tmp_path: Path) -> None:
    src = read_trace(DATA / "hello_hi.kpath")
    profile, specs = recorded_selection(src)
    out = tmp_path / "live.kpath"
    req = TraceRequest(output=out, filters=make_filters(None, None, None, True),
                       profile=profile, specs=specs, command=["true"])
    run_trace(req, KeptStatus(), backend=ReplayBackend(src, per_poll=8))
    assert out.read_bytes()[:4] == b"\xff\xff\xff\xff"
    scan = scan_trace(out)
    assert scan.version == 2
    assert sum(b.num_rows for b in scan) == len(src.events) and scan.cut_short is None
    header, trailer = scan.header, scan.trailer
    assert trailer is not None
    for p in header.probes:
        spec = BY_NAME[p.name]
        assert (p.layer, p.direction, p.capture, p.returns, p.length_arg3) == (
            spec.layer, spec.direction, spec.capture, spec.ret, spec.length_arg3)
    here = local_source()
    (source,) = header.sources
    assert (source.hostname, source.boot_id, source.machine_id) == (
        here.hostname, here.boot_id, here.machine_id)
    assert source.clock_offset_ns == header.clock_offset_ns
    (end,) = trailer.clock_offsets_end_ns
    # Wall clock minus monotonic clock drifts (NTP), but not by a second here.
    assert abs(end - source.clock_offset_ns) < 1_000_000_000
