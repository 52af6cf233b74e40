"""CLI: `kpath vm validate` (wiring only; scenarios live in vm/scenarios.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from kpath.cli_types import Seconds
from kpath.cli_vm import kernel_option
from vm.errors import VmError
from vm.progress import Progress
from vm.scenarios import BY_SCENARIO, SCENARIOS, CheckResult
from vm.two_hosts_check import NAME as TWO_HOSTS
from vm.two_hosts_check import TITLE as TWO_HOSTS_TITLE
from vm.validate import BACKENDS, DEFAULT_BACKEND, DEFAULT_TIMEOUT, validate


@click.command("validate")
@kernel_option()
@click.option("--backend", type=click.Choice(BACKENDS), default=DEFAULT_BACKEND,
              show_default=True,
              help="Passed to every `kpath trace --backend` in the guest: core (CO-RE "
                   "object through libbpf), bcc (compiled against the headers), or auto.")
@click.option("-s", "--scenario", "names", multiple=True,
              type=click.Choice([*(s.name for s in SCENARIOS), TWO_HOSTS]),
              help="Run only this scenario (repeatable). Default: all but two-hosts "
                   "(two VMs: run it by name).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("kpath-validate"), show_default=True,
              help="Where the traces go (inside the current directory, which is shared).")
@click.option("--no-run", is_flag=True, help="Only check traces already in --out.")
@click.option("--timeout", type=Seconds(at_least=1.0), default=DEFAULT_TIMEOUT,
              show_default=True, help="Seconds before the VM is killed.")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="VM cache directory.")
def validate_cmd(kernel: str, backend: str, names: tuple[str, ...], out: Path, no_run: bool,
                 timeout: float, cache: Path | None) -> None:
    """Trace the validation scenarios inside the VM and check what the kernel did.

    One boot of the --kernel image runs every scenario with `kpath trace
    --backend BACKEND`; each trace must also say it was taken on that kernel
    and (unless auto) by that backend.

    \b
    Scenarios:
      chat   the seeds' hello/hi chat: handshake paths, send chain, ACK, recv chain
      bulk   1 MiB transfer: bytes written = carried by data segments = read
      veth   two network namespaces joined by veth: one packet across both
      lossy  a 4 KiB ring buffer: lost events are counted, stored and marked
      mixed  send, sendfile, write, sendmsg, writev, splice, sendmmsg, io_uring send
             read back by recv, read, recvmsg, readv, recvmmsg, io_uring recv, splice:
             each send's range where the kernel put it, accounting closes exactly
      untraced  the same with sendfile and splice untraced: their bytes told apart
      two-hosts two guests linked by a virtual NIC: chat and 1 MiB between them, each
             end traced on its own host, `kpath merge`d: every segment matched once,
             accounting closed across the hosts, the clock offset within its bounds
    Exit status 0 only if every check passes.

    \b
    Examples:
      sudo kpath vm validate
      sudo kpath vm validate --kernel 6.12 --backend core
      sudo kpath vm validate --backend bcc -s veth --out /tmp/v
      sudo kpath vm validate --out tests/data      # re-record the test fixtures
      kpath vm validate --no-run --out tests/data  # re-check recordings
    """
    scenarios = [BY_SCENARIO[n] for n in names if n != TWO_HOSTS] if names else list(SCENARIOS)
    two: list[CheckResult] | None = None
    try:
        outcomes = validate(scenarios, out, Path.cwd(), run=not no_run, timeout=timeout,
                            cache=cache, progress=Progress(), kernel=kernel,
                            backend=backend) if scenarios else []
        if TWO_HOSTS in names:
            from vm.two_hosts_check import validate_two_hosts

            two = validate_two_hosts(out, Path.cwd(), backend, timeout, cache, kernel,
                                     Progress(), run=not no_run)
    except VmError as exc:
        click.echo(f"kpath: error: {exc}", err=True)
        sys.exit(1)
    failed = 0
    if two is not None:
        click.echo(f"scenario {TWO_HOSTS}: {TWO_HOSTS_TITLE} ({out})")
        _echo_results(two)
        failed += 0 if two and all(r.ok for r in two) else 1
    for o in outcomes:
        click.echo(f"scenario {o.scenario.name}: {o.scenario.title} ({o.trace_path})")
        if o.error:
            click.echo(f"  FAIL  trace unreadable: {o.error}")
        _echo_results(o.results)
        failed += 0 if o.ok else 1
    total = len(outcomes) + (two is not None)
    click.echo(f"{total - failed} of {total} scenarios passed")
    if failed:
        sys.exit(1)


def _echo_results(results: list[CheckResult]) -> None:
    for r in results:
        mark = "ok  " if r.ok else "FAIL"
        click.echo(f"  {mark}  {r.name}" + (f": {r.detail}" if r.detail and not r.ok else ""))
