"""The trace session's streaming loop, driven by the replay double instead of
a kernel: every recorded event and loss reaches the new file, the command is
registered and waited for, the header says how the probes were observed."""

from __future__ import annotations

from pathlib import Path

from kpath.console import KeptStatus
from tracer.capture.replay import ReplayBackend
from tracer.filters import make_filters
from tracer.session import TraceRequest, run_trace
from tracer.tracefile import read_trace

from .recordings import DATA, recorded_selection


def _run(recording: str, tmp_path: Path, **kw: object) -> tuple[Path, ReplayBackend,
                                                                 KeptStatus]:
    src = read_trace(DATA / recording)
    profile, specs = recorded_selection(src)
    out = tmp_path / "copy.kpath"
    req = TraceRequest(output=out, filters=make_filters(None, None, None, True),
                       profile=profile, specs=specs, command=["true"], **kw)  # type: ignore[arg-type]
    backend = ReplayBackend(src, per_poll=8)
    status = KeptStatus()
    result = run_trace(req, status, backend=backend)
    assert result.trailer.reason == "command-exited" and result.trailer.command_exit == 0
    return out, backend, status


def test_every_event_and_loss_reaches_the_file(tmp_path: Path) -> None:
    src = read_trace(DATA / "bulk_lossy.kpath")
    assert src.lost_total > 0 and len(src.events) > 8  # several polls of 8
    out, backend, status = _run("bulk_lossy.kpath", tmp_path)
    copy = read_trace(out)
    assert [e.to_record() for e in copy.events] == [e.to_record() for e in src.events]
    assert copy.lost_total == src.lost_total
    assert copy.trailer is not None and copy.trailer.lost_by_probe == src.trailer.lost_by_probe  # type: ignore[union-attr]
    assert backend.closed and len(backend.pids) == 1
    assert any(ln.startswith("warn lost ") for ln in status.lines)


def test_header_records_backend_attachments_and_coverage(tmp_path: Path) -> None:
    out, _, status = _run("hello_hi.kpath", tmp_path)
    hdr = read_trace(out).header
    assert hdr.backend == "replay"
    src = read_trace(DATA / "hello_hi.kpath").header
    attached = {p.name for p in src.probes if p.attached}
    # Every layer the recording's profile asks for is at least partly covered.
    assert set(hdr.coverage) <= {"syscall", "socket", "tcp", "ip", "device", "driver"}
    assert all(hdr.coverage[p.layer] != "none" for p in hdr.probes if p.name in attached)
    assert any(ln.startswith("info attached ") and " s (replay backend" in ln
               for ln in status.lines)


def test_count_cuts_the_batch_that_crosses_it(tmp_path: Path) -> None:
    src = read_trace(DATA / "bulk_lossy.kpath")
    profile, specs = recorded_selection(src)
    out = tmp_path / "cut.kpath"
    # 8 events a batch: 13 ends in the middle of the second one.
    req = TraceRequest(output=out, filters=make_filters(None, None, None, False),
                       profile=profile, specs=specs, count=13)
    result = run_trace(req, KeptStatus(), backend=ReplayBackend(src, per_poll=8))
    assert result.trailer.reason == "count" and result.trailer.events == 13
    copy = read_trace(out)
    assert [e.to_record() for e in copy.events] == [e.to_record() for e in src.events[:13]]
