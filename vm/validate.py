"""`kpath vm validate`: trace every scenario inside the VM, check the traces.

One boot of one kernel's image runs all scenarios with one backend (each its
own `kpath trace --backend B`, so each trace has its own header and probe
set); the checks run on the host afterwards.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tracer.tracefile import TraceFormatError, read_trace
from vm.errors import VmError
from vm.progress import Progress
from vm.recipe import DEFAULT_KERNEL, kernel_spec
from vm.runner import RunOptions, run_in_vm, shared_out
from vm.scenarios import CheckResult, Scenario

# A BCC compile per scenario (about a minute each under TCG), boot, workloads.
DEFAULT_TIMEOUT = 1800.0
# `kpath trace --backend`: auto picks CO-RE where the kernel has BTF, else BCC.
BACKENDS: tuple[str, ...] = ("auto", "core", "bcc")
DEFAULT_BACKEND = "auto"


@dataclass
class ScenarioOutcome:
    scenario: Scenario
    trace_path: Path
    results: list[CheckResult]
    error: str | None = None  # the trace could not be read

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.ok for r in self.results)


def trace_argv(scenario: Scenario, out: Path, backend: str = DEFAULT_BACKEND) -> list[str]:
    """The guest's `kpath trace` for one scenario, its trace written under out."""
    if backend not in BACKENDS:
        raise VmError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    report = ("--report", str(out / scenario.report)) if scenario.report else ()
    return ["kpath", "trace", "--backend", backend, "--probes", scenario.probes,
            *scenario.trace_args, "-o", str(out / scenario.trace_file),
            "--", "kpath", "demo", *scenario.workload, *report]


def guest_command(
    scenarios: Sequence[Scenario], out: Path, backend: str = DEFAULT_BACKEND
) -> tuple[str, ...]:
    """One shell line for the guest; every word quoted, nothing interpreted here."""
    q = shlex.quote
    steps = [f"mkdir -p {q(str(out))}"]
    for s in scenarios:
        steps.extend(s.prepare)
        trace = trace_argv(s, out, backend)
        steps.append(f"echo {q('== scenario ' + s.name + ': ' + s.title)}")
        # An older run's trace (another backend, say) must not pass for this one.
        steps.append(f"rm -f {q(str(out / s.trace_file))}")
        steps.append(f"{shlex.join(trace)} || echo {q('scenario ' + s.name + ' failed')}: $?")
    return ("sh", "-c", "; ".join(steps))


def check_traces(
    scenarios: Sequence[Scenario], out: Path, kernel: str | None = None,
    backend: str | None = None,
) -> list[ScenarioOutcome]:
    """Check each scenario's trace; with `kernel`, also that the trace was
    taken on that kernel (a stale or wrong image must not pass as it), and
    with a `backend` other than auto, by that backend."""
    spec = kernel_spec(kernel) if kernel is not None else None
    outcomes: list[ScenarioOutcome] = []
    for s in scenarios:
        path = out / s.trace_file
        try:
            trace = read_trace(path)
        except TraceFormatError as exc:
            outcomes.append(ScenarioOutcome(s, path, [], error=str(exc)))
            continue
        results: list[CheckResult] = []
        if spec is not None:
            release = trace.header.kernel_release
            results.append(CheckResult(f"traced on kernel {spec.name}", spec.matches(release),
                                       f"the trace says {release}"))
        if backend is not None and backend != "auto":
            used = trace.header.backend
            results.append(CheckResult(f"traced by the {backend} backend", used == backend,
                                       f"the trace says {used}"))
        outcomes.append(ScenarioOutcome(s, path, results + s.run_checks(trace)))
    return outcomes


def validate(
    scenarios: Sequence[Scenario],
    out: Path,
    share: Path,
    run: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    cache: Path | None = None,
    progress: Progress | None = None,
    kernel: str = DEFAULT_KERNEL,
    backend: str = DEFAULT_BACKEND,
) -> list[ScenarioOutcome]:
    """Trace the scenarios in kernel's VM with backend (unless run is False),
    then check them."""
    share = share.resolve()
    out_abs = (share / out).resolve() if not out.is_absolute() else out.resolve()
    if run:
        out_abs, rel = shared_out(out, share)
        command = guest_command(scenarios, rel, backend)
        code = run_in_vm(
            # Each scenario removes its old trace first: the run can start over.
            RunOptions(command=command, share=share, timeout=timeout, cache=cache,
                       kernel=kernel, hang_retries=1),
            progress,
        )
        if code != 0:
            raise VmError(f"the validation run in the VM failed (exit {code})")
    # Only a run of ours says which kernel and backend the traces must come from.
    if not run:
        return check_traces(scenarios, out_abs)
    return check_traces(scenarios, out_abs, kernel, backend)
