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
from tracer.capture.errors import CaptureError


@click.command("probes")
@click.option("--profile", default=None, help="Only this profile's probes.")
@click.option("--check", is_flag=True,
              help="How this kernel lets `kpath trace` observe each probe: a kprobe on which "
              "symbol (/proc/kallsyms), a tracepoint, or why neither.")
@click.option("--vmlinux", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Read this debug vmlinux's DWARF: for each probe, out-of-line (with its "
              "file:line), inlined (at how many call sites), only a compiler copy, or absent. "
              "Cached by build-id under ${KPATH_CACHE:-~/.cache/kpath}/debuginfo.")
@click.option("--markdown", is_flag=True, help="The whole catalog as docs/probes.md.")
def probes_cmd(profile: str | None, check: bool, vmlinux: Path | None, markdown: bool) -> None:
    """List the probe catalog: function, layer, direction, what it captures.

    --check says how `kpath trace` would observe each probe on this kernel:
    a kprobe on its symbol, its tracepoint (kernels without kprobes), or why
    neither. --vmlinux FILE reads the DWARF of a debug
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
            states = _observed(specs)
        except (OSError, PermissionError, CaptureError) as exc:
            click.echo(f"kpath: error: cannot check this kernel: {exc}", err=True)
            sys.exit(1)
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


def _observed(specs: list[ProbeSpec]) -> dict[str, str]:
    """How `kpath trace` (CO-RE backend) would observe each probe on this
    kernel: fentry or kprobe on which symbol, which tracepoint, or why neither."""
    from tracer.capture.base import BTF_VMLINUX, KPROBE_PMU
    from tracer.capture.plan import KernelCaps, plan

    if BTF_VMLINUX.exists():
        from tracer.capture.core import kernel_caps, resolve_functions

        caps = kernel_caps()
        resolved = resolve_functions(specs, caps)
    else:
        caps = KernelCaps(kprobes=KPROBE_PMU.exists())
        resolved = resolve(specs, KernelSymbols.load()) if caps.kprobes else None
    out = {}
    for p in plan(specs, resolved, caps):
        out[p.spec.name] = (", ".join(p.attachments) if p.way
                            else f"MISSING: {p.reason}: {p.detail}")
    return out


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
