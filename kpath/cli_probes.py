"""CLI: the probe catalog (`probes`), checked against this kernel's symbols."""

from __future__ import annotations

import sys

import click

from probes.catalog import CATALOG, PROFILES, UnknownProbe, select
from probes.catalog_doc import catalog_markdown
from probes.resolve import KernelSymbols, resolve


@click.command("probes")
@click.option("--profile", default=None, help="Only this profile's probes.")
@click.option("--check", is_flag=True, help="Resolve against this kernel's /proc/kallsyms.")
@click.option("--markdown", is_flag=True, help="The whole catalog as docs/probes.md.")
def probes_cmd(profile: str | None, check: bool, markdown: bool) -> None:
    """List the probe catalog: function, layer, direction, what it captures.

    \b
    Examples:
      kpath probes
      kpath probes --profile minimal --check
      kpath probes --markdown > docs/probes.md
    """
    if markdown:
        click.echo(catalog_markdown(), nl=False)
        return
    try:
        _, specs = select(profile) if profile else ("all", list(CATALOG))
    except UnknownProbe as exc:
        raise click.UsageError(str(exc)) from None
    states: dict[str, str] = {}
    if check:
        try:
            syms = KernelSymbols.load()
        except (OSError, PermissionError) as exc:
            click.echo(f"kpath: error: cannot read kernel symbols: {exc}", err=True)
            sys.exit(1)
        for res in resolve(specs, syms):
            states[res.spec.name] = (f"ok ({res.symbol})" if res.ok
                                     else f"MISSING: {res.reason}: {res.detail}")
    for spec in specs:
        names = spec.name + (f" (alt: {', '.join(spec.alternates)})" if spec.alternates else "")
        profiles = ",".join(p for p, members in PROFILES.items() if spec.name in members)
        line = (f"{names:45} {spec.layer:8} {spec.direction:3} "
                f"{'+ret' if spec.has_return else '    '} [{profiles}] {spec.captures}")
        if check:
            line += f"\n    {states[spec.name]}"
        click.echo(line)
