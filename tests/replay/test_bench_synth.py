"""bench/synth.py: N synthetic copies of a real recording replay, flow by
flow, exactly like the recording (`kpath replay --stats`): same byte
accounting and check column, same send-range lines and warnings, same
latencies; only the flow's ports, socket addresses and step numbers differ."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench.synth import write_synthetic
from tests.replay.recordings import DATA

ROOT = Path(__file__).resolve().parent.parent.parent
COPIES = 20


def _stats(path: Path) -> str:
    res = subprocess.run([sys.executable, "-m", "kpath", "replay", "--stats", str(path)],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    return res.stdout


def _flow_blocks(stats: str) -> tuple[str, list[str]]:
    """The head line and each flow's block, with what a copy changes blanked:
    the 4-tuple in the flow line, socket addresses, step numbers."""
    head, _, rest = stats.partition("\n")
    blocks = re.split(r"\n(?=flow \d+: )", rest)[1:]
    out = []
    for b in blocks:
        b = re.sub(r"^flow \d+: .*", "flow", b)
        b = re.sub(r"sockets .*", "sockets", b)
        b = re.sub(r" +", " ", re.sub(r"#\d+", "#", b))  # widths follow the numbers
        out.append(b.strip("\n"))
    return head, out


@pytest.mark.parametrize("name", ["hello_hi", "hello_hi_core", "host_chat_tracepoints",
                                  "bulk_1mib", "veth_netns", "hello_hi_full", "mixed",
                                  "mixed_untraced"])
def test_copies_replay_like_the_recording(name: str, tmp_path: Path) -> None:
    source = DATA / f"{name}.kpath"
    out = tmp_path / "synthetic.kpath"
    res = write_synthetic(source, out, COPIES, overlap=4)
    assert res.step_ns < res.span_ns  # copies overlap in time
    orig_head, orig = _flow_blocks(_stats(source))
    head, copies = _flow_blocks(_stats(out))
    n_events = int(re.search(r": (\d+) events", orig_head).group(1))  # type: ignore[union-attr]
    assert f": {n_events * COPIES} events, {len(orig) * COPIES} flow(s), lost 0" in head
    assert "!!" not in head
    assert Counter(copies) == Counter({b: COPIES for b in orig})
    assert not any("MISMATCH" in b for b in copies)


def test_copies_on_other_addresses_replay_alike(tmp_path: Path) -> None:
    """Past the ports one address offers, copies move to the next address
    (127.0.0.2, ...): as consistent."""
    source = DATA / "hello_hi.kpath"
    out = tmp_path / "synthetic.kpath"
    write_synthetic(source, out, COPIES, overlap=4, ports_per_block=6)
    _, orig = _flow_blocks(_stats(source))
    head, copies = _flow_blocks(_stats(out))
    assert Counter(copies) == Counter({b: COPIES for b in orig})
    addrs = {json.loads(ln)["event"].get("saddr") for ln in out.read_text().splitlines()
             if ln.startswith('{"event"')}
    assert {"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"} <= addrs


def test_lost_records_move_with_their_copy(tmp_path: Path) -> None:
    """A lossy recording copied one after another (overlap 1): each copy owns
    its own losses, as the recording does."""
    source = DATA / "bulk_lossy.kpath"
    out = tmp_path / "synthetic.kpath"
    write_synthetic(source, out, 5, overlap=1)
    orig_head, orig = _flow_blocks(_stats(source))
    head, copies = _flow_blocks(_stats(out))
    assert Counter(copies) == Counter({b: 5 for b in orig})
    lost = int(re.search(r"lost (\d+)", orig_head).group(1))  # type: ignore[union-attr]
    assert f"lost {lost * 5}" in head


def test_output_is_in_time_order_and_copies_are_distinct(tmp_path: Path) -> None:
    out = tmp_path / "synthetic.kpath"
    write_synthetic(DATA / "hello_hi.kpath", out, COPIES, overlap=8)
    lines = out.read_text().splitlines()
    recs = [json.loads(ln) for ln in lines]
    assert "header" in recs[0] and "trailer" in recs[-1]
    assert recs[0]["header"]["command"][0] == "synthetic"
    events = [r["event"] for r in recs if "event" in r]
    assert recs[-1]["trailer"]["events"] == len(events)
    stamps = [e["ts_ns"] for e in events]
    assert stamps == sorted(stamps)
    by_copy_tgid = {e["tgid"] for e in events}
    source_tgids = {json.loads(ln)["event"]["tgid"]
                    for ln in (DATA / "hello_hi.kpath").read_text().splitlines()
                    if ln.startswith('{"event"')}
    assert len(by_copy_tgid) == len(source_tgids) * COPIES
    sockets = {e["sk"] for e in events if "sk" in e}
    source_sockets = {json.loads(ln)["event"].get("sk")
                      for ln in (DATA / "hello_hi.kpath").read_text().splitlines()
                      if ln.startswith('{"event"')} - {None}
    assert len(sockets) == len(source_sockets) * COPIES
    # copies interleave: some event of copy 2 comes before the last of copy 1
    firsts = [i for i, e in enumerate(events) if e["probe"] == "__tcp_transmit_skb"
              and e.get("tcp_flags") == 2]
    assert firsts[1] < max(i for i, e in enumerate(events) if e["tgid"] == events[0]["tgid"])
