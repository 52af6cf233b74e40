"""The guest command `kpath vm validate` builds: every scenario traced with its
own options, words quoted, a failing scenario not stopping the others."""

from __future__ import annotations

import shlex
from pathlib import Path

from vm.scenarios import BY_SCENARIO, SCENARIOS
from vm.validate import check_traces, guest_command


def test_guest_command_traces_each_scenario() -> None:
    argv = guest_command(SCENARIOS, Path("out dir"))
    assert argv[:2] == ("sh", "-c")
    script = argv[2]
    assert script.startswith("mkdir -p 'out dir'")
    for s in SCENARIOS:
        report = ("--report", f"out dir/{s.report}") if s.report else ()
        trace = shlex.join(["kpath", "trace", "--backend", "auto", "--probes", s.probes,
                            *s.trace_args, "-o",
                            f"out dir/{s.trace_file}", "--", "kpath", "demo", *s.workload,
                            *report])
        assert trace + " || echo" in script
    assert "--report 'out dir/mixed_calls.json'" in script
    assert "modprobe veth" in script
    assert "--buffer-pages 1" in script
    assert "set -e" not in script  # one failing scenario must not hide the others


def test_missing_trace_is_a_failed_scenario(tmp_path: Path) -> None:
    (outcome,) = check_traces([BY_SCENARIO["chat"]], tmp_path)
    assert not outcome.ok and outcome.error is not None and "no such file" in outcome.error
