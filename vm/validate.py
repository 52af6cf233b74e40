"""`kpath vm validate`: trace every scenario inside the VM, check the traces.

One boot runs all scenarios (each its own `kpath trace`, so each trace has
its own header and probe set); the checks run on the host afterwards.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tracer.tracefile import TraceFormatError, read_trace
from vm.errors import VmError
from vm.progress import Progress
from vm.runner import RunOptions, run_in_vm
from vm.scenarios import CheckResult, Scenario

# A BCC compile per scenario (about a minute each under TCG), boot, workloads.
DEFAULT_TIMEOUT = 1800.0


@dataclass
class ScenarioOutcome:
    scenario: Scenario
    trace_path: Path
    results: list[CheckResult]
    error: str | None = None  # the trace could not be read

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.ok for r in self.results)


def guest_command(scenarios: Sequence[Scenario], out: Path) -> tuple[str, ...]:
    """One shell line for the guest; every word quoted, nothing interpreted here."""
    q = shlex.quote
    steps = [f"mkdir -p {q(str(out))}"]
    for s in scenarios:
        steps.extend(s.prepare)
        trace = ["kpath", "trace", "--probes", s.probes, *s.trace_args,
                 "-o", str(out / s.trace_file), "--", "kpath", "demo", *s.workload]
        steps.append(f"echo {q('== scenario ' + s.name + ': ' + s.title)}")
        steps.append(f"{shlex.join(trace)} || echo {q('scenario ' + s.name + ' failed')}: $?")
    return ("sh", "-c", "; ".join(steps))


def check_traces(scenarios: Sequence[Scenario], out: Path) -> list[ScenarioOutcome]:
    outcomes: list[ScenarioOutcome] = []
    for s in scenarios:
        path = out / s.trace_file
        try:
            trace = read_trace(path)
        except TraceFormatError as exc:
            outcomes.append(ScenarioOutcome(s, path, [], error=str(exc)))
            continue
        outcomes.append(ScenarioOutcome(s, path, s.run_checks(trace)))
    return outcomes


def validate(
    scenarios: Sequence[Scenario],
    out: Path,
    share: Path,
    run: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    cache: Path | None = None,
    progress: Progress | None = None,
) -> list[ScenarioOutcome]:
    """Trace the scenarios in the VM (unless run is False), then check them."""
    share = share.resolve()
    out_abs = (share / out).resolve() if not out.is_absolute() else out.resolve()
    if run:
        try:
            rel = out_abs.relative_to(share)
        except ValueError:
            raise VmError(f"--out {out} must be inside the shared directory {share}") from None
        code = run_in_vm(
            RunOptions(command=guest_command(scenarios, rel), share=share, timeout=timeout,
                       cache=cache),
            progress,
        )
        if code != 0:
            raise VmError(f"the validation run in the VM failed (exit {code})")
    return check_traces(scenarios, out_abs)
