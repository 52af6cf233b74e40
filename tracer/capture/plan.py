"""Which way each requested probe is observed on this kernel: fentry/fexit
or a kprobe on its resolved symbol, a tp_btf tracepoint, or neither (with
the reason).
Pure: the kernel's capabilities come in as data, so every rule is tested
without a kernel."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from probes.catalog import ProbeSpec
from probes.resolve import Resolved

# enum tp_hook in kpath.bpf.c, in order: hook -> (programs that serve it,
# kernel tracepoints those programs attach to). Its index is the hook's slot
# in the object's tp_probe[] read-only array.
TP_HOOKS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("sys_sendto", ("tp_sys_enter", "tp_sys_exit"), ("sys_enter", "sys_exit")),
    ("sys_recvfrom", ("tp_sys_enter", "tp_sys_exit"), ("sys_enter", "sys_exit")),
    ("sys_sendmsg", ("tp_sys_enter", "tp_sys_exit"), ("sys_enter", "sys_exit")),
    ("sys_recvmsg", ("tp_sys_enter", "tp_sys_exit"), ("sys_enter", "sys_exit")),
    ("sys_write", ("tp_sys_enter", "tp_sys_exit"), ("sys_enter", "sys_exit")),
    ("sys_read", ("tp_sys_enter", "tp_sys_exit"), ("sys_enter", "sys_exit")),
    ("sys_sendmmsg", ("tp_sys_enter", "tp_sys_exit"), ("sys_enter", "sys_exit")),
    ("sys_recvmmsg", ("tp_sys_enter", "tp_sys_exit"), ("sys_enter", "sys_exit")),
    ("sys_sendfile", ("tp_sys_enter", "tp_sys_exit"), ("sys_enter", "sys_exit")),
    ("sys_splice", ("tp_sys_enter", "tp_sys_exit"), ("sys_enter", "sys_exit")),
    ("net_dev_queue", ("tp_net_dev_queue",), ("net_dev_queue",)),
    ("net_dev_start_xmit", ("tp_net_dev_start_xmit",), ("net_dev_start_xmit",)),
    ("netif_rx", ("tp_netif_rx",), ("netif_rx",)),
    # served by the always-attached softirq_entry program
    ("net_rx_softirq", (), ("softirq_entry",)),
    ("netif_receive_skb", ("tp_netif_receive_skb",), ("netif_receive_skb",)),
    ("tcp_probe", ("tp_tcp_probe",), ("tcp_probe",)),
    ("sk_data_ready", ("tp_sk_data_ready",), ("sk_data_ready",)),
    ("skb_copy_datagram", ("tp_skb_copy_datagram",), ("skb_copy_datagram_iovec",)),
    ("tcp_retransmit_skb", ("tp_tcp_retransmit_skb",), ("tcp_retransmit_skb",)),
)
HOOK_SLOT = {hook: i for i, (hook, _, _) in enumerate(TP_HOOKS)}
HOOK_PROGRAMS = {hook: progs for hook, progs, _ in TP_HOOKS}
HOOK_TRACEPOINTS = {hook: tps for hook, _, tps in TP_HOOKS}
# Always loaded and attached: the execution context and the traced command's
# children. Their tracepoints exist on every kernel kpath supports.
# Exits before entries: an entry attached before its exit could mark a
# context that never ends.
CONTEXT_PROGRAMS = (
    ("tp_softirq_exit", "softirq_exit"), ("tp_irq_exit", "irq_handler_exit"),
    ("tp_softirq_entry", "softirq_entry"), ("tp_irq_entry", "irq_handler_entry"),
    ("tp_fork", "sched_process_fork"),
)
# The entry programs' twins that also watch for blind windows (kpath.bpf.c),
# loaded in their place where kprobe programs are and the kernel lets them
# read its per-CPU state.
WATCH_TWINS = {"tp_softirq_entry": "tp_softirq_entry_watch",
               "tp_irq_entry": "tp_irq_entry_watch"}
NO_PROBE = 0xFFFFFFFF  # KP_NONE: a tp_probe[] slot nobody asked for
# kprobe: kprobes (the default: bench/README.md, fentry was slower under
# TCG); fentry: trampolines only; auto: fentry, a kprobe where it fails.
ATTACH_MODES = ("kprobe", "fentry", "auto")
DEFAULT_ATTACH_MODE = "kprobe"
# x86_64 BPF trampolines take at most six arguments before Linux 6.6.
MAX_TRAMPOLINE_ARGS = 6


def all_tracepoints() -> list[str]:
    """Every kernel tracepoint the object can attach to."""
    names = {tp for _, tp in CONTEXT_PROGRAMS}
    names.update(tp for tps in HOOK_TRACEPOINTS.values() for tp in tps)
    return sorted(names)


@dataclass(frozen=True)
class Planned:
    """One requested probe and how it will be observed (way None: missing)."""

    index: int  # position in the session's probe table: the event's ip/cookie
    spec: ProbeSpec
    way: str | None  # "fentry" | "kprobe" | "tp_btf" | None
    symbol: str | None = None  # fentry or kprobe target
    hook: str | None = None  # tp_btf hook
    reason: str | None = None
    detail: str | None = None

    @property
    def attachments(self) -> list[str]:
        """What will be attached, as the trace header records it."""
        if self.way in ("kprobe", "fentry") and self.symbol:
            return function_attachments(self.way, self.symbol, self.spec.has_return)
        if self.way == "tp_btf" and self.hook and self.spec.tracepoint:
            return [f"tp_btf:{tp}" for tp in HOOK_TRACEPOINTS[self.hook]]
        return []


def function_attachments(way: str, symbol: str, has_return: bool) -> list[str]:
    """A function probe's attachments as the trace header records them."""
    ret = {"kprobe": "kretprobe", "fentry": "fexit"}[way]
    return [f"{way}:{symbol}"] + ([f"{ret}:{symbol}"] if has_return else [])


@dataclass
class KernelCaps:
    """What this kernel offers the CO-RE object."""

    kprobes: bool
    tracepoints: dict[str, bool] = field(default_factory=dict)  # name -> in BTF
    release: str = ""
    no_kprobes_why: str = "no kprobes on this kernel"  # when kprobes is False
    fentry: bool = False  # BPF trampolines (fentry/fexit) may be tried
    # Function name -> its argument count in the kernel's BTF (None: not in
    # it): for the resolved symbols of the requested probes.
    arity: dict[str, int | None] = field(default_factory=dict)
    # The kernel's kallsyms has the data symbols the blind-window watch reads.
    watch_symbols: bool = False


def context_programs(watch: bool) -> list[tuple[str, str]]:
    """(program, tracepoint) of the context programs to load."""
    return [(WATCH_TWINS.get(prog, prog) if watch else prog, tp)
            for prog, tp in CONTEXT_PROGRAMS]


def fentry_refusal(spec: ProbeSpec, symbol: str, caps: KernelCaps) -> str | None:
    """Why this probe's function cannot take an fentry program (None: it can)."""
    if spec.module is not None:
        return f"{symbol} is in module {spec.module} (fentry is tried on vmlinux only)"
    n = caps.arity.get(symbol)
    if n is None:
        return f"{symbol} is not in the kernel's BTF"
    if n > MAX_TRAMPOLINE_ARGS:
        return f"{symbol} takes {n} arguments (BPF trampolines: {MAX_TRAMPOLINE_ARGS})"
    return None


def plan(specs: Sequence[ProbeSpec], resolved: Sequence[Resolved] | None,
         caps: KernelCaps, no_fentry: Mapping[str, str] | None = None) -> list[Planned]:
    """fentry where the kernel allows it on the resolved symbol, else a
    kprobe where the kernel has them; else the probe's tracepoint where the
    kernel has it; else missing, with why. `no_fentry`: probes whose fentry
    already failed (name -> why), observed the next way."""
    by_name = {r.spec.name: r for r in resolved or ()}
    no_fentry = no_fentry or {}
    out: list[Planned] = []
    for i, spec in enumerate(specs):
        res = by_name.get(spec.name)
        tp = spec.tracepoint
        tp_ok = tp is not None and all(caps.tracepoints.get(name, False)
                                       for name in HOOK_TRACEPOINTS[tp.hook])
        refusal = None
        if caps.fentry and res is not None and res.symbol is not None:
            refusal = no_fentry.get(spec.name) or fentry_refusal(spec, res.symbol, caps)
            if refusal is None:
                out.append(Planned(i, spec, "fentry", symbol=res.symbol))
                continue
        if caps.kprobes and res is not None and res.ok:
            out.append(Planned(i, spec, "kprobe", symbol=res.symbol))
        elif tp is not None and tp_ok:
            out.append(Planned(i, spec, "tp_btf", hook=tp.hook))
        elif refusal is not None:
            extra = (f"; its tracepoint {tp.event} is absent too (Linux {tp.since}+)"
                     if tp is not None else "")
            out.append(Planned(i, spec, None, reason="no-fentry",
                               detail=f"{caps.no_kprobes_why}, and no fentry: {refusal}{extra}"))
        elif (caps.kprobes or caps.fentry) and res is not None:
            extra = (f"; its tracepoint {tp.event} is absent too (Linux {tp.since}+)"
                     if tp is not None else "")
            out.append(Planned(i, spec, None, reason=res.reason,
                               detail=f"{res.detail}{extra}"))
        elif tp is not None:
            out.append(Planned(
                i, spec, None, reason="no-tracepoint",
                detail=f"{caps.no_kprobes_why}, and tracepoint {tp.event} is absent "
                f"(Linux {tp.since}+)"))
        else:
            out.append(Planned(
                i, spec, None, reason="no-kprobes",
                detail=f"{caps.no_kprobes_why} and no tracepoint observes this function"))
    return out
