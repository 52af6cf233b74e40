"""`kpath export -f pcapng` on the recordings, read back by Wireshark's
tshark: it reads the file, dissects TCP in every frame, each frame carries
kpath's comments, and what tshark reads in the captured bytes (addresses,
ports, sequence number, payload length, flags, frame length) is what
kpath's own probes read from the same packet's headers in the kernel."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from kpath import __version__
from kpath.cli_view import export_cmd
from tests.replay.recordings import DATA, RECORDINGS, needs_recordings
from tests.tools import require
from tracer.timeline import build_timeline, use_recorded_probes
from tracer.tracefile import probe_specs, read_trace
from tracer.tracefile.convert import convert
from viz.pcapng import render_pcapng

pytestmark = needs_recordings

# The recordings made since kpath captures frames (tests/data/README.md).


def _has_frames(path: Path) -> bool:
    frames = read_trace(path).frames
    return frames is not None and frames.num_rows > 0


WITH_FRAMES = sorted(p.stem for p in RECORDINGS if _has_frames(p))
FIELDS = ("frame.number", "ip.src", "tcp.srcport", "ip.dst", "tcp.dstport", "tcp.seq_raw",
          "tcp.len", "tcp.flags", "frame.len", "frame.comment")


def test_every_recording_has_frames() -> None:
    # All re-recorded since kpath captures frames (tests/data/README.md).
    assert sorted(p.stem for p in RECORDINGS) == WITH_FRAMES


def _tshark(path: Path) -> list[list[str]]:
    tshark = require("tshark", "apt-get install tshark (scripts/setup.sh --tests)")
    args = [tshark, "-r", str(path), "-o", "tcp.relative_sequence_numbers:FALSE",
            "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a"]
    for f in FIELDS:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


@pytest.mark.parametrize("name", WITH_FRAMES)
def test_tshark_reads_every_packet_as_kpath_saw_it(name: str, tmp_path: Path) -> None:
    src = DATA / f"{name}.kpath"
    out = tmp_path / f"{name}.pcapng"
    res = CliRunner().invoke(export_cmd, [str(src), "-f", "pcapng", "-o", str(out)])
    assert res.exit_code == 0, res.output
    trace = read_trace(src)
    use_recorded_probes(probe_specs(trace.header.probes))
    done = render_pcapng(build_timeline(trace), f"kpath {__version__}")
    assert out.read_bytes() == done.data
    rows = _tshark(out)
    assert len(rows) == done.packets > 0
    frames = {int(r["row"]): r for r in trace.frames.to_pylist()}
    for fields, row in zip(rows, done.rows, strict=True):
        got = dict(zip(FIELDS, fields, strict=True))
        ev = trace.events[row]
        assert got["ip.src"] == ev.saddr and got["ip.dst"] == ev.daddr, got
        assert (int(got["tcp.srcport"]), int(got["tcp.dstport"])) == (ev.sport, ev.dport)
        assert int(got["tcp.seq_raw"]) == ev.seq
        assert int(got["tcp.len"]) == ev.length
        assert int(got["tcp.flags"], 16) == ev.tcp_flags
        assert int(got["frame.len"]) == frames[row]["len"]
        # kpath's comments, every one of them: packet, capture point, path.
        comment = got["frame.comment"]
        assert comment.startswith("kpath #"), comment
        assert f"captured at {ev.probe}" in comment and "path: " in comment, comment
    # Addresses as tshark prints them are the events' (IPv4 text).
    assert all(ipaddress.IPv4Address(r[1]) for r in rows)


def test_same_frames_after_conversion_both_ways(tmp_path: Path) -> None:
    """The frames survive version 1 -> 2 -> 1: the same bytes come out."""
    src = DATA / "host_chat_tracepoints.kpath"
    v2, v1 = tmp_path / "t2.kpath", tmp_path / "t1.kpath"
    convert(src, v2)
    convert(v2, v1, to="jsonl")
    assert v1.read_bytes() == src.read_bytes()
    a, b = read_trace(src).frames, read_trace(v2).frames
    assert a is not None and b is not None and a.num_rows > 0
    assert a.equals(b)


def test_trace_without_frames_is_refused_in_one_line(tmp_path: Path) -> None:
    """A trace recorded before kpath captured frames: the chat's lines
    without their `frame` keys."""
    without = tmp_path / "old.kpath"
    lines = []
    for line in (DATA / "hello_hi.kpath").read_text().splitlines():
        rec = json.loads(line)
        if "event" in rec:
            rec["event"].pop("frame", None)
        lines.append(json.dumps(rec, separators=(",", ":")))
    without.write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(export_cmd, [str(without), "-f", "pcapng",
                                          "-o", str(tmp_path / "x.pcapng")])
    assert res.exit_code == 1
    assert "no captured frames to export" in res.output
    assert not (tmp_path / "x.pcapng").exists()
