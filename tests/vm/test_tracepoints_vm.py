"""Tracepoints only, on a real kernel that lacks some of them: Debian's 6.1
has no sock:sk_data_ready (6.3+). With --no-kprobes the CO-RE object must
still load: the program for the absent tracepoint is switched off, and the
probe is reported missing with the reason, while the chat's bytes still
balance. Runs in the validation VM (6.1); no compile, about a minute."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.vm.guest import run_traced_script
from tests.vm.requirements import needs_vm
from tracer.tracefile import read_trace

pytestmark = pytest.mark.vm

GUEST_SCRIPT = """
kpath trace --no-kprobes -o tp.kpath -- kpath demo chat > chat.out 2> trace.err
echo $? > trace_rc
kpath replay --stats tp.kpath > stats.txt
kpath replay --format json tp.kpath > replay.json
"""


@needs_vm()
def test_absent_tracepoint_is_a_missing_probe_not_a_failed_load(tmp_path: Path) -> None:
    run_traced_script(tmp_path, GUEST_SCRIPT)
    trace = read_trace(tmp_path / "tp.kpath")
    h = trace.header
    assert h.kernel_release.startswith("6.1.") and h.backend == "core"
    assert h.attach_kinds == ["tp_btf"]
    by = {p.name: p for p in h.probes}
    ready = by["sock_def_readable"]
    assert not ready.attached and ready.reason == "no-tracepoint"
    assert "sock:sk_data_ready" in (ready.detail or "")
    assert by["__tcp_transmit_skb"].reason == "no-kprobes"
    assert "--no-kprobes" in (by["__tcp_transmit_skb"].detail or "")
    assert by["__dev_queue_xmit"].attach == ["tp_btf:net_dev_queue"]
    stats = (tmp_path / "stats.txt").read_text()
    assert "MISMATCH" not in stats
    rows = [ln.split() for ln in stats.splitlines() if " -> " in ln and ln.endswith("ok")]
    assert sorted(int(r[3]) for r in rows) == [6, 30], stats
    doc = json.loads((tmp_path / "replay.json").read_text())
    assert {"syscall", "device", "tcp"} <= {e["layer"] for e in doc["events"]}
