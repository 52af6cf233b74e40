"""SIGTERM stops a live trace cleanly: the file is complete and no kprobe is
left attached. Runs in the validation VM (one BCC compile, ~2 minutes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.vm.requirements import needs_vm
from tracer.tracefile import read_trace

pytestmark = pytest.mark.vm

# The kprobes registered while tracing and after the tracer exited, as the
# kernel lists them; the trace is ended by SIGTERM, not by its duration.
GUEST_SCRIPT = """
rm -f ready  # a rerun after a guest hang starts over
kpath trace --port 10086 --duration 600 --ready-file ready -o sig.kpath 2> trace.err &
pid=$!
i=0
while [ ! -f ready ] && [ $i -lt 900 ]; do sleep 1; i=$((i+1)); done
wc -l < /sys/kernel/debug/kprobes/list > kprobes_during
kpath demo chat > chat.out
kill -TERM $pid
wait $pid
echo $? > trace_rc
wc -l < /sys/kernel/debug/kprobes/list > kprobes_after
"""



@needs_vm()
def test_sigterm_leaves_a_complete_trace_and_no_probes(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "kpath", "vm", "run", "--timeout", "900", "--hang-retries", "1",
         "--share", str(tmp_path), "--", "sh", "-c", GUEST_SCRIPT],
        capture_output=True, text=True, timeout=1200, check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "trace_rc").read_text().strip() == "0", (
        tmp_path / "trace.err").read_text()[-2000:]
    assert int((tmp_path / "kprobes_during").read_text()) > 0
    assert int((tmp_path / "kprobes_after").read_text()) == 0
    trace = read_trace(tmp_path / "sig.kpath")
    assert trace.cut_short is None and trace.trailer is not None
    assert trace.trailer.reason == "signal SIGTERM"
    assert trace.trailer.events == len(trace.events) > 0
    assert {"__tcp_transmit_skb", "tcp_v4_send_synack"} <= {e.probe for e in trace.events}
    assert all(10086 in (e.sport, e.dport) for e in trace.events if e.sport is not None)
