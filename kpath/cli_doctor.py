"""CLI: `kpath doctor`, what live tracing can do on this machine and why not."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from kpath.console import KeptStatus
from probes.catalog import LAYER_ORDER, PROFILES, UnknownProbe, select
from tracer.capture.base import BACKENDS, Check, choose_backend, coverage, first_failure
from tracer.capture.errors import CaptureError
from tracer.events import ProbeStatus
from tracer.filters import Filters


def _print_checks(title: str, checks: Sequence[Check]) -> None:
    usable = first_failure(checks) is None
    click.echo(f"{title}: {'usable' if usable else 'NOT usable'}")
    for c in checks:
        tag = "ok  " if c.ok else ("FAIL" if c.required else "note")
        click.echo(f"  {tag} {c.name}" + ("" if c.ok else f": {c.detail}"))


def _print_probes(statuses: Sequence[ProbeStatus]) -> None:
    kinds: dict[str, int] = {}
    for st in statuses:
        for a in st.attach:
            kind = a.split(":", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + 1
    click.echo("attach kinds that work here: "
               + (", ".join(f"{k} ({n})" for k, n in sorted(kinds.items())) or "none"))
    cov = coverage(statuses)
    click.echo("layers:")
    for layer in LAYER_ORDER:
        here = [s for s in statuses if s.layer == str(layer)]
        if not here:
            continue
        on = [s.name for s in here if s.attached]
        verdict = {"full": "observable", "partial": "partly observable",
                   "none": "NOT observable"}[cov[str(layer)]]
        click.echo(f"  {layer:8} {verdict:18} {len(on)} of {len(here)} probes"
                   + (f": {', '.join(on)}" if on else ""))
    missing = [s for s in statuses if not s.attached]
    if missing:
        click.echo("missing probes:")
        for st in missing:
            click.echo(f"  {st.name}: {st.reason}: {st.detail}")


@click.command("doctor")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="Which backend `kpath trace` would use.")
@click.option("--probes", "probes_sel", default="default", show_default=True,
              help=f"Profile ({'|'.join(PROFILES)}) or comma-separated catalog names to try.")
def doctor_cmd(backend: str, probes_sel: str) -> None:
    """Check what live tracing can do on this machine, and say why not.

    Lists each backend's prerequisites. With the CO-RE backend it also loads
    the object and attaches the profile's probes (then detaches them): the
    attach kinds that work, and which layers are observable, are measured,
    not guessed. Exits 0 when `kpath trace --backend BACKEND` can run.

    \b
    Examples:
      kpath doctor
      kpath doctor --probes full
      kpath doctor --backend bcc
    """
    try:
        _, specs = select(probes_sel)
    except UnknownProbe as exc:
        raise click.UsageError(str(exc)) from None
    from tracer.capture import bcc, core

    core_checks = core.prerequisites()
    bcc_checks = bcc.prerequisites()
    _print_checks("backend core (precompiled CO-RE object, libbpf)", core_checks)
    _print_checks("backend bcc (compiled at run time)", bcc_checks)
    chosen = choose_backend(backend)
    checks = core_checks if chosen == "core" else bcc_checks
    failed = first_failure(checks)
    click.echo(f"kpath trace --backend {backend} uses: {chosen}")
    if failed is not None:
        click.echo(f"cannot trace: {failed.name}: {failed.detail}")
        sys.exit(1)
    kept = KeptStatus()  # what `kpath trace` would warn about at start
    if chosen == "core":
        be = core.CoreBackend()
        try:
            statuses = be.start(specs, Filters(), kept)
        except CaptureError as exc:
            click.echo(f"FAIL loading the CO-RE object: {exc}")
            if exc.log:
                click.echo(exc.log)
            sys.exit(1)
        finally:
            be.close()
    else:
        statuses = bcc.resolve_statuses(specs)
    _print_probes(statuses)
    for line in kept.lines:
        if line.startswith("warn "):
            click.echo(f"note: {line.removeprefix('warn ')}")
    if not any(s.attached for s in statuses):
        sys.exit(1)
