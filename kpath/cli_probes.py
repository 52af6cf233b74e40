"""CLI: the probe catalog (`probes`), checked against this kernel's symbols
(--check) and against a debug vmlinux's DWARF (--vmlinux)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import click

from probes.catalog import CATALOG, PROFILES, ProbeSpec, UnknownProbe, select
from probes.catalog_doc import catalog_markdown
from probes.debuginfo import (
    DebugInfoError,
    SourceInfo,
    State,
    VmlinuxCheck,
    check_vmlinux,
    running_build_id,
)
from probes.resolve import KernelSymbols, resolve


@click.command("probes")
@click.option("--profile", default=None, help="Only this profile's probes.")
@click.option("--check", is_flag=True, help="Resolve against this kernel's /proc/kallsyms.")
@click.option("--vmlinux", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Read this debug vmlinux's DWARF: for each probe, out-of-line (with its "
              "file:line), inlined (at how many call sites), only a compiler copy, or absent. "
              "Cached by build-id under ${KPATH_CACHE:-~/.cache/kpath}/debuginfo.")
@click.option("--markdown", is_flag=True, help="The whole catalog as docs/probes.md.")
def probes_cmd(profile: str | None, check: bool, vmlinux: Path | None, markdown: bool) -> None:
    """List the probe catalog: function, layer, direction, what it captures.

    --check resolves each probe against the running kernel's symbols (what
    `kpath trace` would attach). --vmlinux FILE reads the DWARF of a debug
    vmlinux (Debian: /usr/lib/debug/boot/vmlinux-RELEASE from the
    linux-image-RELEASE-dbg package; scripts/fetch-debug-vmlinux.sh fetches
    it into the cache and prints its path) and tells where each function is
    defined and whether a probe on it can see every call. Both can be given.

    \b
    Examples:
      kpath probes
      kpath probes --profile minimal --check
      kpath probes --vmlinux /usr/lib/debug/boot/vmlinux-6.1.0-57-amd64
      sudo kpath probes --check --vmlinux "$(scripts/fetch-debug-vmlinux.sh)"
      kpath probes --markdown > docs/probes.md
    """
    if markdown:
        if check or vmlinux is not None:
            raise click.UsageError("--markdown prints the catalog only: no --check, --vmlinux")
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
    dwarf: VmlinuxCheck | None = None
    if vmlinux is not None:
        try:
            dwarf = check_vmlinux(specs, vmlinux)
        except DebugInfoError as exc:
            click.echo(f"kpath: error: {exc}", err=True)
            sys.exit(1)
        click.echo(_dwarf_header(dwarf))
        if check:
            _warn_other_kernel(dwarf)
    for spec in specs:
        click.echo(_spec_line(spec))
        if check:
            click.echo(f"    {states[spec.name]}")
        if dwarf is not None:
            click.echo(f"    dwarf: {dwarf_text(dwarf.sources[spec.name])}")
    if dwarf is not None:
        click.echo(_dwarf_summary(dwarf))


def _spec_line(spec: ProbeSpec) -> str:
    names = spec.name + (f" (alt: {', '.join(spec.alternates)})" if spec.alternates else "")
    profiles = ",".join(p for p, members in PROFILES.items() if spec.name in members)
    return (f"{names:45} {spec.layer:8} {spec.direction:3} "
            f"{'+ret' if spec.has_return else '    '} [{profiles}] {spec.captures}")


def dwarf_text(info: SourceInfo) -> str:
    """'out-of-line net/ipv4/tcp.c:706: tcp_push at 0xffffffff8188a560'."""
    where = f" {info.source}" if info.source else ""
    about = f" [{info.function}]" if info.function != info.name else ""
    return f"{info.state}{where}{about}: {info.detail}"


def _dwarf_header(check: VmlinuxCheck) -> str:
    f = check.facts
    producer = (f.producer or "unknown compiler").split(" -")[0]
    how = (f"from the cache {f.cache_file}" if f.cached
           else f"extracted in {f.seconds:.1f} s"
           + (f", cached in {f.cache_file}" if f.cache_file else ", not cached (no build-id)"))
    return f"debug info: {f.path}, build-id {f.build_id or 'none'}, {producer} ({how})"


def _dwarf_summary(check: VmlinuxCheck) -> str:
    count = Counter(s.state for s in check.sources.values())
    also = sum(1 for s in check.sources.values()
               if s.state is State.OUT_OF_LINE and s.inlined_sites)
    parts = [f"{count[State.OUT_OF_LINE]} out-of-line ({also} of them also inlined "
             "somewhere a probe does not see)",
             f"{count[State.INLINED]} inlined only", f"{count[State.COPY]} only as a copy",
             f"{count[State.ABSENT]} absent"]
    return f"dwarf: {len(check.sources)} probes: " + ", ".join(parts)


def _warn_other_kernel(check: VmlinuxCheck) -> None:
    running = running_build_id()
    if running is not None and check.facts.build_id and running != check.facts.build_id:
        click.echo(f"kpath: note: {check.facts.path} is not the running kernel (build-id "
                   f"{check.facts.build_id}, running {running}): the dwarf lines describe "
                   "that build, the kallsyms lines this one", err=True)
