"""Resolve catalog probes against the running kernel's symbols.

A probe is attachable when one of its names is a text symbol in kallsyms
and not on the kprobe blacklist. Otherwise it is reported, with a reason:
  renamed      only compiler copies exist (foo.isra.0, foo.constprop.0): their
               arguments may be rearranged, so reading them would be wrong
  inlined      no symbol, and the function is static/inline in the source
  absent       no symbol by any of its names on this kernel
  blacklisted  the symbol is on /sys/kernel/debug/kprobes/blacklist
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from probes.catalog import ProbeSpec

KALLSYMS = Path("/proc/kallsyms")
BLACKLIST = Path("/sys/kernel/debug/kprobes/blacklist")

# gcc/clang clones: foo.isra.0, foo.constprop.3, foo.part.0, foo.cold, foo.llvm.123
# Data symbols; x86_64's per-CPU variables are absolute ("A": their offset
# in the per-CPU area, CONFIG_KALLSYMS_ABSOLUTE_PERCPU).
_DATA_TYPES = ("d", "D", "b", "B", "A")
_CLONE = re.compile(r"^(?P<base>[^.]+)\.(?:isra|constprop|part|cold|llvm|lto_priv)(?:\.\d+)*")


@dataclass(frozen=True, slots=True)
class Resolved:
    spec: ProbeSpec
    symbol: str | None  # None when missing
    address: int = 0
    reason: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.symbol is not None


@dataclass
class KernelSymbols:
    """Text symbols of the running kernel: name -> address, and clone names;
    its data symbols (none without CONFIG_KALLSYMS_ALL)."""

    text: dict[str, int]
    clones: dict[str, list[str]]  # base name -> clone symbol names
    blacklist: set[str]
    modules: dict[tuple[str, str], int] = field(default_factory=dict)  # (module, name) -> addr
    data: dict[str, int] = field(default_factory=dict)  # name -> address

    @classmethod
    def parse(cls, kallsyms: Iterable[str], blacklist: Iterable[str] = ()) -> KernelSymbols:
        text: dict[str, int] = {}
        clones: dict[str, list[str]] = {}
        modules: dict[tuple[str, str], int] = {}
        data: dict[str, int] = {}
        for line in kallsyms:
            parts = line.split()
            if len(parts) == 3 and parts[1] in _DATA_TYPES:
                data.setdefault(parts[2], int(parts[0], 16))
            if len(parts) < 3 or parts[1] not in ("t", "T"):
                continue
            addr_s, _, name = parts[:3]
            if len(parts) > 3:  # module symbol: "name [module]"
                modules.setdefault((parts[3].strip("[]"), name), int(addr_s, 16))
                continue
            m = _CLONE.match(name)
            if m:
                clones.setdefault(m.group("base"), []).append(name)
                continue
            text.setdefault(name, int(addr_s, 16))
        bl: set[str] = set()
        for line in blacklist:
            # Format: "0xstart-0xend\tsymbol"
            parts = line.split()
            if len(parts) >= 2:
                bl.add(parts[1])
        return cls(text, clones, bl, modules, data)

    @classmethod
    def load(cls, kallsyms: Path = KALLSYMS, blacklist: Path = BLACKLIST) -> KernelSymbols:
        with open(kallsyms, encoding="utf-8", errors="replace") as fh:
            bl_lines: list[str] = []
            # Without debugfs there is no blacklist to honour.
            with contextlib.suppress(OSError):
                bl_lines = blacklist.read_text(encoding="utf-8", errors="replace").splitlines()
            syms = cls.parse(fh, bl_lines)
        if syms.text and all(addr == 0 for addr in list(syms.text.values())[:100]):
            raise PermissionError(
                f"{kallsyms} shows zero addresses: run as root (kptr_restrict hides them)"
            )
        return syms


def resolve(specs: Sequence[ProbeSpec], syms: KernelSymbols) -> list[Resolved]:
    out: list[Resolved] = []
    for spec in specs:
        out.append(_resolve_one(spec, syms))
    return out


def _resolve_one(spec: ProbeSpec, syms: KernelSymbols) -> Resolved:
    if spec.module is not None:
        return _resolve_module(spec, spec.module, syms)
    for name in spec.names:
        if name in syms.text:
            if name in syms.blacklist:
                return Resolved(spec, None, reason="blacklisted",
                                detail=f"{name} is on the kprobe blacklist")
            return Resolved(spec, name, syms.text[name])
    clone_names = [c for name in spec.names for c in syms.clones.get(name, [])]
    if clone_names:
        return Resolved(
            spec, None, reason="renamed",
            detail=f"only compiler copies exist ({', '.join(sorted(clone_names))}); "
            "their arguments may differ from the source",
        )
    tried = " / ".join(spec.names)
    if spec.may_inline:
        return Resolved(spec, None, reason="inlined",
                        detail=f"no symbol {tried}: inlined into its callers on this build")
    note = f" ({spec.absent_note})" if spec.absent_note else ""
    return Resolved(spec, None, reason="absent",
                    detail=f"no symbol {tried} on this kernel{note}")


def _resolve_module(spec: ProbeSpec, module: str, syms: KernelSymbols) -> Resolved:
    for name in spec.names:
        addr = syms.modules.get((module, name))
        if addr is not None:
            return Resolved(spec, name, addr)
    if not any(mod == module for mod, _ in syms.modules):
        return Resolved(spec, None, reason="absent",
                        detail=f"module {module} is not loaded (no such device in use)")
    return Resolved(spec, None, reason="absent",
                    detail=f"module {module} has no symbol {' / '.join(spec.names)}")
